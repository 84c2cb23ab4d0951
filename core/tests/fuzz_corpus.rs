//! The fuzz targets on the stable toolchain: every target function of
//! `sansh::testing::fuzz` over every committed input in
//! `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/`, so CI replays
//! what the fuzzers found without nightly features.
//!
//! The seed corpora come from `regenerate_seed_corpus` (ignored; it writes
//! `fuzz/seeds/`): in-memory sessions recorded with the exact configs and
//! seeds the targets use, so the recorded key exchanges verify on replay,
//! and the same from a real OpenSSH sshd on 127.0.0.1 when one is installed.
//! `fuzz/README.md` says how they were minimized into `fuzz/corpus/`.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sansh::testing::fuzz::{self, Flags, RecordingClient, Script, payload, string, u32be};
use sansh::{CipherAlgorithm, HostKeyAlgorithm, MacAlgorithm, Role};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// Every file of `dir` (none if it does not exist), sorted.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut v: Vec<PathBuf> = entries.map(|e| e.expect("dir entry").path()).filter(|p| p.is_file()).collect();
    v.sort();
    v
}

/// Runs `target` over its corpus and regressions; returns how many inputs.
fn replay(name: &str, target: fn(&[u8])) -> usize {
    let root = fuzz_dir();
    let mut n = 0;
    for dir in [root.join("corpus").join(name), root.join("regressions").join(name)] {
        for path in files(&dir) {
            let data = std::fs::read(&path).expect("read corpus file");
            let result = std::panic::catch_unwind(|| target(&data));
            if let Err(e) = result {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                panic!("{name}: {} failed: {msg}", path.display());
            }
            n += 1;
        }
    }
    n
}

macro_rules! corpus_test {
    ($name:ident) => {
        #[test]
        fn $name() {
            let n = replay(stringify!($name), fuzz::$name);
            assert!(n > 0, "no corpus for {}", stringify!($name));
        }
    };
}

corpus_test!(wire_decode);
corpus_test!(client_input);
corpus_test!(server_input);
corpus_test!(post_auth_client);
corpus_test!(post_auth_server);
corpus_test!(known_hosts_parse);
corpus_test!(private_key_parse);
corpus_test!(pool_ops);
corpus_test!(reconnect_ops);

#[test]
fn every_target_has_a_test_here() {
    let names: Vec<&str> = fuzz::TARGETS.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        [
            "wire_decode",
            "client_input",
            "server_input",
            "post_auth_client",
            "post_auth_server",
            "known_hosts_parse",
            "private_key_parse",
            "pool_ops",
            "reconnect_ops"
        ]
    );
    for (name, _) in fuzz::TARGETS {
        assert!(fuzz_dir().join("fuzz_targets").join(format!("{name}.rs")).exists(), "no fuzz target {name}");
    }
}

/// Configs of the extension byte the seeds use: each aes*-ctr cipher,
/// plain and encrypt-then-MAC HMACs, the P-521 host key, and
/// `pass_unknown_requests`.
fn extended_configs() -> [Flags; 4] {
    let mac = |n: u8| n << Flags::MAC_SHIFT;
    [
        Flags::new(0, Flags::AES128_CTR | mac(1)),
        Flags::new(0x10, Flags::AES192_CTR | mac(3) | Flags::PASS_UNKNOWN),
        Flags::new(0, Flags::AES256_CTR | mac(5) | Flags::P521),
        Flags::new(0x20, Flags::P521 | mac(6) | Flags::PASS_UNKNOWN),
    ]
}

/// The recorded sessions replay: a client fed what the server sent logs in
/// and runs its command (the targets start from the same state the seeds do).
#[test]
fn recorded_sessions_replay_through_the_targets() {
    let base = [0u8, 1, 2, 3, 0x10, 0x20, 0x30].map(Flags::from);
    for flags in base.into_iter().chain(extended_configs()) {
        let rec = fuzz::record_session(flags);
        assert!(rec.to_client.len() > 4, "{flags:?}: {} chunks", rec.to_client.len());
        // Data arrived on the session: the whole session ran.
        assert!(rec.server_sent.iter().any(|p| p[0] == 94), "{flags:?}: no CHANNEL_DATA");
        let done = fuzz::Summary { authenticated: true, channels_closed: 1 };
        let mut s = Script::new(flags);
        for chunk in &rec.to_client {
            s.data(chunk);
        }
        assert_eq!(fuzz::single_connection(Role::Client, &s.build()), done, "client, {flags:?}");
        let mut s = Script::new(flags);
        for chunk in &rec.to_server {
            s.data(chunk);
        }
        assert_eq!(fuzz::single_connection(Role::Server, &s.build()), done, "server, {flags:?}");
    }
}

