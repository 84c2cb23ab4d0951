//! Keepalive CPU: `cargo bench -p sansh --bench keepalive`.
//!
//! 10,000 authenticated, idle client connections, each with a 1 s keepalive,
//! driven on simulated time against their server ends: 2 s of warm-up, then
//! 10 s measured. The connections are set up spread over one second (as
//! connections made over time are, so their timers are spread too); the
//! last two rows set them all up at the same instant, the worst case for
//! the caches: every second all timers fire in one burst, then all replies. Reports the CPU the client side spends per second of
//! wall-clock-equivalent time, as a share of one core (the design bound is
//! < 1%), for probes (PING/PONG) and for NAT IGNOREs. The client is driven
//! as the tokio adapter drives it: each connection wakes at its own
//! `poll_timeout` (a heap stands in for the runtime's timer wheel, untimed)
//! and asks for its next deadline after every wake. The server ends run in
//! another thread: they are the peer's work, not the keeper's.
//! `cargo test --bench keepalive` runs a 200-connection smoke version.
//!
//! Wall-clock numbers need a quiet machine. Instruction and cache-miss
//! counts do not: the measured seconds run inside `measured_timers` and
//! `measured_replies`, so callgrind's inclusive cost of those two divided
//! by the packets reported is the steady-state cost per keepalive:
//!
//! ```text
//! SANSH_KA_N=3000 SANSH_KA_SECS=6 SANSH_KA_MODE=0 valgrind --tool=callgrind \
//!     --cache-sim=yes --LL=4194304,16,64 --callgrind-out-file=ka.out BENCH --bench
//! callgrind_annotate --inclusive=yes --show=Ir,DLmr,DLmw ka.out | grep measured_
//! ```

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use sansh::testing::host_key;
use sansh::{
    CipherAlgorithm, ClientConfig, Connection, Credential, Duration, Event, HostKeyAlgorithm,
    KeepaliveConfig, ServerConfig, Timestamp,
};

/// Moves bytes and answers decisions until both sides are authenticated.
fn connect(
    keepalive: KeepaliveConfig,
    cipher: CipherAlgorithm,
    seed: u64,
    at: Timestamp,
) -> (Connection, Connection) {
    let mut cc = ClientConfig::new("u", vec![Credential::Password("pw".into())]);
    cc.transport.keepalive = keepalive;
    cc.transport.ciphers = vec![cipher];
    let sc = ServerConfig { host_keys: vec![host_key(HostKeyAlgorithm::Ed25519)], ..ServerConfig::default() };
    let mut seed_c = [0u8; 32];
    seed_c[..8].copy_from_slice(&seed.to_le_bytes());
    let mut seed_s = seed_c;
    seed_s[31] = 1;
    let mut client = Connection::client(cc, at, seed_c).unwrap();
    let mut server = Connection::server(sc, at, seed_s).unwrap();
    let (mut c_done, mut s_done) = (false, false);
    for _ in 0..100 {
        shuttle(&mut client, &mut server, at);
        while let Some(e) = client.poll_event() {
            match e {
                Event::HostKey(h) => client.accept_host_key(h.id).unwrap(),
                Event::Authenticated { .. } => c_done = true,
                _ => {}
            }
        }
        while let Some(e) = server.poll_event() {
            match e {
                Event::AuthRequest { id, method: sansh::AuthMethod::Password { .. }, .. } => {
                    server.auth_accept(id).unwrap()
                }
                Event::AuthRequest { id, .. } => server.auth_reject(id, None).unwrap(),
                Event::Authenticated { .. } => s_done = true,
                _ => {}
            }
        }
        if c_done && s_done {
            shuttle(&mut client, &mut server, at);
            return (client, server);
        }
    }
    panic!("connection {seed} did not authenticate");
}

/// Delivers what each side has to send to the other, once.
fn shuttle(client: &mut Connection, server: &mut Connection, now: Timestamp) {
    let out = client.pending_transmit().to_vec();
    client.consume_transmit(out.len());
    if !out.is_empty() {
        server.handle_input(now, &out).unwrap();
    }
    let out = server.pending_transmit().to_vec();
    server.consume_transmit(out.len());
    if !out.is_empty() {
        client.handle_input(now, &out).unwrap();
    }
}

/// Seconds of simulated time run before measuring: the first probes and
/// replies still size buffers and queues.
const WARMUP_SECS: u64 = 2;

struct Cost {
    client_secs: f64,
    client_packets: u64,
}

/// One tick's traffic between the two threads: every packet's bytes in one
/// reused arena (as a socket write copies into the kernel), plus
/// (connection index, range) per connection. No allocation per packet.
#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    spans: Vec<(usize, std::ops::Range<usize>)>,
}

impl Batch {
    fn push(&mut self, i: usize, data: &[u8]) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(data);
        self.spans.push((i, start..self.bytes.len()));
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.spans.clear();
    }
}

/// The adapter's timers: one armed deadline per connection, as a tokio
/// task re-arms its sleep from `poll_timeout` after every wake. Not timed
/// (a real adapter's timer wheel is the runtime's work, not the core's).
struct Timers {
    heap: BinaryHeap<Reverse<(Timestamp, usize)>>,
    armed: Vec<Option<Timestamp>>,
}

