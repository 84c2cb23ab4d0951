//! [`Pool`]: bookkeeping for multiplexing leases (channels) over a bounded
//! set of connections, as a pure machine. It never owns a connection: the
//! adapter dials when told, reports what happened, and opens a channel on
//! the connection named by each lease (OpenSSH's ControlMaster idea inside
//! one process).
//!
//! Connections are keyed by (host, port, user, identity), so no connection
//! ever serves another user or credential. Every operation is O(1) or
//! O(log n) in the number of connections, leases and waiters.

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
    /// Connections removed (lost, failed, or closed when idle).
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

    /// Removes a connection that is gone (failed, lost or closed).
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
        self.stats.evictions += 1;
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
        self.maybe_dial(k);
        Acquire::Queued { waiter, deadline }
    }

    /// Dials for key `k` if its waiters need more capacity than is coming.
    fn maybe_dial(&mut self, k: usize) {
        let per_conn = self.config.max_channels_per_connection.max(1) as usize;
        let state = &self.keys[k];
        // Capacity already on its way: connections being dialled.
        if state.live_waiters <= state.dialing * per_conn {
            return;
        }
        if state.connections >= self.config.max_connections_per_key {
            return;
        }
        if self.live >= self.config.max_connections && !self.close_one_idle(k) {
            return;
        }
        let id = ConnectionId(self.id());
        self.conns.insert(
            id,
            Conn {
                key: k,
                state: ConnState::Dialing,
                leases: 0,
                // A limit of 0 would make a connection useless: it means 1.
                cap: self.config.max_channels_per_connection.max(1),
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
        self.maybe_dial(k);
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
        // More waiters than this connection can take: dial again.
        self.maybe_dial(k);
    }

    /// Dialling `id` failed.
    pub fn failed(&mut self, _now: Timestamp, id: ConnectionId) {
        let Some(c) = self.forget(id) else { return };
        let k = c.key;
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
            self.maybe_dial(k);
        }
    }

    /// The connection `id` was lost (or closed): its leases are broken.
    pub fn lost(&mut self, _now: Timestamp, id: ConnectionId) {
        let Some(c) = self.forget(id) else { return };
        for lease in c.lease_ids {
            self.leases.remove(&lease);
            self.events.push_back(PoolEvent::LeaseBroken { lease, connection: id });
        }
        self.maybe_dial(c.key);
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
        while let Some(&(deadline, id)) = self.idle_deadlines.first() {
            if deadline > now {
                break;
            }
            // `forget` removes the deadline entry too.
            self.forget(id);
            self.events.push_back(PoolEvent::CloseIdle { connection: id });
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