/// The extension byte selects what it says, only after its marker, and
/// leaves every other script as it was.
#[test]
fn the_extended_config_selects_ctr_hmac_p521_and_unknown_requests() {
    let mac = |n: u8| n << Flags::MAC_SHIFT;
    let cases = [
        (
            Flags::new(0, Flags::AES128_CTR | mac(1)),
            CipherAlgorithm::Aes128Ctr,
            Some(MacAlgorithm::HmacSha256Etm),
        ),
        (
            Flags::new(0, Flags::AES192_CTR | mac(3)),
            CipherAlgorithm::Aes192Ctr,
            Some(MacAlgorithm::HmacSha256),
        ),
        (Flags::new(0, Flags::AES256_CTR | mac(5)), CipherAlgorithm::Aes256Ctr, Some(MacAlgorithm::HmacSha1)),
        (Flags::new(1, Flags::AES256_CTR | mac(6)), CipherAlgorithm::Aes256Ctr, Some(MacAlgorithm::HmacSha1)),
        (Flags::new(1, mac(2)), CipherAlgorithm::Aes128Gcm, None),
    ];
    for (flags, cipher, mac) in cases {
        let n = fuzz::record_session(flags).negotiated.expect("the session ran a kex");
        assert_eq!(
            (n.cipher_c2s, n.cipher_s2c, n.mac_c2s, n.mac_s2c),
            (cipher, cipher, mac, mac),
            "{flags:?}"
        );
        assert_eq!(n.host_key, HostKeyAlgorithm::Ed25519, "{flags:?}");
    }
    let n = fuzz::record_session(Flags::new(0x10, Flags::P521)).negotiated.unwrap();
    assert_eq!(n.host_key, HostKeyAlgorithm::EcdsaP521);
    assert!(fuzz::fuzz_server_config(Flags::new(0, Flags::PASS_UNKNOWN)).pass_unknown_requests);
    assert!(fuzz::fuzz_client_config(Flags::new(0, Flags::PASS_UNKNOWN)).pass_unknown_requests);
    assert!(!fuzz::fuzz_client_config(0xff).pass_unknown_requests);
    // Without the extension the server keeps exactly its four host keys
    // (its KEXINIT, and so every recording, is what it was).
    assert_eq!(fuzz::fuzz_server_config(0).host_keys.len(), 4);
    assert_eq!(fuzz::fuzz_server_config(Flags::new(0, Flags::P521)).host_keys.len(), 5);
    assert_eq!(Script::new(0x12).build(), [0x12]);
    assert_eq!(Script::new(Flags::new(0x12, 0x40)).build(), [0x12, fuzz::EXTENDED_CONFIG, 0x40]);

    // Post-auth: an x11 open is the application's with pass_unknown_requests
    // (it accepts, and the peer's CLOSE closes it), and refused without
    // (the CLOSE is then for a channel that does not exist).
    let x11 = payload(90, &[&string(b"x11"), &u32be(8), &u32be(65536), &u32be(32768)]);
    let close = payload(97, &[&u32be(0)]);
    for role in [Role::Client, Role::Server] {
        for (ext, closed) in [(Flags::PASS_UNKNOWN, 1), (0, 0)] {
            let mut s = Script::new(Flags::new(0, ext));
            s.inject(&x11).inject(&close).drain(1);
            let summary = fuzz::post_auth(role, &s.build());
            assert_eq!(summary.channels_closed, closed, "{role:?}, ext {ext:#x}");
        }
    }
}