impl Timers {
    fn new(n: usize) -> Self {
        Timers { heap: BinaryHeap::with_capacity(2 * n), armed: vec![None; n] }
    }

    /// Re-arms connection `i` at `deadline` (what its `poll_timeout` said).
    fn arm(&mut self, i: usize, deadline: Option<Timestamp>) {
        if self.armed[i] != deadline {
            self.armed[i] = deadline;
            if let Some(t) = deadline {
                self.heap.push(Reverse((t, i)));
            }
        }
    }

    /// The connections whose deadline is `now` or earlier, disarmed.
    fn expire(&mut self, now: Timestamp, due: &mut Vec<usize>) {
        due.clear();
        while let Some(&Reverse((t, i))) = self.heap.peek() {
            if t > now {
                break;
            }
            self.heap.pop();
            // A deadline that moved since it was pushed is stale.
            if self.armed[i] == Some(t) {
                self.armed[i] = None;
                due.push(i);
            }
        }
    }
}

/// The client's work when its timers fire, as an adapter does it: run the
/// timers, drain events, take the bytes to send, ask for the next
/// deadline. The new deadlines go to `rearm` for the (untimed) timers.
#[inline(always)]
fn client_timers(
    clients: &mut [Connection],
    due: &[usize],
    now: Timestamp,
    batch: &mut Batch,
    rearm: &mut Vec<(usize, Option<Timestamp>)>,
) {
    for &i in due {
        let c = &mut clients[i];
        c.handle_timeout(now);
        while c.poll_event().is_some() {}
        if !c.pending_transmit().is_empty() {
            batch.push(i, c.pending_transmit());
            let n = c.pending_transmit().len();
            c.consume_transmit(n);
        }
        rearm.push((i, c.poll_timeout()));
    }
}

/// The client's work when the replies arrive.
#[inline(always)]
fn client_replies(
    clients: &mut [Connection],
    replies: &Batch,
    now: Timestamp,
    rearm: &mut Vec<(usize, Option<Timestamp>)>,
) {
    for (i, span) in &replies.spans {
        let c = &mut clients[*i];
        c.handle_input(now, &replies.bytes[span.clone()]).unwrap();
        while c.poll_event().is_some() {}
        rearm.push((*i, c.poll_timeout()));
    }
}

// Separate symbols for the warm-up and the measured seconds, so a profile
// (callgrind's inclusive cost of `measured_*`) shows the steady state alone.
#[inline(never)]
fn warmup_timers(
    c: &mut [Connection],
    d: &[usize],
    now: Timestamp,
    b: &mut Batch,
    r: &mut Vec<(usize, Option<Timestamp>)>,
) {
    client_timers(c, d, now, b, r)
}
#[inline(never)]
fn measured_timers(
    c: &mut [Connection],
    d: &[usize],
    now: Timestamp,
    b: &mut Batch,
    r: &mut Vec<(usize, Option<Timestamp>)>,
) {
    client_timers(c, d, now, b, r)
}
#[inline(never)]
fn warmup_replies(c: &mut [Connection], b: &Batch, now: Timestamp, r: &mut Vec<(usize, Option<Timestamp>)>) {
    client_replies(c, b, now, r)
}
#[inline(never)]
fn measured_replies(
    c: &mut [Connection],
    b: &Batch,
    now: Timestamp,
    r: &mut Vec<(usize, Option<Timestamp>)>,
) {
    client_replies(c, b, now, r)
}

