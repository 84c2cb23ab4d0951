//! In-memory test harness (feature `testing`): a client and a server
//! [`Connection`] joined by a simulated link on a fake clock.
//!
//! The link is seeded: it splits writes into random fragments, delays them,
//! and can be cut (both sides see EOF) or turned into a black hole (bytes
//! vanish, nobody is told). [`Pair::step`] jumps the clock straight to the
//! next thing that can happen, so an hour of simulated idle time costs
//! microseconds, and the same seed always gives byte-identical transcripts.

use std::collections::VecDeque;

use crate::config::{ClientConfig, ServerConfig};
use crate::connection::Connection;
use crate::error::Error;
use crate::event::Event;
use crate::rng::Rng;
use crate::time::{Duration, Timestamp};
use crate::transport::{HostKey, HostKeyAlgorithm};

/// Fixed host keys for tests (made with `ssh-keygen`; never use them for real).
pub mod keys {
    /// An ed25519 host key in OpenSSH format.
    pub const ED25519: &str = include_str!("keys/host_ed25519");
    /// An ecdsa-sha2-nistp256 host key.
    pub const ECDSA_P256: &str = include_str!("keys/host_ecdsa256");
    /// An ecdsa-sha2-nistp384 host key.
    pub const ECDSA_P384: &str = include_str!("keys/host_ecdsa384");
    /// An ecdsa-sha2-nistp521 host key.
    pub const ECDSA_P521: &str = include_str!("keys/host_ecdsa521");
    /// A 2048-bit RSA host key.
    pub const RSA: &str = include_str!("keys/host_rsa");
}

/// A callback run on every event of one side (see [`Pair::on_client_event`]).
pub type EventHook = Box<dyn FnMut(&mut Connection, &Event)>;

/// A server-side policy for tests: accepts every key query, signed key,
/// password equal to `password`, and `none` only if `password` is empty.
pub fn accept_policy(password: &'static str) -> EventHook {
    Box::new(move |conn, e| {
        if let Event::AuthRequest { id, method, .. } = e {
            let ok = match method {
                crate::auth::AuthMethod::None => password.is_empty(),
                crate::auth::AuthMethod::PublicKey { .. } => true,
                crate::auth::AuthMethod::Password { password: p, .. } => p.expose() == password,
                _ => false,
            };
            let r = if ok { conn.auth_accept(*id) } else { conn.auth_reject(*id, None) };
            r.expect("answer auth request");
        }
    })
}

/// A test host key able to sign with `alg`.
pub fn host_key(alg: HostKeyAlgorithm) -> HostKey {
    let pem = match alg {
        HostKeyAlgorithm::Ed25519 => keys::ED25519,
        HostKeyAlgorithm::EcdsaP256 => keys::ECDSA_P256,
        HostKeyAlgorithm::EcdsaP384 => keys::ECDSA_P384,
        HostKeyAlgorithm::EcdsaP521 => keys::ECDSA_P521,
        HostKeyAlgorithm::RsaSha256 | HostKeyAlgorithm::RsaSha512 => keys::RSA,
    };
    HostKey::from_openssh(pem, None).expect("usable test host key")
}

/// How the simulated link behaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkConfig {
    /// One-way delay of every fragment.
    pub latency: Duration,
    /// Extra random delay per fragment, up to this much (order is kept, as TCP does).
    pub jitter: Duration,
    /// Writes are split into fragments of 1..=`max_fragment` bytes (0: never split).
    pub max_fragment: usize,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig { latency: Duration::from_millis(1), jitter: Duration::ZERO, max_fragment: 0 }
    }
}

impl LinkConfig {
    /// A link that splits every write into fragments of 1..=`max` bytes.
    pub fn fragmenting(max: usize) -> Self {
        LinkConfig { max_fragment: max, ..Self::default() }
    }
}

/// A fault on the link.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Bytes flow.
    None,
    /// The connection is torn down: both ends see EOF after the latency.
    Cut,
    /// Every byte is silently dropped and nobody sees EOF (a dead NAT, a
    /// pulled cable): only a timer can notice.
    BlackHole,
}

/// One direction of the link.
#[derive(Debug)]
struct Link {
    config: LinkConfig,
    rng: Rng,
    in_flight: VecDeque<(Timestamp, Vec<u8>)>,
    last_delivery: Timestamp,
    eof_at: Option<Timestamp>,
    eof_delivered: bool,
    fault: Fault,
    /// Every byte the sender wrote, before fragmentation and faults.
    transcript: Vec<u8>,
    record: bool,
}