/// The post-auth scripts reach what they aim at: a login through PK_OK
/// and a signature before login, a session opened from either side.
#[test]
fn post_auth_scripts_reach_their_states() {
    let key = ssh_key::PrivateKey::from_openssh(sansh::testing::keys::ECDSA_P256).unwrap();
    let blob = key.public_key().to_bytes().unwrap();
    let mut s = Script::new(0x10);
    s.inject(&payload(51, &[&string(b"publickey"), &[0]]))
        .inject(&payload(60, &[&string(b"ecdsa-sha2-nistp256"), &string(&blob)]))
        .inject(&payload(52, &[]));
    assert!(fuzz::post_auth(Role::Client, &s.build()).authenticated);
    let mut s = Script::new(0x10);
    s.inject(&payload(51, &[&string(b"publickey"), &[0]]));
    assert!(!fuzz::post_auth(Role::Client, &s.build()).authenticated);
    // A session the client opens, closed by the server's application.
    let mut s = Script::new(0);
    s.command(0, &[0]).drain(2).peer_command(6, &[0]).drain(3);
    assert_eq!(fuzz::post_auth(Role::Client, &s.build()).channels_closed, 1);
    let mut s = Script::new(0);
    s.peer_command(0, &[0]).drain(2).command(6, &[0]).drain(3);
    assert_eq!(fuzz::post_auth(Role::Server, &s.build()).channels_closed, 1);
}

// ------------------------------------------------------- seed generation

fn write_seed(dir: &Path, target: &str, name: &str, data: &[u8]) {
    let d = dir.join(target);
    std::fs::create_dir_all(&d).expect("create seed dir");
    std::fs::write(d.join(name), data).expect("write seed");
}

fn ch(id: u32) -> [u8; 4] {
    u32be(id)
}

/// Payloads a hostile (or merely unusual) server sends an authenticated client.
fn server_payloads() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("global-keepalive", payload(80, &[&string(b"keepalive@openssh.com"), &[1]])),
        ("global-hostkeys", payload(80, &[&string(b"hostkeys-00@openssh.com"), &[0], &string(b"blob")])),
        ("request-success", payload(81, &[])),
        ("request-failure", payload(82, &[])),
        (
            "open-forwarded",
            payload(
                90,
                &[
                    &string(b"forwarded-tcpip"),
                    &u32be(7),
                    &u32be(65536),
                    &u32be(32768),
                    &string(b"0.0.0.0"),
                    &u32be(4242),
                    &string(b"10.0.0.1"),
                    &u32be(5555),
                ],
            ),
        ),
        ("open-x11", payload(90, &[&string(b"x11"), &u32be(8), &u32be(65536), &u32be(32768)])),
        ("open-session-to-client", payload(90, &[&string(b"session"), &u32be(9), &u32be(1), &u32be(1)])),
        ("open-confirm", payload(91, &[&ch(0), &u32be(3), &u32be(2 << 20), &u32be(32768)])),
        ("open-failure", payload(92, &[&ch(0), &u32be(2), &string(b"nope"), &string(b"")])),
        ("window-adjust", payload(93, &[&ch(0), &u32be(1 << 20)])),
        ("window-adjust-max", payload(93, &[&ch(0), &u32be(u32::MAX)])),
        ("data", payload(94, &[&ch(0), &string(b"hello\n")])),
        ("extended-data", payload(95, &[&ch(0), &u32be(1), &string(b"oops\n")])),
        ("eof", payload(96, &[&ch(0)])),
        ("close", payload(97, &[&ch(0)])),
        ("exit-status", payload(98, &[&ch(0), &string(b"exit-status"), &[0], &u32be(3)])),
        (
            "exit-signal",
            payload(
                98,
                &[&ch(0), &string(b"exit-signal"), &[0], &string(b"KILL"), &[1], &string(b"x"), &string(b"")],
            ),
        ),
        ("eow", payload(98, &[&ch(0), &string(b"eow@openssh.com"), &[0]])),
        ("keepalive-request", payload(98, &[&ch(0), &string(b"keepalive@openssh.com"), &[1]])),
        ("channel-success", payload(99, &[&ch(0)])),
        ("channel-failure", payload(100, &[&ch(0)])),
        ("ignore", payload(2, &[&string(b"padding")])),
        ("debug", payload(4, &[&[1], &string(b"message"), &string(b"")])),
        ("unimplemented", payload(3, &[&u32be(5)])),
        ("ping", payload(192, &[&string(b"ping")])),
        ("pong", payload(193, &[&string(b"pong")])),
        ("unknown-message", payload(150, &[b"x"])),
        (
            "ext-info",
            payload(
                7,
                &[
                    &u32be(2),
                    &string(b"server-sig-algs"),
                    &string(b"ssh-ed25519,rsa-sha2-256"),
                    &string(b"ping@openssh.com"),
                    &string(b"0"),
                ],
            ),
        ),
        ("userauth-success", payload(52, &[])),
        ("userauth-failure", payload(51, &[&string(b"publickey,password,keyboard-interactive"), &[0]])),
        ("userauth-partial", payload(51, &[&string(b"keyboard-interactive"), &[1]])),
        ("userauth-banner", payload(53, &[&string(b"Welcome\n"), &string(b"")])),
        (
            "userauth-info-request",
            payload(
                60,
                &[&string(b"name"), &string(b"instr"), &string(b""), &u32be(1), &string(b"Password: "), &[0]],
            ),
        ),
        ("userauth-passwd-changereq", payload(60, &[&string(b"expired"), &string(b"")])),
        ("disconnect", payload(1, &[&u32be(11), &string(b"bye"), &string(b"")])),
    ]
}