/// Runs `warmup` and then `seconds` of simulated idle time; only the latter
/// is measured. The server ends live in their own thread (as on another
/// machine), so only the clients' memory competes for this thread's
/// caches. Each 10 ms tick the client thread runs every due timer, ships
/// the bytes, and processes the replies; only its own work is timed, three
/// clock reads per tick.
fn run(
    clients: &mut [Connection],
    servers: Vec<Connection>,
    warmup: u64,
    seconds: u64,
) -> (Cost, Vec<Connection>) {
    let (to_servers, server_in) = std::sync::mpsc::channel::<(Timestamp, Batch, Batch)>();
    let (to_clients, client_in) = std::sync::mpsc::channel::<(Batch, Batch)>();
    let server_thread = std::thread::spawn(move || {
        let mut servers = servers;
        while let Ok((now, batch, mut replies)) = server_in.recv() {
            replies.clear();
            for (i, span) in &batch.spans {
                let s = &mut servers[*i];
                s.handle_input(now, &batch.bytes[span.clone()]).unwrap();
                while s.poll_event().is_some() {}
                if !s.pending_transmit().is_empty() {
                    replies.push(*i, s.pending_transmit());
                    let n = s.pending_transmit().len();
                    s.consume_transmit(n);
                }
            }
            to_clients.send((batch, replies)).unwrap();
        }
        servers
    });
    let mut cost = Cost { client_secs: 0.0, client_packets: 0 };
    let mut timers = Timers::new(clients.len());
    for (i, c) in clients.iter().enumerate() {
        timers.arm(i, c.poll_timeout());
    }
    let tick = Duration::from_millis(10);
    let mut now = Timestamp::from_secs(1);
    let measure_from = now + Duration::from_secs(warmup);
    let end = measure_from + Duration::from_secs(seconds);
    let mut before = None;
    let mut due = Vec::with_capacity(clients.len());
    let mut rearm = Vec::with_capacity(2 * clients.len());
    let (mut batch, mut replies) = (Batch::default(), Batch::default());
    while now < end {
        let measured = now >= measure_from;
        if measured && before.is_none() {
            before = Some(clients.iter().map(|c| c.stats().packets_sent).sum::<u64>());
        }
        timers.expire(now, &mut due);
        batch.clear();
        rearm.clear();
        let t0 = Instant::now();
        if measured {
            measured_timers(clients, &due, now, &mut batch, &mut rearm);
        } else {
            warmup_timers(clients, &due, now, &mut batch, &mut rearm);
        }
        let t1 = Instant::now();
        to_servers.send((now, batch, replies)).unwrap();
        (batch, replies) = client_in.recv().unwrap();
        let t2 = Instant::now();
        if measured {
            measured_replies(clients, &replies, now, &mut rearm);
        } else {
            warmup_replies(clients, &replies, now, &mut rearm);
        }
        let t3 = Instant::now();
        if measured {
            cost.client_secs += (t1 - t0 + (t3 - t2)).as_secs_f64();
        }
        for &(i, deadline) in &rearm {
            timers.arm(i, deadline);
        }
        now = now + tick;
    }
    drop(to_servers);
    let servers = server_thread.join().unwrap();
    let after: u64 = clients.iter().map(|c| c.stats().packets_sent).sum();
    cost.client_packets = after - before.unwrap_or(after);
    (cost, servers)
}

fn main() {
    let smoke = !std::env::args().any(|a| a == "--bench");
    let (n, seconds) = if smoke { (200, 3) } else { (10_000, 10) };
    // For profiling: SANSH_KA_N connections, SANSH_KA_SECS simulated seconds,
    // SANSH_KA_MODE (0-5) to run one mode/cipher row only.
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
    let n = env("SANSH_KA_N").map_or(n, |v| v as usize);
    let seconds = env("SANSH_KA_SECS").unwrap_or(seconds);
    let only = env("SANSH_KA_MODE");
    println!(
        "keepalive CPU: {n} idle authenticated connections, 1 s interval, {seconds} s measured after {WARMUP_SECS} s\n"
    );
    println!(
        "{:<34} {:<30} {:>10} {:>14} {:>12}",
        "mode", "cipher", "packets/s", "client µs/pkt", "client core"
    );
    let probes =
        KeepaliveConfig { probe_interval: Some(Duration::from_secs(1)), ..KeepaliveConfig::default() };
    let ignores =
        KeepaliveConfig { ignore_interval: Some(Duration::from_secs(1)), ..KeepaliveConfig::default() };
    // (name, keepalive, connected all at once): connections are normally
    // set up at different times, so their timers are spread over the
    // interval and a probe's reply finds its connection still in cache.
    // The last rows connect all of them in the same instant (a pool
    // filled at start-up): each second every timer fires in one burst,
    // then every reply, and the burst sweeps all their memory twice.
    let modes = [
        ("liveness probe (PING/PONG)", &probes, false),
        ("NAT keepalive (IGNORE, 16-128 B)", &ignores, false),
        ("probes, all connected at once", &probes, true),
    ];
    for (row, ((name, ka, burst), cipher)) in
        modes.iter().flat_map(|m| CipherAlgorithm::ALL.into_iter().take(2).map(move |c| (m, c))).enumerate()
    {
        if only.is_some_and(|o| o != row as u64) {
            continue;
        }
        let setup = Instant::now();
        let at = |i: usize| match burst {
            true => Timestamp::ZERO,
            false => Timestamp::from_micros(i as u64 * 1_000_000 / n as u64),
        };
        let (mut clients, servers): (Vec<_>, Vec<_>) =
            (0..n).map(|i| connect((*ka).clone(), cipher, i as u64, at(i))).unzip();
        let setup = setup.elapsed();
        let (cost, servers) = run(&mut clients, servers, WARMUP_SECS, seconds);
        assert!(clients.iter().all(|c| !c.is_closed()) && servers.iter().all(|s| !s.is_closed()));
        let per_sec = cost.client_packets as f64 / seconds as f64;
        assert!(per_sec >= n as f64 * 0.8, "each connection keeps alive about once a second ({per_sec}/s)");
        println!(
            "{:<34} {:<30} {:>10.0} {:>14.2} {:>11.3}%   ({} packets measured, setup {:.1?})",
            name,
            cipher.name(),
            per_sec,
            cost.client_secs / cost.client_packets as f64 * 1e6,
            cost.client_secs / seconds as f64 * 100.0,
            cost.client_packets,
            setup
        );
    }
    println!(
        "\n'core' = CPU seconds per simulated second: the share of one core that keeping {n} connections alive costs."
    );
    println!("size_of::<Connection>() = {} bytes (plus its buffers on the heap)", size_of::<Connection>());
}