impl Link {
    fn new(config: LinkConfig, seed: u64) -> Self {
        Link {
            config,
            rng: Rng::from_u64(seed),
            in_flight: VecDeque::new(),
            last_delivery: Timestamp::ZERO,
            eof_at: None,
            eof_delivered: false,
            fault: Fault::None,
            transcript: Vec::new(),
            record: true,
        }
    }

    fn send(&mut self, now: Timestamp, mut bytes: &[u8]) {
        if self.record {
            self.transcript.extend_from_slice(bytes);
        }
        if self.fault != Fault::None {
            return;
        }
        while !bytes.is_empty() {
            let n = if self.config.max_fragment == 0 {
                bytes.len()
            } else {
                let max = self.config.max_fragment.min(bytes.len()) as u64;
                self.rng.range_inclusive(1, max) as usize
            };
            let jitter = if self.config.jitter.is_zero() {
                Duration::ZERO
            } else {
                Duration::from_micros(self.rng.below(self.config.jitter.as_micros() as u64 + 1))
            };
            let at = (now + self.config.latency + jitter).max(self.last_delivery);
            self.last_delivery = at;
            self.in_flight.push_back((at, bytes[..n].to_vec()));
            bytes = &bytes[n..];
        }
    }

    fn next_wakeup(&self) -> Option<Timestamp> {
        let data = self.in_flight.front().map(|(t, _)| *t);
        let eof = self.eof_at.filter(|_| !self.eof_delivered && self.in_flight.is_empty());
        data.or(eof)
    }
}

/// Which way bytes travel.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Client to server.
    ClientToServer,
    /// Server to client.
    ServerToClient,
}

/// A client and a server connected by a simulated link.
pub struct Pair {
    /// The client end.
    pub client: Connection,
    /// The server end.
    pub server: Connection,
    /// The fake clock.
    pub now: Timestamp,
    c2s: Link,
    s2c: Link,
    /// Every event the client emitted, with when.
    pub client_events: Vec<(Timestamp, Event)>,
    /// Every event the server emitted, with when.
    pub server_events: Vec<(Timestamp, Event)>,
    /// Errors returned by `handle_input` on each side (they also close it).
    pub client_errors: Vec<Error>,
    /// Errors returned by `handle_input` on the server.
    pub server_errors: Vec<Error>,
    /// Accept every host key check automatically (default true).
    pub auto_accept_host_key: bool,
    /// Called on every chunk the server writes, before the link: tests use it
    /// to corrupt bytes in flight.
    #[allow(clippy::type_complexity)]
    pub tamper_s2c: Option<Box<dyn FnMut(&mut Vec<u8>)>>,
    /// Same for bytes the client writes.
    #[allow(clippy::type_complexity)]
    pub tamper_c2s: Option<Box<dyn FnMut(&mut Vec<u8>)>>,
    /// Called with every client event before it is logged: tests answer
    /// requests here (sign, prompts). Errors of the commands it runs are
    /// the test's business.
    pub on_client_event: Option<EventHook>,
    /// Same for server events (e.g. an authentication policy).
    pub on_server_event: Option<EventHook>,
}

impl core::fmt::Debug for Pair {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Pair")
            .field("now", &self.now)
            .field("client", &self.client.state())
            .field("server", &self.server.state())
            .field("c2s_in_flight", &self.c2s.in_flight.len())
            .field("s2c_in_flight", &self.s2c.in_flight.len())
            .finish_non_exhaustive()
    }
}

impl Pair {
    /// A pair whose connection seeds and link randomness all derive from `seed`.
    pub fn new(
        client: ClientConfig,
        server: ServerConfig,
        link: LinkConfig,
        seed: u64,
    ) -> Result<Pair, Error> {
        let mut rng = Rng::from_u64(seed);
        let now = Timestamp::ZERO;
        let client = Connection::client(client, now, rng.fork_seed())?;
        let server = Connection::server(server, now, rng.fork_seed())?;
        let c2s = Link::new(link.clone(), rand_core::RngCore::next_u64(&mut rng));
        let s2c = Link::new(link, rand_core::RngCore::next_u64(&mut rng));
        let mut pair = Pair {
            client,
            server,
            now,
            c2s,
            s2c,
            client_events: Vec::new(),
            server_events: Vec::new(),
            client_errors: Vec::new(),
            server_errors: Vec::new(),
            auto_accept_host_key: true,
            tamper_s2c: None,
            tamper_c2s: None,
            on_client_event: None,
            on_server_event: None,
        };
        pair.flush();
        Ok(pair)
    }

