//! [`Pool`]: bookkeeping for multiplexing leases (channels) over a bounded
//! set of connections, as a pure machine. It never owns a connection: the
//! adapter dials when told, reports what happened, and opens a channel on
//! the connection named by each lease (OpenSSH's ControlMaster idea inside
//! one process).
//!
//! Connections are keyed by (host, port, user, identity), so no connection
//! ever serves another user or credential.
//!
//! Who gets a connection when the limits bind:
//! - a key's waiters are served in arrival order (FIFO), from its ready
//!   connections with a free channel first;
//! - a key whose waiters outnumber what its dials in flight will carry
//!   dials another connection, within `max_connections_per_key`;
//! - at the global `max_connections`, keys that need a connection queue for
//!   room in the order of the waiter whose turn it is (the first one their
//!   dials in flight do not cover): FIFO across keys. Room is handed out the
//!   moment it appears (a connection lost, closed or refused, a dial
//!   failed), and a connection that is idle while another key waits for
//!   room is closed for it (`CloseIdle`; the one idle longest first), so no
//!   waiter waits while an idle connection holds its slot.
//!
//! Operations are O(1) or O(log n) in the number of connections, leases and
//! waiters, except when the global limit binds: finding a key's turn then
//! walks its queue up to the waiters its dials in flight cover.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use crate::time::{Duration, Timestamp};

/// Who a connection is for. Leases never cross keys.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolKey {
    /// Host name or address as dialled.
    pub host: String,
    /// Port.
    pub port: u16,
    /// User name.
    pub user: String,
    /// Which credential (e.g. the key fingerprint): different credentials
    /// never share a connection.
    pub identity: String,
}

/// A connection the pool knows of.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(pub u64);

/// A lease: the right to one channel on a connection.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseId(pub u64);

/// A queued request for a lease.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WaiterId(pub u64);

/// A granted lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// Its id (release it with this).
    pub id: LeaseId,
    /// The connection to open the channel on.
    pub connection: ConnectionId,
}

/// Hashes the pool's own sequential ids with one multiply (Fibonacci
/// hashing): they are not attacker-chosen, and SipHash made id lookups
/// the bulk of an acquire+release.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// Limits and timers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolConfig {
    /// Connections in total, dialling ones included.
    pub max_connections: usize,
    /// Connections per key.
    pub max_connections_per_key: usize,
    /// Leases per connection (OpenSSH's MaxSessions is 10).
    pub max_channels_per_connection: u32,
    /// A connection without leases this long is told to close.
    pub idle_timeout: Duration,
    /// A waiter not served within this is told it timed out.
    pub acquire_timeout: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            max_connections: 10,
            max_connections_per_key: 10,
            max_channels_per_connection: 10,
            idle_timeout: Duration::from_secs(300),
            acquire_timeout: Duration::from_secs(30),
        }
    }
}

/// The answer to `acquire`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub enum Acquire {
    /// Granted at once on a connection that is up.
    Leased(Lease),
    /// Queued; `PoolEvent::LeaseGranted` or `WaiterTimedOut`/`WaiterFailed` follows.
    Queued {
        /// The waiter.
        waiter: WaiterId,
        /// When it times out.
        deadline: Timestamp,
    },
}

/// What the adapter must do or know.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub enum PoolEvent {
    /// Dial a connection for `key`; report `connected` or `failed` with `connection`.
    Dial {
        /// The id it will have.
        connection: ConnectionId,
        /// Whom it is for.
        key: PoolKey,
    },
    /// A queued waiter got its lease.
    LeaseGranted {
        /// The waiter.
        waiter: WaiterId,
        /// The lease.
        lease: Lease,
    },
    /// A waiter was not served in time.
    WaiterTimedOut {
        /// The waiter.
        waiter: WaiterId,
    },
    /// A waiter cannot be served: every connection for its key failed.
    WaiterFailed {
        /// The waiter.
        waiter: WaiterId,
    },
    /// Close this connection: idle too long, its slot is needed, or its
    /// server refused the only channel on it.
    CloseIdle {
        /// The connection.
        connection: ConnectionId,
    },
    /// The connection of this lease was lost: the lease is gone.
    LeaseBroken {
        /// The lease.
        lease: LeaseId,
        /// Its connection.
        connection: ConnectionId,
    },
}

