//! Making text from the peer safe to show on a terminal.

use std::fmt::Write as _;

/// `text` (from the network) made safe to print on a terminal, the way
/// OpenSSH shows banners: printable text, valid UTF-8 included, is kept, as
/// are newlines, tabs and the CR of a CRLF; every other control character
/// (ESC and the rest of C0, DEL, the C1 range with its 8-bit CSI, a lone CR
/// that could overwrite a line) and every byte that is not valid UTF-8 is
/// written as a backslash and three octal digits (`\033`), as `vis(3)` with
/// `VIS_OCTAL` does. Unicode bidirectional overrides and isolates, which
/// reorder how the rest of a line reads, are escaped the same way.
pub fn terminal_safe(text: &[u8]) -> String {
    let mut out = String::with_capacity(text.len());
    let octal = |out: &mut String, bytes: &[u8]| {
        for b in bytes {
            let _ = write!(out, "\\{b:03o}");
        }
    };
    for chunk in text.utf8_chunks() {
        let valid = chunk.valid();
        let mut chars = valid.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            let keep = match c {
                '\n' | '\t' => true,
                '\r' => chars.peek().is_some_and(|&(_, next)| next == '\n'),
                _ => !c.is_control() && !is_bidi_control(c),
            };
            if keep {
                out.push(c);
            } else {
                octal(&mut out, &valid.as_bytes()[i..i + c.len_utf8()]);
            }
        }
        octal(&mut out, chunk.invalid());
    }
    out
}

/// Unicode's explicit directional formatting characters (embeddings,
/// overrides, isolates and their terminators).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::terminal_safe;

    #[test]
    fn printable_text_and_line_structure_are_kept() {
        let text = "Authorised use only.\n\tLogged: yes\r\nGrüße, 日本語 ✓ \\ done\n";
        assert_eq!(terminal_safe(text.as_bytes()), text);
        assert_eq!(terminal_safe(b""), "");
    }

    #[test]
    fn escape_sequences_and_control_characters_are_octal() {
        assert_eq!(terminal_safe(b"\x1b[2J\x1b]0;owned\x07x"), "\\033[2J\\033]0;owned\\007x");
        assert_eq!(terminal_safe(b"a\0b\x08c\x7fd"), "a\\000b\\010c\\177d");
        // A CR not followed by LF would let the next text overwrite the line.
        assert_eq!(terminal_safe(b"safe\rfake prompt\r\n"), "safe\\015fake prompt\r\n");
        assert_eq!(terminal_safe(b"end\r"), "end\\015");
    }

    #[test]
    fn c1_controls_bidi_overrides_and_invalid_utf8_are_octal_bytes() {
        // U+009B is the 8-bit CSI.
        assert_eq!(terminal_safe("x\u{9b}31m".as_bytes()), "x\\302\\23331m");
        assert_eq!(terminal_safe("a\u{202e}b".as_bytes()), "a\\342\\200\\256b");
        assert_eq!(terminal_safe(b"ok\xff\xc3(\n"), "ok\\377\\303(\n");
        // A truncated multi-byte character at the end.
        assert_eq!(terminal_safe(b"\xe6\x97"), "\\346\\227");
    }

    #[test]
    fn the_output_never_holds_a_control_character_but_newline_tab_and_crlf() {
        let all: Vec<u8> = (0..=255u8).chain("\u{85}\u{2066}".bytes()).collect();
        let safe = terminal_safe(&all);
        let stripped = safe.replace("\r\n", "\n");
        assert!(
            stripped.chars().all(|c| c == '\n' || c == '\t' || (!c.is_control() && c != '\u{2066}')),
            "{safe:?}"
        );
    }
}