    /// A pair with default configs, a server holding a host key for `alg`,
    /// and a link that fragments writes into pieces of 1..=`max_fragment` bytes.
    pub fn with_host_key(alg: HostKeyAlgorithm, max_fragment: usize, seed: u64) -> Pair {
        let mut client = ClientConfig::default();
        client.transport.host_key_algorithms = vec![alg];
        let server = ServerConfig { host_keys: vec![host_key(alg)], ..ServerConfig::default() };
        Pair::new(client, server, LinkConfig::fragmenting(max_fragment), seed).expect("valid config")
    }

    /// Moves everything that is ready: outputs onto the link, events into
    /// the logs (answering host key checks when `auto_accept_host_key`).
    pub fn flush(&mut self) {
        loop {
            let mut progressed = false;
            let out = self.client.pending_transmit().to_vec();
            if !out.is_empty() {
                let mut out = out;
                let n = out.len();
                if let Some(t) = self.tamper_c2s.as_mut() {
                    t(&mut out);
                }
                self.c2s.send(self.now, &out);
                self.client.consume_transmit(n);
                progressed = true;
            }
            let out = self.server.pending_transmit().to_vec();
            if !out.is_empty() {
                let mut out = out;
                let n = out.len();
                if let Some(t) = self.tamper_s2c.as_mut() {
                    t(&mut out);
                }
                self.s2c.send(self.now, &out);
                self.server.consume_transmit(n);
                progressed = true;
            }
            while let Some(e) = self.client.poll_event() {
                if let Some(hook) = self.on_client_event.as_mut() {
                    hook(&mut self.client, &e);
                }
                if let (Event::HostKey(check), true) = (&e, self.auto_accept_host_key) {
                    let id = check.id;
                    self.client_events.push((self.now, e));
                    // Buffered input processed on acceptance may fail: that
                    // closes the client, as handle_input would.
                    if let Err(e) = self.client.accept_host_key(id) {
                        self.client_errors.push(e);
                    }
                } else {
                    self.client_events.push((self.now, e));
                }
                progressed = true;
            }
            while let Some(e) = self.server.poll_event() {
                if let Some(hook) = self.on_server_event.as_mut() {
                    hook(&mut self.server, &e);
                }
                self.server_events.push((self.now, e));
                progressed = true;
            }
            if !progressed {
                return;
            }
        }
    }

