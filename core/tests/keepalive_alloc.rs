//! Keepalive in the steady state allocates nothing, on either side: probes
//! (PING/PONG) and NAT IGNOREs run once an interval on every idle
//! connection, so an allocation there is one per connection-interval.
//!
//! A counting global allocator (this test binary only) counts, per thread,
//! the allocations made while an authenticated pair exchanges keepalives.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use sansh::testing::{LinkConfig, Pair, accept_policy, host_key};
use sansh::{
    CipherAlgorithm, ClientConfig, Connection, Credential, Duration, HostKeyAlgorithm, KeepaliveConfig,
    ServerConfig,
};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    // Never panics (during thread teardown the count is simply not kept).
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

// SAFETY: every call is passed on unchanged to the system allocator; the
// counter is a const-initialised thread-local Cell, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as ours.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

/// An authenticated pair whose client keeps alive with `keepalive`.
fn pair(keepalive: KeepaliveConfig, cipher: CipherAlgorithm) -> Pair {
    let mut client = ClientConfig::new("u", vec![Credential::Password("pw".into())]);
    client.transport.keepalive = keepalive;
    client.transport.ciphers = vec![cipher];
    let server =
        ServerConfig { host_keys: vec![host_key(HostKeyAlgorithm::Ed25519)], ..ServerConfig::default() };
    let mut p = Pair::new(client, server, LinkConfig::default(), 7).unwrap();
    p.on_server_event = Some(accept_policy("pw"));
    p.authenticate().unwrap();
    p
}

/// Moves `from`'s output into `to` through `buf` (capacity reserved, so
/// this allocates nothing itself). Returns whether anything moved.
fn deliver(from: &mut Connection, to: &mut Connection, now: sansh::Timestamp, buf: &mut Vec<u8>) -> bool {
    buf.clear();
    buf.extend_from_slice(from.pending_transmit());
    from.consume_transmit(buf.len());
    while from.poll_event().is_some() {}
    if buf.is_empty() {
        return false;
    }
    to.handle_input(now, buf).unwrap();
    while to.poll_event().is_some() {}
    true
}

/// Runs `intervals` client keepalive timers, each followed by the traffic
/// it causes both ways, as an adapter would (poll_timeout after each wake).
/// Returns the client's packets sent and the allocations made meanwhile.
fn run(p: &mut Pair, intervals: usize, buf: &mut Vec<u8>) -> (u64, u64) {
    let sent = p.client.stats().packets_sent;
    let before = allocations();
    for _ in 0..intervals {
        let now = p.client.poll_timeout().expect("a keepalive timer is armed");
        p.client.handle_timeout(now);
        while deliver(&mut p.client, &mut p.server, now, buf)
            | deliver(&mut p.server, &mut p.client, now, buf)
        {}
    }
    let made = allocations() - before;
    assert!(!p.client.is_closed() && !p.server.is_closed());
    (p.client.stats().packets_sent - sent, made)
}

fn check(keepalive: KeepaliveConfig) {
    for cipher in [CipherAlgorithm::ChaCha20Poly1305, CipherAlgorithm::Aes128Gcm] {
        let mut p = pair(keepalive.clone(), cipher);
        let mut buf = Vec::with_capacity(64 * 1024);
        // Warm-up: the first keepalives still size buffers.
        run(&mut p, 3, &mut buf);
        let (sent, made) = run(&mut p, 20, &mut buf);
        assert_eq!(sent, 20, "{cipher:?}: one keepalive per timer");
        assert_eq!(made, 0, "{cipher:?}: {made} allocations in 20 keepalive intervals");
        let s = p.client.stats();
        assert_eq!(s.probes_sent, s.probes_answered, "{cipher:?}: every probe answered");
    }
}

#[test]
fn probes_and_their_replies_allocate_nothing() {
    check(KeepaliveConfig { probe_interval: Some(Duration::from_secs(1)), ..KeepaliveConfig::default() });
}

#[test]
fn nat_ignores_allocate_nothing() {
    check(KeepaliveConfig { ignore_interval: Some(Duration::from_secs(1)), ..KeepaliveConfig::default() });
}
