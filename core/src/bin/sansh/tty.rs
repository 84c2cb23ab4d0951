//! The local terminal: raw mode (restored on every exit path), its size,
//! and prompts on `/dev/tty` (passwords without echo), as ssh does.

use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Read, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether we put the terminal in raw mode and must restore it.
static RAW: AtomicBool = AtomicBool::new(false);
/// Serialises prompts (host key, passwords, passphrases) on the terminal.
static PROMPT: Mutex<()> = Mutex::new(());

/// Puts the terminal in raw mode (for a PTY session).
pub fn enable_raw() -> std::io::Result<()> {
    crossterm::terminal::enable_raw_mode()?;
    RAW.store(true, Ordering::SeqCst);
    Ok(())
}

/// Restores the terminal if we changed it. Safe to call any number of times
/// from any path (normal exit, error, signal, panic).
pub fn restore() {
    if RAW.swap(false, Ordering::SeqCst) {
        let _ = crossterm::terminal::disable_raw_mode();
    }
}

/// Restores the terminal before the default panic message.
pub fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore();
        default(info);
    }));
}

/// Whether standard input is a terminal.
pub fn stdin_is_tty() -> bool {
    std::io::stdin().is_terminal()
}

/// The terminal's size as (columns, rows), if there is a terminal.
pub fn size() -> Option<(u32, u32)> {
    if !(std::io::stdin().is_terminal() || std::io::stdout().is_terminal()) {
        return None;
    }
    crossterm::terminal::size()
        .ok()
        .filter(|(c, r)| *c > 0 && *r > 0)
        .map(|(c, r)| (u32::from(c), u32::from(r)))
}

/// The controlling terminal, if we have one to ask questions on.
pub fn open() -> Option<File> {
    OpenOptions::new().read(true).write(true).open("/dev/tty").ok()
}

/// Whether a question can be asked (there is a controlling terminal).
pub fn can_prompt() -> bool {
    open().is_some()
}

/// Asks `prompt` on the terminal and reads a line with echo. `None`
/// without a terminal or at end of input.
pub fn ask(prompt: &str) -> Option<String> {
    let _guard = PROMPT.lock().unwrap_or_else(|p| p.into_inner());
    let mut tty = open()?;
    tty.write_all(prompt.as_bytes()).ok()?;
    tty.flush().ok()?;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        match tty.read(&mut byte) {
            Ok(0) | Err(_) if line.is_empty() => return None,
            Ok(0) | Err(_) => break,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => line.push(byte[0]),
        }
    }
    Some(String::from_utf8_lossy(&line).trim_end_matches('\r').to_owned())
}

/// Asks `prompt` on the terminal and reads a secret without echo (raw mode,
/// with backspace and Ctrl-U; Ctrl-C exits like ssh). `None` without a
/// terminal or at Ctrl-D on an empty line.
pub fn ask_hidden(prompt: &str) -> Option<String> {
    let _guard = PROMPT.lock().unwrap_or_else(|p| p.into_inner());
    let mut tty = open()?;
    tty.write_all(prompt.as_bytes()).ok()?;
    tty.flush().ok()?;
    let was_raw = RAW.load(Ordering::SeqCst);
    if !was_raw {
        enable_raw().ok()?;
    }
    let mut secret = Vec::new();
    let mut byte = [0u8; 1];
    let result = loop {
        match tty.read(&mut byte) {
            Ok(0) | Err(_) => break (!secret.is_empty()).then_some(()),
            Ok(_) => match byte[0] {
                b'\r' | b'\n' => break Some(()),
                0x03 => {
                    // Ctrl-C: what SIGINT would do to ssh at this prompt.
                    restore();
                    let _ = tty.write_all(b"\n");
                    crate::exit_now(255);
                }
                0x04 if secret.is_empty() => break None,
                0x7f | 0x08 => {
                    secret.pop();
                }
                0x15 => secret.clear(),
                b => secret.push(b),
            },
        }
    };
    if !was_raw {
        restore();
    }
    let _ = tty.write_all(b"\n");
    result.map(|()| String::from_utf8_lossy(&secret).into_owned())
}

/// Writes a message on the terminal (for prompts' context), if there is one.
pub fn say(text: &str) {
    if let Some(mut tty) = open() {
        let _ = tty.write_all(text.as_bytes());
    }
}
