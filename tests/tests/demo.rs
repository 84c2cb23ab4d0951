//! `sansh --demo` as a user runs it: the binary of this build, no server on
//! the machine needed, exit 0, and a narration showing every step happen.

use sansh_interop::cli::Sansh;

#[test]
fn demo_runs_every_step_and_exits_zero() {
    let r = Sansh::new().args(["--demo"]).run();
    let out = r.stdout_text();
    assert_eq!(r.code, Some(0), "stdout:\n{out}\nstderr:\n{}", r.stderr);
    // Each step, in order, with the evidence it happened.
    let steps = [
        "== 1. connect",
        "TCP + key exchange + authentication took",
        "exec `uname -sr; id -un`: ",
        "== 2. eight concurrent commands through a pool",
        "pool: job 8 done by pid",
        "pool: 4 more, one after another: still ",
        "== 3. idle: keepalive probes",
        "answered; RTT last ",
        "== 4. the proxy black-holes the link",
        "dead link detected ",
        "== 5. reconnect with backoff",
        "reconnected ",
        "== 6. work resumes on the new connection",
        "exec: resumed on a fresh connection",
        "pool: the pool dials again too",
        "== 7. stats",
        "current connection: ",
        "TCP connections carried in all",
        "done in ",
    ];
    let mut at = 0;
    for step in steps {
        match out[at..].find(step) {
            Some(i) => at += i + step.len(),
            None => panic!("{step:?} missing (or out of order) in:\n{out}\nstderr:\n{}", r.stderr),
        }
    }
    // Pooled reuse is real, not printed regardless.
    let line = out.lines().find(|l| l.contains("leases reused a connection")).expect("reuse line");
    assert!(!line.contains(" 0 of "), "{line}");
}