/// Counters for monitoring.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Connections being dialled.
    pub dialing: usize,
    /// Connections up.
    pub ready: usize,
    /// Leases live.
    pub leases: usize,
    /// Waiters queued.
    pub waiters: usize,
    /// Dials requested so far.
    pub dials: u64,
    /// Of those, dials reported `failed` (they never came up).
    pub dials_failed: u64,
    /// Connections that were up and were removed: lost, closed when idle or
    /// to make room for another key, closed after refusing their only channel.
    pub evictions: u64,
    /// Leases granted so far.
    pub leases_granted: u64,
    /// Of those, granted on a connection that had served a lease before.
    pub leases_reused: u64,
}

impl PoolStats {
    /// Share of leases served by a connection that already existed.
    pub fn reuse_ratio(&self) -> f64 {
        if self.leases_granted == 0 { 0.0 } else { self.leases_reused as f64 / self.leases_granted as f64 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnState {
    Dialing,
    Ready,
}

#[derive(Debug)]
struct Conn {
    key: usize,
    state: ConnState,
    leases: u32,
    /// Most leases it takes: `max_channels_per_connection`, or fewer once
    /// its server refused a channel (the server's own limit is lower).
    cap: u32,
    /// Its leases (at most `max_channels_per_connection`), so losing it
    /// breaks exactly these without scanning every lease.
    lease_ids: Vec<LeaseId>,
    /// Leases ever granted on it (for the reuse ratio).
    served: u64,
    /// Position in its key's `free` list, when it is there.
    free_slot: Option<usize>,
    /// When it closes for being idle (`Some` exactly while idle).
    idle_deadline: Option<Timestamp>,
}

#[derive(Debug, Default)]
struct KeyState {
    key: Option<PoolKey>,
    /// Live connections (dialling or ready).
    connections: usize,
    dialing: usize,
    /// Ready connections with spare capacity (a stack: recently freed first).
    free: Vec<ConnectionId>,
    /// Waiters in arrival order (timed-out ones are skipped lazily).
    waiters: VecDeque<WaiterId>,
    /// Waiters in `waiters` that have not timed out.
    live_waiters: usize,
    /// Its entry in `Pool::blocked`, while it has one.
    blocked: Option<WaiterId>,
}

#[derive(Debug)]
struct Waiter {
    key: usize,
    deadline: Timestamp,
}

/// The pool.
#[derive(Debug)]
pub struct Pool {
    config: PoolConfig,
    keys: Vec<KeyState>,
    key_index: HashMap<PoolKey, usize>,
    conns: IdMap<ConnectionId, Conn>,
    leases: IdMap<LeaseId, ConnectionId>,
    waiters: IdMap<WaiterId, Waiter>,
    waiter_deadlines: BTreeSet<(Timestamp, WaiterId)>,
    /// (deadline, connection) of idle connections; exactly one entry per
    /// idle connection, so it stays bounded by the live connections.
    idle_deadlines: BTreeSet<(Timestamp, ConnectionId)>,
    /// Ready connections without leases (candidates to close for room).
    idle_count: usize,
    /// Keys that need a connection the global limit does not allow yet, by
    /// the waiter whose turn it is (ids grow with arrival: FIFO across
    /// keys). An entry is never later than the key's turn: when the turn
    /// moves on (waiters left, a dial started) the entry is corrected as it
    /// comes up; when it moves back (a dial failed) it is redone at once.
    blocked: BTreeSet<(WaiterId, usize)>,
    live: usize,
    next_id: u64,
    events: VecDeque<PoolEvent>,
    stats: PoolStats,
}

impl Pool {
    /// An empty pool.
    pub fn new(config: PoolConfig) -> Self {
        Pool {
            config,
            keys: Vec::new(),
            key_index: HashMap::new(),
            conns: IdMap::default(),
            leases: IdMap::default(),
            waiters: IdMap::default(),
            waiter_deadlines: BTreeSet::new(),
            idle_deadlines: BTreeSet::new(),
            idle_count: 0,
            blocked: BTreeSet::new(),
            live: 0,
            next_id: 0,
            events: VecDeque::new(),
            stats: PoolStats::default(),
        }
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn key_slot(&mut self, key: &PoolKey) -> usize {
        if let Some(&k) = self.key_index.get(key) {
            return k;
        }
        let k = self.keys.len();
        self.keys.push(KeyState { key: Some(key.clone()), ..KeyState::default() });
        self.key_index.insert(key.clone(), k);
        k
    }

    /// Counters.
    pub fn stats(&self) -> PoolStats {
        let mut s = self.stats.clone();
        s.leases = self.leases.len();
        s.waiters = self.waiters.len();
        s.dialing = self.keys.iter().map(|k| k.dialing).sum();
        s.ready = self.live - s.dialing;
        s
    }

    /// The key a connection serves.
    pub fn key_of(&self, connection: ConnectionId) -> Option<&PoolKey> {
        self.conns.get(&connection).and_then(|c| self.keys[c.key].key.as_ref())
    }

    // ---------------------------------------------------- free-list helpers

    fn push_free(&mut self, id: ConnectionId) {
        let c = self.conns.get_mut(&id).expect("live connection");
        if c.free_slot.is_none() && c.leases < c.cap {
            let list = &mut self.keys[c.key].free;
            c.free_slot = Some(list.len());
            list.push(id);
        }
    }

    fn remove_free(&mut self, id: ConnectionId) {
        let Some(c) = self.conns.get_mut(&id) else { return };
        let Some(slot) = c.free_slot.take() else { return };
        let key = c.key;
        let list = &mut self.keys[key].free;
        list.swap_remove(slot);
        if let Some(&moved) = list.get(slot) {
            self.conns.get_mut(&moved).expect("listed connection").free_slot = Some(slot);
        }
    }

    /// Marks a ready connection without leases idle from `now`.
    fn set_idle(&mut self, id: ConnectionId, now: Timestamp) {
        let timeout = self.config.idle_timeout;
        let c = self.conns.get_mut(&id).expect("live connection");
        if c.idle_deadline.is_some() || c.leases > 0 || c.state != ConnState::Ready {
            return;
        }
        c.idle_deadline = Some(now + timeout);
        self.idle_deadlines.insert((now + timeout, id));
        self.idle_count += 1;
    }

    fn clear_idle(&mut self, id: ConnectionId) {
        let c = self.conns.get_mut(&id).expect("live connection");
        if let Some(deadline) = c.idle_deadline.take() {
            self.idle_deadlines.remove(&(deadline, id));
            self.idle_count -= 1;
        }
    }

    /// Grants a lease on `id` (which has room).
    fn grant(&mut self, id: ConnectionId) -> Lease {
        let lease = LeaseId(self.id());
        self.clear_idle(id);
        let c = self.conns.get_mut(&id).expect("live connection");
        c.leases += 1;
        c.lease_ids.push(lease);
        if c.served > 0 {
            self.stats.leases_reused += 1;
        }
        c.served += 1;
        let full = c.leases >= c.cap;
        self.stats.leases_granted += 1;
        self.leases.insert(lease, id);
        if full {
            self.remove_free(id);
        }
        Lease { id: lease, connection: id }
    }

    /// Removes a connection that is gone (failed, lost or closed); counts
    /// it as a failed dial or an eviction by the state it was in.
    fn forget(&mut self, id: ConnectionId) -> Option<Conn> {
        self.remove_free(id);
        let c = self.conns.remove(&id)?;
        let k = &mut self.keys[c.key];
        k.connections -= 1;
        if c.state == ConnState::Dialing {
            k.dialing -= 1;
        }
        if let Some(deadline) = c.idle_deadline {
            self.idle_deadlines.remove(&(deadline, id));
            self.idle_count -= 1;
        }
        self.live -= 1;
        match c.state {
            ConnState::Dialing => self.stats.dials_failed += 1,
            ConnState::Ready => self.stats.evictions += 1,
        }
        Some(c)
    }

    // ---------------------------------------------------------- requests

    /// A lease for `key`: at once on a ready connection with room, or
    /// queued (dialling a new connection if the limits allow, possibly
    /// closing an idle connection of another key to make room).
    pub fn acquire(&mut self, now: Timestamp, key: &PoolKey) -> Acquire {
        let k = self.key_slot(key);
        // FIFO: never jump the queue of earlier waiters.
        if self.keys[k].waiters.is_empty()
            && let Some(&id) = self.keys[k].free.last()
        {
            return Acquire::Leased(self.grant(id));
        }
        let waiter = WaiterId(self.id());
        let deadline = now + self.config.acquire_timeout;
        self.waiters.insert(waiter, Waiter { key: k, deadline });
        self.waiter_deadlines.insert((deadline, waiter));
        self.keys[k].waiters.push_back(waiter);
        self.keys[k].live_waiters += 1;
        self.mark_blocked(k);
        self.make_room();
        Acquire::Queued { waiter, deadline }
    }

    /// Channels a new connection is expected to carry.
    fn per_connection(&self) -> usize {
        // A limit of 0 would make a connection useless: it means 1.
        self.config.max_channels_per_connection.max(1) as usize
    }

    /// Whether key `k` needs another connection (its waiters outnumber what
    /// its dials in flight will carry) and its own limit allows one.
    fn wants_dial(&self, k: usize) -> bool {
        let st = &self.keys[k];
        st.live_waiters > st.dialing * self.per_connection()
            && st.connections < self.config.max_connections_per_key
    }

    /// The waiter whose turn a new connection of key `k` is: the first one
    /// its dials in flight do not cover. `None` when `k` wants no dial.
    fn turn(&mut self, k: usize) -> Option<WaiterId> {
        if !self.wants_dial(k) {
            return None;
        }
        let covered = self.keys[k].dialing * self.per_connection();
        let waiters = &self.waiters;
        let queue = &mut self.keys[k].waiters;
        while queue.front().is_some_and(|w| !waiters.contains_key(w)) {
            queue.pop_front();
        }
        queue.iter().filter(|w| waiters.contains_key(w)).nth(covered).copied()
    }

    /// Puts key `k` in line for a connection if it wants one and is not in
    /// line yet (an entry it has is never later than its turn).
    fn mark_blocked(&mut self, k: usize) {
        if self.keys[k].blocked.is_none()
            && let Some(w) = self.turn(k)
        {
            self.keys[k].blocked = Some(w);
            self.blocked.insert((w, k));
        }
    }

    /// Takes key `k` out of line.
    fn unblock(&mut self, k: usize) {
        if let Some(w) = self.keys[k].blocked.take() {
            self.blocked.remove(&(w, k));
        }
    }

    /// Hands out room to the keys in line, oldest turn first, while the
    /// global limit allows a dial or an idle connection can be closed for it.
    fn make_room(&mut self) {
        while let Some(&(w, k)) = self.blocked.first() {
            if self.live >= self.config.max_connections && self.idle_count == 0 {
                return;
            }
            self.blocked.pop_first();
            self.keys[k].blocked = None;
            match self.turn(k) {
                None => continue,
                Some(turn) if turn != w => {
                    // Its turn moved on: back in line at the right place.
                    self.keys[k].blocked = Some(turn);
                    self.blocked.insert((turn, k));
                    continue;
                }
                Some(_) => {}
            }
            if self.live >= self.config.max_connections && !self.close_one_idle(k) {
                // Only `k`'s own connections are idle (cannot be while it
                // has waiters, but never spin on it).
                self.keys[k].blocked = Some(w);
                self.blocked.insert((w, k));
                return;
            }
            self.dial(k);
            self.mark_blocked(k);
        }
    }

    /// Starts a connection for key `k` (the caller checked the limits).
    fn dial(&mut self, k: usize) {
        let id = ConnectionId(self.id());
        let cap = self.per_connection() as u32;
        self.conns.insert(
            id,
            Conn {
                key: k,
                state: ConnState::Dialing,
                leases: 0,
                cap,
                lease_ids: Vec::new(),
                served: 0,
                free_slot: None,
                idle_deadline: None,
            },
        );
        let st = &mut self.keys[k];
        st.connections += 1;
        st.dialing += 1;
        self.live += 1;
        self.stats.dials += 1;
        let key = st.key.clone().expect("interned key");
        self.events.push_back(PoolEvent::Dial { connection: id, key });
    }

    /// Closes the idle connection of another key that has been idle longest,
    /// to free a slot. Returns whether one was found.
    fn close_one_idle(&mut self, for_key: usize) -> bool {
        if self.idle_count == 0 {
            return false;
        }
        let victim = self
            .idle_deadlines
            .iter()
            .find_map(|&(_, id)| (self.conns.get(&id)?.key != for_key).then_some(id));
        let Some(id) = victim else { return false };
        self.forget(id);
        self.events.push_back(PoolEvent::CloseIdle { connection: id });
        true
    }

    /// Gives a lease back.
    pub fn release(&mut self, now: Timestamp, lease: LeaseId) {
        let Some(id) = self.leases.remove(&lease) else { return };
        let Some(c) = self.conns.get_mut(&id) else { return };
        c.leases -= 1;
        if let Some(i) = c.lease_ids.iter().position(|l| *l == lease) {
            c.lease_ids.swap_remove(i);
        }
        let k = c.key;
        self.push_free(id);
        // The freed slot goes to the first waiter of this key, if any.
        self.serve_waiters(k);
        self.set_idle(id, now);
        // Idle now while another key waits for room: it goes to that key.
        self.make_room();
    }

    /// Serves the key's waiters, in order, from its free connections.
    fn serve_waiters(&mut self, k: usize) {
        while let Some(&id) = self.keys[k].free.last() {
            let Some(waiter) = self.keys[k].waiters.pop_front() else { break };
            let Some(w) = self.waiters.remove(&waiter) else { continue }; // timed out
            self.keys[k].live_waiters -= 1;
            self.waiter_deadlines.remove(&(w.deadline, waiter));
            let lease = self.grant(id);
            self.events.push_back(PoolEvent::LeaseGranted { waiter, lease });
        }
    }

    /// The server refused to open the channel of `lease` (OpenSSH's
    /// MaxSessions, dropbear's channel limit, a policy): the lease ends and
    /// its connection takes no more leases than it still holds, so later
    /// acquires go to another connection or a new dial. Returns that new
    /// capacity; 0 means the connection refused its only channel and was
    /// closed (`CloseIdle`), so retrying on a new one is unlikely to help.
    pub fn refused(&mut self, _now: Timestamp, lease: LeaseId) -> u32 {
        let Some(id) = self.leases.remove(&lease) else { return 0 };
        let Some(c) = self.conns.get_mut(&id) else { return 0 };
        c.leases -= 1;
        if let Some(i) = c.lease_ids.iter().position(|l| *l == lease) {
            c.lease_ids.swap_remove(i);
        }
        c.cap = c.cap.min(c.leases);
        let (cap, k) = (c.cap, c.key);
        self.remove_free(id);
        if cap == 0 {
            self.forget(id);
            self.events.push_back(PoolEvent::CloseIdle { connection: id });
        }
        // Waiters that counted on this connection may need another.
        self.mark_blocked(k);
        self.make_room();
        cap
    }

    /// Withdraws a queued request (its caller gave up). Returns whether it
    /// was still queued.
    pub fn cancel(&mut self, waiter: WaiterId) -> bool {
        let Some(w) = self.waiters.remove(&waiter) else { return false };
        self.waiter_deadlines.remove(&(w.deadline, waiter));
        let st = &mut self.keys[w.key];
        st.live_waiters -= 1;
        if st.waiters.front() == Some(&waiter) {
            st.waiters.pop_front();
        } else if st.waiters.len() > 2 * st.live_waiters + 16 {
            let waiters = &self.waiters;
            st.waiters.retain(|w| waiters.contains_key(w));
        }
        // Its key's place in line (if any) is corrected lazily: a waiter
        // leaving only moves the turn on.
        true
    }

    // ----------------------------------------------------------- reports

    /// The connection `id` is up.
    pub fn connected(&mut self, now: Timestamp, id: ConnectionId) {
        let Some(c) = self.conns.get_mut(&id) else { return };
        if c.state != ConnState::Dialing {
            return;
        }
        c.state = ConnState::Ready;
        let k = c.key;
        self.keys[k].dialing -= 1;
        self.push_free(id);
        self.serve_waiters(k);
        self.set_idle(id, now);
        // More waiters than this connection can take: dial again. Or none
        // left for it while another key waits for room: it goes to that key.
        self.mark_blocked(k);
        self.make_room();
    }

    /// Dialling `id` failed.
    pub fn failed(&mut self, _now: Timestamp, id: ConnectionId) {
        let Some(c) = self.forget(id) else { return };
        let k = c.key;
        // One dial fewer in flight: the key's turn moves back.
        self.unblock(k);
        if self.keys[k].connections == 0 {
            // Nothing can serve these waiters now: tell them.
            self.keys[k].live_waiters = 0;
            while let Some(waiter) = self.keys[k].waiters.pop_front() {
                if let Some(w) = self.waiters.remove(&waiter) {
                    self.waiter_deadlines.remove(&(w.deadline, waiter));
                    self.events.push_back(PoolEvent::WaiterFailed { waiter });
                }
            }
        } else {
            self.mark_blocked(k);
        }
        self.make_room();
    }

    /// The connection `id` was lost (or closed): its leases are broken.
    pub fn lost(&mut self, _now: Timestamp, id: ConnectionId) {
        let Some(c) = self.forget(id) else { return };
        if c.state == ConnState::Dialing {
            // Never came up: one dial fewer in flight.
            self.unblock(c.key);
        }
        for lease in c.lease_ids {
            self.leases.remove(&lease);
            self.events.push_back(PoolEvent::LeaseBroken { lease, connection: id });
        }
        self.mark_blocked(c.key);
        self.make_room();
    }

    /// Time passed: idle connections and waiters whose time is up.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        while let Some(&(deadline, waiter)) = self.waiter_deadlines.first() {
            if deadline > now {
                break;
            }
            self.waiter_deadlines.pop_first();
            if let Some(w) = self.waiters.remove(&waiter) {
                let st = &mut self.keys[w.key];
                st.live_waiters -= 1;
                // Timed-out waiters leave the queue lazily; compact it when
                // they dominate so a key that never gets capacity cannot
                // grow its queue without bound.
                if st.waiters.len() > 2 * st.live_waiters + 16 {
                    let waiters = &self.waiters;
                    st.waiters.retain(|w| waiters.contains_key(w));
                }
                self.events.push_back(PoolEvent::WaiterTimedOut { waiter });
            }
        }
        let mut closed = false;
        while let Some(&(deadline, id)) = self.idle_deadlines.first() {
            if deadline > now {
                break;
            }
            // `forget` removes the deadline entry too.
            self.forget(id);
            self.events.push_back(PoolEvent::CloseIdle { connection: id });
            closed = true;
        }
        if closed {
            self.make_room();
        }
    }

    /// The next event, if any.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<PoolEvent> {
        self.events.pop_front()
    }

    /// When `handle_timeout` should next be called.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        let w = self.waiter_deadlines.first().map(|&(t, _)| t);
        let i = self.idle_deadlines.first().map(|&(t, _)| t);
        [w, i].into_iter().flatten().min()
    }