/// Payloads a client sends an authenticated (or authenticating) server.
fn client_payloads() -> Vec<(&'static str, Vec<u8>)> {
    let open = |name: &[u8], id: u32, extra: &[&[u8]]| {
        let mut fields: Vec<&[u8]> = Vec::new();
        let s = string(name);
        let (a, b, c) = (u32be(id), u32be(2 << 20), u32be(32768));
        fields.push(&s);
        fields.push(&a);
        fields.push(&b);
        fields.push(&c);
        fields.extend_from_slice(extra);
        payload(90, &fields)
    };
    let req = |name: &[u8], want: u8, data: &[u8]| payload(98, &[&ch(0), &string(name), &[want], data]);
    let pty = [
        string(b"xterm").as_slice(),
        &u32be(80),
        &u32be(24),
        &u32be(0),
        &u32be(0),
        &string(&[53, 0, 0, 0, 1, 128, 0, 0, 0x96, 0, 0]),
    ]
    .concat();
    let userauth = |method: &[u8], rest: &[&[u8]]| {
        let mut fields: Vec<Vec<u8>> = vec![string(b"root"), string(b"ssh-connection"), string(method)];
        fields.extend(rest.iter().map(|r| r.to_vec()));
        let refs: Vec<&[u8]> = fields.iter().map(Vec::as_slice).collect();
        payload(50, &refs)
    };
    vec![
        ("open-session", open(b"session", 0, &[])),
        (
            "open-direct-tcpip",
            open(
                b"direct-tcpip",
                1,
                &[&string(b"localhost"), &u32be(80), &string(b"127.0.0.1"), &u32be(5555)],
            ),
        ),
        ("open-unknown", open(b"x11", 2, &[])),
        ("pty-req", req(b"pty-req", 1, &pty)),
        ("env", req(b"env", 1, &[string(b"LANG"), string(b"C")].concat())),
        ("exec", req(b"exec", 1, &string(b"echo hello"))),
        ("shell", req(b"shell", 1, b"")),
        ("subsystem", req(b"subsystem", 1, &string(b"sftp"))),
        ("window-change", req(b"window-change", 0, &[u32be(100), u32be(40), u32be(0), u32be(0)].concat())),
        ("signal", req(b"signal", 0, &string(b"INT"))),
        ("unknown-request", req(b"x@example.com", 1, b"data")),
        ("tcpip-forward", payload(80, &[&string(b"tcpip-forward"), &[1], &string(b""), &u32be(0)])),
        (
            "cancel-tcpip-forward",
            payload(80, &[&string(b"cancel-tcpip-forward"), &[1], &string(b"localhost"), &u32be(8080)]),
        ),
        ("no-more-sessions", payload(80, &[&string(b"no-more-sessions@openssh.com"), &[0]])),
        ("keepalive", payload(80, &[&string(b"keepalive@openssh.com"), &[1]])),
        ("data", payload(94, &[&ch(0), &string(b"input\n")])),
        ("window-adjust", payload(93, &[&ch(0), &u32be(65536)])),
        ("eof", payload(96, &[&ch(0)])),
        ("close", payload(97, &[&ch(0)])),
        ("ping", payload(192, &[&string(b"ping")])),
        ("userauth-none", userauth(b"none", &[])),
        ("userauth-password", userauth(b"password", &[&[0], &string(b"pw")])),
        ("userauth-password-change", userauth(b"password", &[&[1], &string(b"old"), &string(b"new")])),
        ("userauth-kbd", userauth(b"keyboard-interactive", &[&string(b""), &string(b"")])),
        ("userauth-info-response", payload(61, &[&u32be(1), &string(b"pw")])),
        ("userauth-hostbased", userauth(b"hostbased", &[])),
        ("service-request", payload(5, &[&string(b"ssh-userauth")])),
        ("kexinit-garbage", payload(20, &[&[0; 16]])),
    ]
}

