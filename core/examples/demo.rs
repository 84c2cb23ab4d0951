//! The in-memory demo: a sansh client and a sansh server in one process,
//! joined by a simulated link that fragments and delays every write, on a
//! fake clock. Shows the handshake, host key check, authentication, a rekey
//! and the counters — no network, no server needed.
//!
//! `cargo run --release -p sansh --features testing --example demo`

use sansh::testing::{LinkConfig, Pair, accept_policy, host_key, keys};
use sansh::{
    ClientConfig, Credential, Duration, Event, HostKeyAlgorithm, Role, ServerConfig, Timestamp,
    load_private_key,
};

fn main() {
    let user_key = load_private_key(keys::ECDSA_P256, None).expect("test key");
    let client = ClientConfig::new(
        "demo",
        vec![Credential::Password("wrong".into()), Credential::PrivateKey(user_key)],
    );
    let server =
        ServerConfig { host_keys: vec![host_key(HostKeyAlgorithm::Ed25519)], ..ServerConfig::default() };
    let link =
        LinkConfig { latency: Duration::from_millis(20), jitter: Duration::from_millis(5), max_fragment: 97 };
    let mut pair = Pair::new(client, server, link, 2026).expect("valid configs");
    pair.on_server_event = Some(accept_policy("hunter2"));

    println!(
        "sansh in-memory demo: client and server over a simulated 20 ms link, writes cut into ≤97-byte pieces\n"
    );
    pair.authenticate().expect("authentication");
    print_events(&pair, (0, 0));

    let before = (pair.client_events.len(), pair.server_events.len());
    println!("\n-- the client asks for a key re-exchange, with messages queued during it --");
    pair.client.rekey().expect("rekey");
    for i in 1..=3 {
        pair.client.send_debug(false, &format!("queued during rekey #{i}")).expect("debug");
    }
    pair.run_until(pair.now + Duration::from_secs(5), |p| {
        p.server_events.iter().filter(|(_, e)| matches!(e, Event::Debug { .. })).count() == 3
    });
    print_events(&pair, before);

    println!("\n-- counters --");
    for (name, conn) in [("client", &pair.client), ("server", &pair.server)] {
        let s = conn.stats();
        println!(
            "{name}: {} bytes / {} packets sent, {} bytes / {} packets received, {} rekey(s), state {:?}",
            s.bytes_sent,
            s.packets_sent,
            s.bytes_received,
            s.packets_received,
            s.rekeys,
            conn.state()
        );
    }
    let (c2s, s2c) = pair.transcripts();
    println!(
        "simulated time: {:?}; transcript {} + {} bytes (same seed ⇒ same bytes)",
        pair.now,
        c2s.len(),
        s2c.len()
    );
}

/// Prints both sides' events from the given log positions on, in time order.
fn print_events(pair: &Pair, from: (usize, usize)) {
    let mut all: Vec<(Timestamp, &str, &Event)> = Vec::new();
    for (role, log, start) in
        [(Role::Client, &pair.client_events, from.0), (Role::Server, &pair.server_events, from.1)]
    {
        let who = if role == Role::Client { "client" } else { "server" };
        all.extend(log[start..].iter().map(|(t, e)| (*t, who, e)));
    }
    all.sort_by_key(|(t, who, _)| (*t, *who));
    for (t, who, e) in all {
        println!("{t:?} {who}: {}", describe(e));
    }
}

fn describe(e: &Event) -> String {
    match e {
        Event::HostKey(c) => format!("host key {} {} (accepted)", c.algorithm.name(), c.fingerprint),
        Event::KexCompleted { algorithms: a, rekey } => format!(
            "{} done: {} / {} / {}, strict kex {}",
            if *rekey { "rekey" } else { "key exchange" },
            a.kex.name(),
            a.host_key.name(),
            a.cipher_c2s.name(),
            a.strict
        ),
        Event::AuthProgress(a) => format!("auth attempt: {a}"),
        Event::AuthRequest { user, method, .. } => format!("auth request from {user}: {}", method.name()),
        other => format!("{other:?}"),
    }
}
