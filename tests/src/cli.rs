//! The `sansh` command-line program: found next to the test binary (built
//! with the same profile, by cargo, if needed) and run like `ssh`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// `(target dir, profile name, profile dir)` of the running test binary
/// (`<target>/<profile dir>/deps/<test>-<hash>`; `debug` is profile `dev`).
fn build_layout() -> (PathBuf, String, PathBuf) {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("test binary in deps/");
    let profile_dir = deps.parent().expect("deps/ in a profile dir").to_path_buf();
    let target = profile_dir.parent().expect("profile dir in target/").to_path_buf();
    let dir_name = profile_dir.file_name().and_then(|n| n.to_str()).unwrap_or("debug").to_owned();
    let profile = if dir_name == "debug" { "dev".to_owned() } else { dir_name };
    (target, profile, profile_dir)
}

/// The `sansh` binary built with the test binary's profile. Built once per
/// test process (`cargo build -p sansh --features cli --profile P`), which
/// is quick when it is up to date. `SANSH_BIN` overrides it.
pub fn sansh_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("SANSH_BIN") {
            return PathBuf::from(bin);
        }
        let (target, profile, profile_dir) = build_layout();
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(cargo);
        // Drop what cargo set for this test process: build scripts watch some
        // of it (ring reruns when CARGO_MANIFEST_DIR changes), so a build with
        // it would rebuild them here and again at the next `cargo test`.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            let set_for_tests = ["CARGO_MANIFEST_", "CARGO_PKG_", "CARGO_BIN_", "CARGO_CRATE_NAME"]
                .iter()
                .any(|p| name.starts_with(p))
                || ["CARGO_PRIMARY_PACKAGE", "CARGO_TARGET_TMPDIR", "CARGO_RUSTC_CURRENT_DIR"]
                    .contains(&&*name);
            if set_for_tests {
                build.env_remove(&*name);
            }
        }
        let out = build
            .current_dir(&workspace)
            .args(["build", "-p", "sansh", "--features", "cli", "--profile", &profile, "--target-dir"])
            .arg(&target)
            .stdin(Stdio::null())
            .output()
            .expect("run cargo build for the sansh binary");
        assert!(
            out.status.success(),
            "building sansh failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let bin = profile_dir.join("sansh");
        assert!(bin.exists(), "{} missing after the build", bin.display());
        bin
    })
}

/// A `sansh` invocation being put together.
#[derive(Debug)]
pub struct Sansh {
    cmd: Command,
    stdin: Option<Vec<u8>>,
}

/// What a run produced.
#[derive(Debug)]
pub struct Run {
    /// The exit code (None: killed by a signal).
    pub code: Option<i32>,
    /// Its stdout.
    pub stdout: Vec<u8>,
    /// Its stderr.
    pub stderr: String,
}

impl Run {
    /// Stdout as text.
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

impl Sansh {
    /// `sansh` with no arguments yet, stdin from /dev/null, no password.
    pub fn new() -> Sansh {
        let mut cmd = Command::new(sansh_binary());
        cmd.env_remove("SANSH_PASSWORD").env_remove("SANSH_PASSPHRASE").env_remove("SSH_AUTH_SOCK");
        Sansh { cmd, stdin: None }
    }

    /// Connecting to 127.0.0.1:`port` as `user`, trusting any host key and
    /// recording none, with `password` in SANSH_PASSWORD and no prompts.
    pub fn to(port: u16, user: &str, password: Option<&str>) -> Sansh {
        let mut s = Sansh::new();
        s.args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
        ]);
        s.args(["-p", &port.to_string(), "-l", user]);
        if let Some(pw) = password {
            s.env("SANSH_PASSWORD", pw);
        }
        s
    }

    /// Adds arguments.
    pub fn args<I: IntoIterator<Item = S>, S: AsRef<std::ffi::OsStr>>(&mut self, args: I) -> &mut Sansh {
        self.cmd.args(args);
        self
    }

    /// Adds a path argument.
    pub fn arg_path(&mut self, path: &Path) -> &mut Sansh {
        self.cmd.arg(path);
        self
    }

    /// Adds `Key=path` (after a `-o`).
    pub fn arg_path_option(&mut self, key: &str, path: &Path) -> &mut Sansh {
        let mut arg = std::ffi::OsString::from(format!("{key}="));
        arg.push(path);
        self.cmd.arg(arg);
        self
    }

    /// Sets an environment variable.
    pub fn env(&mut self, k: &str, v: &str) -> &mut Sansh {
        self.cmd.env(k, v);
        self
    }

    /// Feeds `data` on stdin (then EOF).
    pub fn stdin(&mut self, data: impl Into<Vec<u8>>) -> &mut Sansh {
        self.stdin = Some(data.into());
        self
    }

    /// The command, to spawn it by hand.
    pub fn command(&mut self) -> &mut Command {
        &mut self.cmd
    }

    /// Runs to completion.
    pub fn run(&mut self) -> Run {
        self.cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        self.cmd.stdin(if self.stdin.is_some() { Stdio::piped() } else { Stdio::null() });
        let mut child = self.cmd.spawn().expect("spawn sansh");
        let feeder = self.stdin.take().map(|data| {
            let mut pipe = child.stdin.take().expect("stdin pipe");
            std::thread::spawn(move || {
                let _ = pipe.write_all(&data);
            })
        });
        let Output { status, stdout, stderr } = child.wait_with_output().expect("wait for sansh");
        if let Some(f) = feeder {
            let _ = f.join();
        }
        Run { code: status.code(), stdout, stderr: String::from_utf8_lossy(&stderr).into_owned() }
    }
}

/// `text` quoted for `sh`.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

impl Sansh {
    /// Runs under a pseudo-terminal (`script`), so that sansh has a
    /// controlling terminal to prompt on, with `typed` as what the user
    /// types. Returns the terminal's transcript (sansh's stdout and stderr,
    /// the prompts and the echo) as stdout.
    pub fn run_with_terminal(&mut self, typed: &str) -> Run {
        let mut line = shell_quote(&self.cmd.get_program().to_string_lossy());
        for arg in self.cmd.get_args() {
            line.push(' ');
            line.push_str(&shell_quote(&arg.to_string_lossy()));
        }
        let mut script = Command::new("script");
        script.args(["-qec", &line, "/dev/null"]);
        for (k, v) in self.cmd.get_envs() {
            match v {
                Some(v) => script.env(k, v),
                None => script.env_remove(k),
            };
        }
        let mut s = Sansh { cmd: script, stdin: Some(typed.as_bytes().to_vec()) };
        s.run()
    }
}

impl Default for Sansh {
    fn default() -> Self {
        Sansh::new()
    }
}