fn post_auth_seeds(dir: &Path, target: &str, payloads: &[(&'static str, Vec<u8>)], client_ut: bool) {
    let mac = |n: u8| n << Flags::MAC_SHIFT;
    for (flags, tag) in [
        (Flags::from(0), "auth"),
        (Flags::from(0x10), "preauth"),
        (Flags::from(0x88), "keepalive-manual"),
        (Flags::from(0x21), "aes-small"),
        (Flags::new(0, Flags::PASS_UNKNOWN | Flags::AES128_CTR | mac(1)), "ext-unknown-ctr"),
        (Flags::new(0x10, Flags::P521 | Flags::AES256_CTR | mac(4)), "ext-preauth-p521-ctr"),
    ] {
        for (name, p) in payloads {
            let mut s = Script::new(flags);
            if flags.base & 0x10 == 0 {
                // A session first, so channel 0 exists on both sides.
                if client_ut {
                    s.command(0, &[0]).drain(2);
                } else {
                    s.peer_command(0, &[0]).drain(2);
                }
            }
            s.inject(p).drain(1);
            write_seed(dir, target, &format!("{tag}-{name}"), &s.build());
        }
    }
    if client_ut {
        // Before login: the server wants a key, then says PK_OK for ours.
        let key = ssh_key::PrivateKey::from_openssh(sansh::testing::keys::ECDSA_P256).unwrap();
        let blob = key.public_key().to_bytes().unwrap();
        let mut s = Script::new(0x10);
        s.inject(&payload(51, &[&string(b"publickey"), &[0]]))
            .drain(0)
            .inject(&payload(60, &[&string(b"ecdsa-sha2-nistp256"), &string(&blob)]))
            .drain(0)
            .inject(&payload(52, &[]))
            .drain(1);
        write_seed(dir, target, "preauth-pk-ok-success", &s.build());
    }
    // Longer flows: a session with exec, data both ways, a rekey, ticks,
    // a peer that stops reading, and a global-request flood.
    let mut s = Script::new(0);
    if client_ut {
        s.command(0, &[0]).drain(2).command(22, &[0]).drain(3).command(3, &[0, 0x10, 0]).drain(2);
    } else {
        s.peer_command(0, &[0]).drain(2).peer_command(22, &[0]).drain(3).command(3, &[0, 0x10, 0]);
    }
    s.command(10, &[]).drain(3).tick(1000).drain(1).peer_command(10, &[]).drain(3);
    s.hold();
    for _ in 0..32 {
        s.inject(&payload(80, &[&string(b"keepalive@openssh.com"), &[1]]));
    }
    s.hold().drain(1).tick(0).tick(0);
    write_seed(dir, target, "flow-session-rekey-flood", &s.build());
}

fn wire_seeds(dir: &Path) {
    // Every hand-made message, whole, for the all-decoders selector.
    for (name, p) in server_payloads().into_iter().chain(client_payloads()) {
        write_seed(dir, "wire_decode", &format!("msg-{name}"), &[[7u8].as_slice(), &p].concat());
    }
    let rec = fuzz::record_session(0);
    for (n, p) in rec.client_sent.iter().chain(&rec.server_sent).enumerate() {
        let sel = match p[0] {
            20 => 0,
            90 => 2,
            98 => 1,
            _ => 7,
        };
        let mut data = vec![sel];
        // Channel requests and opens: the decoders take the name, then the
        // bytes after the fixed fields.
        let mut r = sansh::wire::Reader::new(&p[1..]);
        match p[0] {
            98 => {
                r.u32("channel").unwrap();
                data.extend_from_slice(&string(r.string("name").unwrap()));
                r.bool("want reply").unwrap();
                data.extend_from_slice(r.remaining());
            }
            90 => {
                data.extend_from_slice(&string(r.string("name").unwrap()));
                data.extend_from_slice(&r.remaining()[12..]);
            }
            _ => data.extend_from_slice(p),
        }
        write_seed(dir, "wire_decode", &format!("session-{n:03}"), &data);
    }
    let version = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n";
    write_seed(dir, "wire_decode", "version", &[[4u8, 0x0e].as_slice(), version].concat());
    write_seed(
        dir,
        "wire_decode",
        "version-banner",
        &[[4u8, 0x03].as_slice(), b"hello\r\n", version].concat(),
    );
    // The client's first packets (KEXINIT, KEX_ECDH_INIT), unencrypted.
    let first = &rec.to_server[0];
    let after_version = first.windows(2).position(|w| w == b"\r\n").map_or(0, |i| i + 2);
    let mut packets = vec![5u8, 0x07];
    packets.extend_from_slice(&first[after_version..]);
    packets.extend_from_slice(&rec.to_server[1]);
    write_seed(dir, "wire_decode", "packets", &packets);
    let key = ssh_key::PrivateKey::from_openssh(sansh::testing::keys::ED25519).unwrap();
    let blob = key.public_key().to_bytes().unwrap();
    write_seed(
        dir,
        "wire_decode",
        "public-key",
        &[[6u8].as_slice(), &string(&blob), &string(b"sig"), b"data"].concat(),
    );
    write_seed(
        dir,
        "wire_decode",
        "reader-script",
        &[
            3, 8, 0, 1, 2, 3, 4, 5, 6, 8, 1, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 1, b'a', 0, 0,
            0, 1, b'b', 0, 0, 0, 3, b'a', b',', b'b',
        ],
    );
}

fn known_hosts_seeds(dir: &Path) {
    let pubs = [
        include_str!("../src/testing/keys/host_ed25519.pub"),
        include_str!("../src/testing/keys/host_ecdsa256.pub"),
        include_str!("../src/testing/keys/host_ecdsa384.pub"),
        include_str!("../src/testing/keys/host_rsa.pub"),
    ];
    let key = |i: usize| pubs[i].split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    let ed = ssh_key::PublicKey::from_openssh(pubs[0]).unwrap();
    let hashed = sansh::known_hosts::line_to_append("example.com", 2222, &ed, Some(&[7; 20]));
    let files = [
        ("plain", format!("example.com,192.0.2.1 {}\n", key(0))),
        ("ports", format!("[example.org]:2222 {}\n", key(1))),
        (
            "wildcards",
            format!("*.example.com,!bad.example.com {}\n??.example.net {} comment here\n", key(2), key(0)),
        ),
        ("markers", format!("@cert-authority *.example.com {}\n@revoked * {}\n", key(0), key(3))),
        ("hashed", format!("{hashed}\n")),
        (
            "mixed",
            format!(
                "# comment\n\n  example.com {}\r\nbad line\n@bogus x {}\nexample.com ssh-rsa AAAA\n",
                key(3),
                key(0)
            ),
        ),
    ];
    for (name, text) in files {
        write_seed(dir, "known_hosts_parse", name, text.as_bytes());
    }
}

fn private_key_seeds(dir: &Path, tmp: &Path) {
    use sansh::testing::keys;
    for (name, pem) in [
        ("ed25519", keys::ED25519),
        ("ecdsa256", keys::ECDSA_P256),
        ("ecdsa384", keys::ECDSA_P384),
        ("rsa", keys::RSA),
    ] {
        write_seed(dir, "private_key_parse", name, &[[2u8].as_slice(), pem.as_bytes()].concat());
    }
    // Encrypted with the target's passphrase and the cheapest KDF (ssh-keygen -a 1).
    for kind in ["ed25519", "ecdsa"] {
        let path = tmp.join(format!("enc_{kind}"));
        let _ = std::fs::remove_file(&path);
        let ok = Command::new("ssh-keygen")
            .args(["-q", "-t", kind, "-a", "1", "-C", "fuzz", "-f"])
            .arg(&path)
            .arg("-N")
            .arg(std::str::from_utf8(fuzz::FUZZ_PASSPHRASE).unwrap())
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            let pem = std::fs::read(&path).unwrap();
            write_seed(
                dir,
                "private_key_parse",
                &format!("encrypted-{kind}"),
                &[[3u8].as_slice(), &pem].concat(),
            );
        }
    }
}

fn pool_reconnect_seeds(dir: &Path) {
    // acquire ×3, connected, release, time, lost, failed, stale ids.
    let pool = [0x15u8, 0, 0, 0, 1, 1, 2, 3, 0, 2, 0, 6, 30, 0, 0, 3, 5, 0, 0, 1, 4, 0, 8, 0, 8, 1, 6, 90, 0];
    write_seed(dir, "pool_ops", "basic", &pool);
    let mut flood = vec![0x3fu8];
    for i in 0..40u8 {
        flood.extend_from_slice(&[i % 2, i, 3, i, 2, i, 6, i % 3, 0]);
    }
    write_seed(dir, "pool_ops", "busy", &flood);
    let reconnect = [
        0x02u8, 0xe8, 0x03, 2, 0x50, 0x46, 3, 0x30, 0x75, 0, 1, 4, 0xe8, 0x03, 2, 4, 0xff, 0xff, 0, 1, 4, 0,
        0,
    ];
    write_seed(dir, "reconnect_ops", "basic", &reconnect);
    let unlimited = [0x05u8, 0x0a, 0, 1, 0x10, 0, 0, 0, 1, 2, 4, 0xff, 0, 2, 4, 0xff, 0, 2, 3, 1];
    write_seed(dir, "reconnect_ops", "unlimited", &unlimited);
}

/// A throwaway sshd (as tests/src/sshd.rs starts one) that lets `root` in
/// with the fuzz client's user key. None if sshd is not installed.
struct Sshd {
    child: std::process::Child,
    port: u16,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_sshd(tmp: &Path) -> Option<Sshd> {
    if !Path::new("/usr/sbin/sshd").exists() {
        return None;
    }
    std::fs::create_dir_all("/run/sshd").ok()?;
    let mut host_keys = String::new();
    for (kind, bits) in [
        ("ed25519", None),
        ("ecdsa", Some("256")),
        ("ecdsa", Some("384")),
        ("ecdsa", Some("521")),
        ("rsa", Some("3072")),
    ] {
        let path = tmp.join(format!("host_{kind}{}", bits.unwrap_or("")));
        let _ = std::fs::remove_file(&path);
        let mut c = Command::new("ssh-keygen");
        c.args(["-q", "-N", "", "-t", kind, "-f"]).arg(&path);
        if let Some(b) = bits {
            c.args(["-b", b]);
        }
        assert!(c.status().unwrap().success());
        host_keys.push_str(&format!("HostKey {}\n", path.display()));
    }
    let user_key = ssh_key::PrivateKey::from_openssh(sansh::testing::keys::ECDSA_P256).unwrap();
    std::fs::write(tmp.join("authorized_keys"), user_key.public_key().to_openssh().unwrap() + "\n").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let d = tmp.display();
    let cfg = format!(
        "Port {port}\nListenAddress 127.0.0.1\n{host_keys}PidFile {d}/sshd.pid\nUsePAM no\nStrictModes no\n\
         AuthorizedKeysFile {d}/authorized_keys\nPermitRootLogin prohibit-password\nSetEnv SHLVL=1\n"
    );
    let cfg_path = tmp.join("sshd_config");
    std::fs::write(&cfg_path, cfg).unwrap();
    let child = Command::new("/usr/sbin/sshd")
        .arg("-D")
        .arg("-f")
        .arg(&cfg_path)
        .arg("-E")
        .arg(tmp.join("sshd.log"))
        .stdin(Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "sshd did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(Sshd { child, port })
}

/// Logs in to sshd as the fuzz client (config `flags`), runs `echo hello`,
/// and records every chunk received.
fn record_openssh(port: u16, flags: Flags) -> RecordingClient {
    let mut client = RecordingClient::new(flags);
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_nodelay(true).unwrap();
    stream.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = vec![0u8; 64 * 1024];
    let mut said_bye = false;
    while Instant::now() < deadline {
        let out = client.output();
        stream.write_all(&out).unwrap();
        if client.is_closed() {
            break;
        }
        if client.session_done() && !said_bye {
            said_bye = true;
            client.disconnect();
            continue;
        }
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => client.feed(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("read: {e}"),
        }
    }
    client
}

/// Writes the seed corpora into `fuzz/seeds/` (then minimized into
/// `fuzz/corpus/` with `cargo fuzz cmin`; see fuzz/README.md).
#[test]
#[ignore = "writes fuzz/seeds/; run by hand"]
fn regenerate_seed_corpus() {
    let dir = fuzz_dir().join("seeds");
    let _ = std::fs::remove_dir_all(&dir);
    let tmp = std::env::temp_dir().join(format!("sansh-fuzz-seeds-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();

    // In-memory sessions for every cipher and host key choice.
    let base = [0u8, 1, 2, 3, 4, 0x10, 0x20, 0x30, 0x08].map(Flags::from);
    for flags in base.into_iter().chain(extended_configs()) {
        let rec = fuzz::record_session(flags);
        let tag = match flags.ext {
            0 => format!("pair-{:02x}", flags.base),
            ext => format!("pair-ext-{:02x}-{ext:02x}", flags.base),
        };
        let mut s = Script::new(flags);
        for c in &rec.to_client {
            s.data(c);
        }
        write_seed(&dir, "client_input", &tag, &s.build());
        let mut s = Script::new(flags);
        for c in &rec.to_server {
            s.data(c);
        }
        write_seed(&dir, "server_input", &tag, &s.build());
    }
    // Odd shapes: banner lines, a flood of ticks, commands before anything arrives.
    let mut s = Script::new(0);
    s.data(b"hello\r\nSSH-2.0-OpenSSH_9.2\r\n").tick(0).tick(0).command(10, &[]).eof();
    write_seed(&dir, "client_input", "banner-timeout", &s.build());
    let mut s = Script::new(0x40);
    s.data(b"SSH-2.0-x\r\n\0\0\0\x0c\x0a\x15\0\0\0\0\0\0\0\0\0\0").hold().tick(0);
    write_seed(&dir, "server_input", "newkeys-early", &s.build());

    post_auth_seeds(&dir, "post_auth_client", &server_payloads(), true);
    post_auth_seeds(&dir, "post_auth_server", &client_payloads(), false);
    wire_seeds(&dir);
    known_hosts_seeds(&dir);
    private_key_seeds(&dir, &tmp);
    pool_reconnect_seeds(&dir);

    // A real OpenSSH server: what it sends a client, for client_input, and
    // its post-login payloads, for post_auth_client.
    if let Some(sshd) = start_sshd(&tmp) {
        let mac = |n: u8| n << Flags::MAC_SHIFT;
        let extended = [
            Flags::new(0, Flags::AES128_CTR | mac(1)),
            Flags::new(0, Flags::AES256_CTR | mac(4)),
            Flags::new(0, Flags::AES192_CTR | mac(5) | Flags::P521),
        ];
        for flags in [0u8, 1, 2, 0x10, 0x20, 0x30].map(Flags::from).into_iter().chain(extended) {
            let mut rec = record_openssh(sshd.port, flags);
            assert!(
                rec.authenticated(),
                "{flags:?}: no login to sshd: {:?}",
                std::fs::read_to_string(tmp.join("sshd.log"))
            );
            assert!(rec.session_done(), "{flags:?}: the session did not finish");
            let tag = match flags.ext {
                0 => format!("openssh-{:02x}", flags.base),
                ext => format!("openssh-ext-{:02x}-{ext:02x}", flags.base),
            };
            write_seed(&dir, "client_input", &tag, &rec.script());
            // Replays through the target as it was recorded: logs in, runs the command.
            let done = fuzz::Summary { authenticated: true, channels_closed: 1 };
            assert_eq!(fuzz::single_connection(Role::Client, &rec.script()), done, "{flags:?}");
            if flags == Flags::from(0) {
                let payloads = rec.received_payloads();
                let after_login = payloads.iter().skip_while(|p| p[0] != 52).skip(1);
                for (i, p) in after_login.enumerate() {
                    let mut s = Script::new(0);
                    s.command(0, &[0]).drain(2).inject(p).drain(1);
                    write_seed(&dir, "post_auth_client", &format!("openssh-{i:02}"), &s.build());
                }
                for (i, p) in
                    payloads.iter().take_while(|p| p[0] != 52).filter(|p| p[0] >= 50 || p[0] == 7).enumerate()
                {
                    let mut s = Script::new(0x10);
                    s.inject(p).drain(1);
                    write_seed(&dir, "post_auth_client", &format!("openssh-auth-{i:02}"), &s.build());
                }
            }
        }
    } else {
        eprintln!("no sshd: OpenSSH seeds skipped");
    }
    let _ = std::fs::remove_dir_all(&tmp);
}