    /// The connection a live lease is on.
    pub fn lease_connection(&self, lease: LeaseId) -> Option<ConnectionId> {
        self.leases.get(&lease).copied()
    }

    /// Leases live on a connection (for invariant checks).
    pub fn leases_on(&self, id: ConnectionId) -> Option<u32> {
        self.conns.get(&id).map(|c| c.leases)
    }

    /// Connections live (dialling or ready), in total.
    pub fn connections(&self) -> usize {
        self.live
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> PoolKey {
        PoolKey { host: format!("{name}.example"), port: 22, user: "u".into(), identity: "SHA256:k".into() }
    }

    fn events(pool: &mut Pool) -> Vec<PoolEvent> {
        std::iter::from_fn(|| pool.poll_event()).collect()
    }

    /// One connection in all, one channel on it.
    fn one_connection() -> Pool {
        Pool::new(PoolConfig { max_connections: 1, max_channels_per_connection: 1, ..PoolConfig::default() })
    }

    /// Key `name` gets the pool's connection and holds one lease on it.
    fn hold(pool: &mut Pool, name: &str) -> (ConnectionId, Lease) {
        let t0 = Timestamp::ZERO;
        let Acquire::Queued { waiter, .. } = pool.acquire(t0, &key(name)) else { panic!("no dial") };
        let [PoolEvent::Dial { connection, .. }] = events(pool)[..] else { panic!("no dial") };
        pool.connected(t0, connection);
        let [PoolEvent::LeaseGranted { waiter: w, ref lease }] = events(pool)[..] else {
            panic!("not granted")
        };
        assert_eq!(w, waiter);
        (connection, lease.clone())
    }

    /// The review's repro: at the global limit, a waiter of key A behind
    /// key B's only connection. B releases: its now idle connection is
    /// closed for A at once, and A dials (before the fix nobody dialled for
    /// A and it timed out with no connection live).
    #[test]
    fn a_waiter_blocked_by_the_global_limit_gets_the_slot_of_an_idle_connection() {
        let mut pool = one_connection();
        let (b_conn, b_lease) = hold(&mut pool, "b");
        let t1 = Timestamp::from_secs(1);
        let Acquire::Queued { waiter, .. } = pool.acquire(t1, &key("a")) else { panic!() };
        assert_eq!(events(&mut pool), [], "no room: nothing to do yet");
        pool.release(Timestamp::from_secs(2), b_lease.id);
        let ev = events(&mut pool);
        let [PoolEvent::CloseIdle { connection: closed }, PoolEvent::Dial { connection: a_conn, key: ref k }] =
            ev[..]
        else {
            panic!("{ev:?}")
        };
        assert_eq!((closed, k), (b_conn, &key("a")));
        pool.connected(Timestamp::from_secs(3), a_conn);
        let ev = events(&mut pool);
        assert!(matches!(ev[..], [PoolEvent::LeaseGranted { waiter: w, .. }] if w == waiter), "{ev:?}");
        let s = pool.stats();
        assert_eq!((s.dials, s.evictions, s.dials_failed, s.ready, s.waiters), (2, 1, 0, 1, 0));
    }

    /// The same repro with B's connection lost while leased, and with B's
    /// dial failing: the freed slot goes to A.
    #[test]
    fn a_slot_freed_by_a_loss_or_a_failed_dial_goes_to_the_blocked_key() {
        let mut pool = one_connection();
        let (b_conn, b_lease) = hold(&mut pool, "b");
        let Acquire::Queued { .. } = pool.acquire(Timestamp::from_secs(1), &key("a")) else { panic!() };
        pool.lost(Timestamp::from_secs(2), b_conn);
        let ev = events(&mut pool);
        assert!(
            matches!(&ev[..], [PoolEvent::LeaseBroken { lease, .. }, PoolEvent::Dial { key: k, .. }] if *lease == b_lease.id && *k == key("a")),
            "{ev:?}"
        );
        assert_eq!(pool.stats().evictions, 1);

        let mut pool = one_connection();
        let Acquire::Queued { .. } = pool.acquire(Timestamp::ZERO, &key("b")) else { panic!() };
        let [PoolEvent::Dial { connection: b_conn, .. }] = events(&mut pool)[..] else { panic!() };
        let Acquire::Queued { waiter: a, .. } = pool.acquire(Timestamp::ZERO, &key("a")) else { panic!() };
        assert_eq!(events(&mut pool), []);
        pool.failed(Timestamp::from_secs(1), b_conn);
        let ev = events(&mut pool);
        assert!(
            matches!(&ev[..], [PoolEvent::WaiterFailed { .. }, PoolEvent::Dial { key: k, .. }] if *k == key("a")),
            "{ev:?}"
        );
        let s = pool.stats();
        assert_eq!((s.dials, s.dials_failed, s.evictions, s.dialing), (2, 1, 0, 1));
        assert!(pool.cancel(a));
    }

    /// Room goes to the oldest waiter across keys, even when the connection
    /// that freed it belongs to a key with a younger waiter of its own.
    #[test]
    fn room_goes_to_the_oldest_blocked_waiter_across_keys() {
        let mut pool = one_connection();
        let (x_conn, _) = hold(&mut pool, "x");
        let t = Timestamp::from_secs(1);
        let Acquire::Queued { waiter: a, .. } = pool.acquire(t, &key("a")) else { panic!() };
        let Acquire::Queued { waiter: b, .. } = pool.acquire(t, &key("b")) else { panic!() };
        let Acquire::Queued { waiter: x2, .. } = pool.acquire(t, &key("x")) else { panic!() };
        assert_eq!(events(&mut pool), []);
        // x's connection goes: a waited longest.
        pool.lost(t, x_conn);
        let ev = events(&mut pool);
        let [PoolEvent::LeaseBroken { .. }, PoolEvent::Dial { connection: a_conn, key: ref k }] = ev[..]
        else {
            panic!("{ev:?}")
        };
        assert_eq!(k, &key("a"));
        pool.connected(t, a_conn);
        let ev = events(&mut pool);
        let [PoolEvent::LeaseGranted { waiter, ref lease }] = ev[..] else { panic!("{ev:?}") };
        assert_eq!(waiter, a);
        // a is done: its idle connection makes room for b, then x.
        pool.release(t, lease.id);
        let ev = events(&mut pool);
        let [PoolEvent::CloseIdle { .. }, PoolEvent::Dial { connection: b_conn, key: ref k }] = ev[..] else {
            panic!("{ev:?}")
        };
        assert_eq!(k, &key("b"));
        pool.failed(t, b_conn);
        let ev = events(&mut pool);
        assert!(
            matches!(&ev[..], [PoolEvent::WaiterFailed { waiter }, PoolEvent::Dial { key: k, .. }] if *waiter == b && *k == key("x")),
            "{ev:?}"
        );
        assert!(pool.cancel(x2));
    }

    /// A key whose dial in flight covers its first waiters is in line for
    /// its next waiter's turn, not its first one's.
    #[test]
    fn a_key_queues_for_room_by_its_first_uncovered_waiter() {
        let mut pool = Pool::new(PoolConfig {
            max_connections: 2,
            max_channels_per_connection: 1,
            ..PoolConfig::default()
        });
        let t = Timestamp::ZERO;
        let _ = pool.acquire(t, &key("a"));
        let _ = pool.acquire(t, &key("x"));
        let ev = events(&mut pool);
        let [PoolEvent::Dial { connection: a_conn, .. }, PoolEvent::Dial { connection: x_conn, .. }] = ev[..]
        else {
            panic!("{ev:?}")
        };
        // a's second waiter is uncovered; then b queues; then a's dial fails.
        let _ = pool.acquire(t, &key("a"));
        let _ = pool.acquire(t, &key("b"));
        assert_eq!(events(&mut pool), []);
        pool.connected(t, x_conn);
        let [PoolEvent::LeaseGranted { ref lease, .. }] = events(&mut pool)[..] else { panic!() };
        pool.release(t, lease.id);
        // x's idle connection goes to a's second waiter (older than b's).
        let ev = events(&mut pool);
        assert!(
            matches!(&ev[..], [PoolEvent::CloseIdle { .. }, PoolEvent::Dial { key: k, .. }] if *k == key("a")),
            "{ev:?}"
        );
        pool.connected(t, a_conn);
        assert!(matches!(events(&mut pool)[..], [PoolEvent::LeaseGranted { .. }]));
        assert_eq!(pool.stats().waiters, 2);
    }
}