    /// The next moment anything can happen: a delivery or a timer.
    pub fn next_wakeup(&self) -> Option<Timestamp> {
        [
            self.c2s.next_wakeup(),
            self.s2c.next_wakeup(),
            self.client.poll_timeout(),
            self.server.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Advances the clock to the next wakeup and processes it. Returns false
    /// when nothing is left to happen (both sides idle with no timers).
    pub fn step(&mut self) -> bool {
        self.flush();
        let Some(next) = self.next_wakeup() else {
            return false;
        };
        self.now = self.now.max(next);
        let now = self.now;
        for (link, conn, errors) in [
            (&mut self.c2s, &mut self.server, &mut self.server_errors),
            (&mut self.s2c, &mut self.client, &mut self.client_errors),
        ] {
            while link.in_flight.front().is_some_and(|(at, _)| *at <= now) {
                let (_, bytes) = link.in_flight.pop_front().expect("front exists");
                // Both input paths, chosen by the seeded link: the copying
                // `handle_input` and the zero-copy `receive_buffer`.
                let result = if rand_core::RngCore::next_u32(&mut link.rng) % 2 == 0 {
                    conn.handle_input(now, &bytes)
                } else {
                    conn.receive_buffer(bytes.len())[..bytes.len()].copy_from_slice(&bytes);
                    conn.commit_received(now, bytes.len())
                };
                if let Err(e) = result {
                    errors.push(e);
                }
            }
        }
        for (link, conn) in [(&mut self.c2s, &mut self.server), (&mut self.s2c, &mut self.client)] {
            if link.in_flight.is_empty() && !link.eof_delivered && link.eof_at.is_some_and(|t| t <= now) {
                link.eof_delivered = true;
                conn.handle_eof(now);
            }
        }
        if self.client.poll_timeout().is_some_and(|t| t <= now) {
            self.client.handle_timeout(now);
        }
        if self.server.poll_timeout().is_some_and(|t| t <= now) {
            self.server.handle_timeout(now);
        }
        self.flush();
        true
    }

    /// Steps until `done` holds (true) or the clock passes `limit` or nothing
    /// is left to happen (false).
    pub fn run_until(&mut self, limit: Timestamp, mut done: impl FnMut(&Pair) -> bool) -> bool {
        loop {
            self.flush();
            if done(self) {
                return true;
            }
            if self.next_wakeup().is_none_or(|t| t > limit) || !self.step() {
                return done(self);
            }
        }
    }

    /// Runs everything due in the next `d` of simulated time, then moves the
    /// clock to the end of it (even if nothing happened).
    pub fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        self.run_until(end, |_| false);
        self.now = self.now.max(end);
        self.flush();
    }

    /// Steps until both sides are idle or closed, or `limit` passes.
    pub fn run_idle(&mut self, limit: Timestamp) {
        self.run_until(limit, |_| false);
    }

    /// Both sides finished the first kex, and the client's service request
    /// was accepted.
    pub fn handshake_done(&self) -> bool {
        self.client_events.iter().any(|(_, e)| matches!(e, Event::ServiceAccepted { .. }))
    }

    /// Both sides authenticated.
    pub fn authenticated(&self) -> bool {
        let done =
            |log: &[(Timestamp, Event)]| log.iter().any(|(_, e)| matches!(e, Event::Authenticated { .. }));
        done(&self.client_events) && done(&self.server_events)
    }

    /// Runs until both sides are authenticated (the server's decisions must
    /// come from `on_server_event`).
    pub fn authenticate(&mut self) -> Result<(), String> {
        let limit = self.now + Duration::from_secs(60);
        if self.run_until(limit, |p| p.authenticated() || p.client.is_closed() || p.server.is_closed())
            && self.authenticated()
        {
            Ok(())
        } else {
            Err(format!(
                "authentication did not finish: client events {:?}, server events {:?}",
                self.client_events, self.server_events
            ))
        }
    }

    /// Runs the handshake (kex + service request) to completion.
    pub fn handshake(&mut self) -> Result<(), String> {
        let limit = self.now + Duration::from_secs(60);
        if self.run_until(limit, |p| p.handshake_done() || p.client.is_closed() || p.server.is_closed())
            && self.handshake_done()
        {
            Ok(())
        } else {
            Err(format!(
                "handshake did not finish: client errors {:?}, server errors {:?}, client events {:?}",
                self.client_errors, self.server_errors, self.client_events
            ))
        }
    }

    /// Applies a fault to both directions from now on.
    pub fn set_fault(&mut self, fault: Fault) {
        for link in [&mut self.c2s, &mut self.s2c] {
            link.fault = fault;
            match fault {
                Fault::None => {}
                Fault::Cut => {
                    link.in_flight.clear();
                    link.eof_at = Some(self.now + link.config.latency);
                }
                Fault::BlackHole => link.in_flight.clear(),
            }
        }
    }

    /// Bytes each side wrote so far: (client to server, server to client).
    pub fn transcripts(&self) -> (&[u8], &[u8]) {
        (&self.c2s.transcript, &self.s2c.transcript)
    }

    /// Stop (or resume) recording transcripts, e.g. for long bulk runs.
    pub fn record_transcripts(&mut self, on: bool) {
        self.c2s.record = on;
        self.s2c.record = on;
    }

    /// Bytes in flight in one direction.
    pub fn in_flight(&self, dir: Direction) -> usize {
        let link = match dir {
            Direction::ClientToServer => &self.c2s,
            Direction::ServerToClient => &self.s2c,
        };
        link.in_flight.iter().map(|(_, b)| b.len()).sum()
    }

    /// Events of one side, without timestamps.
    pub fn events(&self, side: crate::transport::Role) -> Vec<&Event> {
        let log = match side {
            crate::transport::Role::Client => &self.client_events,
            crate::transport::Role::Server => &self.server_events,
        };
        log.iter().map(|(_, e)| e).collect()
    }
}

pub mod fuzz;
