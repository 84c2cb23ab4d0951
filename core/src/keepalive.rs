//! Keepalive: NAT keepalive (SSH_MSG_IGNORE with random padding, jittered)
//! and liveness probes with OpenSSH's ServerAliveInterval/CountMax semantics.
//!
//! IGNORE keeps middleboxes from forgetting an idle connection but gets no
//! answer, so it cannot tell that the peer is gone. Probes can: after
//! `probe_interval` with nothing received we send a want-reply probe; any
//! packet received resets the count; after `probe_count_max` unanswered
//! probes the connection closes with `KeepaliveTimeout`.

use crate::rng::Rng;
use crate::time::{Duration, Timestamp};

/// Keepalive settings (both roles). Everything is off by default, as in OpenSSH.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeepaliveConfig {
    /// Send SSH_MSG_IGNORE when nothing has been sent for this long.
    pub ignore_interval: Option<Duration>,
    /// Random jitter on `ignore_interval`, in thousandths (100: ±10%), so
    /// idle connections do not all wake together and the timing leaks less.
    pub ignore_jitter_permille: u32,
    /// Shortest and longest random IGNORE payload, in bytes (either order;
    /// longer than `MAX_IGNORE_LEN` is cut to it, so that a misconfigured
    /// range cannot make every keepalive a bulk transfer).
    pub ignore_len: (u32, u32),
    /// Probe after this long without receiving anything
    /// (ServerAliveInterval / ClientAliveInterval).
    pub probe_interval: Option<Duration>,
    /// Unanswered probes tolerated; one more interval of silence closes the
    /// connection (ServerAliveCountMax, default 3). 0 never closes: probes
    /// then only measure round trips (sshd's ClientAliveCountMax 0).
    pub probe_count_max: u32,
}

/// The longest IGNORE payload a keepalive sends, whatever `ignore_len` says.
pub const MAX_IGNORE_LEN: u64 = 4096;

impl Default for KeepaliveConfig {
    fn default() -> Self {
        KeepaliveConfig {
            ignore_interval: None,
            ignore_jitter_permille: 100,
            ignore_len: (16, 128),
            probe_interval: None,
            probe_count_max: 3,
        }
    }
}

/// Round-trip times measured by answered probes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rtt {
    /// The last sample.
    pub last: Option<Duration>,
    /// Smoothed (RFC 6298 style: 7/8 old + 1/8 new).
    pub smoothed: Option<Duration>,
    /// The smallest sample.
    pub min: Option<Duration>,
}

/// [`Rtt`] in nanoseconds, `u64::MAX` for none: 24 bytes instead of 48,
/// so that the keepalive machine fits two cache lines.
#[derive(Clone, Copy, Debug)]
struct RttNanos {
    last: u64,
    smoothed: u64,
    min: u64,
}

impl RttNanos {
    const NONE: u64 = u64::MAX;

    fn new() -> Self {
        RttNanos { last: Self::NONE, smoothed: Self::NONE, min: Self::NONE }
    }

    /// The same arithmetic as on `Duration`s, in whole nanoseconds.
    fn sample(&mut self, d: Duration) {
        let d = u64::try_from(d.as_nanos()).unwrap_or(Self::NONE - 1).min(Self::NONE - 1);
        self.last = d;
        self.min = self.min.min(d);
        self.smoothed = if self.smoothed == Self::NONE {
            d
        } else {
            ((u128::from(self.smoothed) * 7 + u128::from(d)) / 8) as u64
        };
    }

    fn get(&self) -> Rtt {
        let d = |n: u64| (n != Self::NONE).then(|| Duration::from_nanos(n));
        Rtt { last: d(self.last), smoothed: d(self.smoothed), min: d(self.min) }
    }
}

/// What the keepalive timer wants done.
#[derive(Debug, Copy, Clone, PartialEq, Eq)]
pub(crate) enum KeepaliveAction {
    /// Send SSH_MSG_IGNORE with this many random bytes.
    Ignore(usize),
    /// Send a probe tagged `seq`.
    Probe(u64),
    /// Too many probes went unanswered.
    Timeout { unanswered: u32 },
}

/// The (at most two) actions of one timeout, without a heap allocation:
/// this runs once a second on every connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeepaliveActions {
    items: [KeepaliveAction; 2],
    len: usize,
}

impl KeepaliveActions {
    fn new() -> Self {
        KeepaliveActions { items: [KeepaliveAction::Probe(0); 2], len: 0 }
    }

    fn push(&mut self, action: KeepaliveAction) {
        self.items[self.len] = action;
        self.len += 1;
    }
}

impl core::ops::Deref for KeepaliveActions {
    type Target = [KeepaliveAction];
    fn deref(&self) -> &[KeepaliveAction] {
        &self.items[..self.len]
    }
}

impl PartialEq<Vec<KeepaliveAction>> for KeepaliveActions {
    fn eq(&self, other: &Vec<KeepaliveAction>) -> bool {
        **self == other[..]
    }
}

/// Probes in flight whose send times are kept: a peer that answers
/// nothing must not grow anything. A reply to an older probe gives no
/// RTT sample (nor would it be counted).
const MAX_OUTSTANDING: u32 = 64;

/// No deadline: later than every real one.
const NEVER: Timestamp = Timestamp::MAX;

fn deadline(t: Timestamp) -> Option<Timestamp> {
    (t != NEVER).then_some(t)
}

fn due(t: Timestamp, now: Timestamp) -> bool {
    t != NEVER && t <= now
}

/// An interval in whole microseconds (saturating), as `Timestamp + Duration` counts it.
fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// `now + micros`, saturating, as `Timestamp + Duration`.
fn after(now: Timestamp, micros: u64) -> Timestamp {
    Timestamp::from_micros(now.as_micros().saturating_add(micros))
}

/// The keepalive machine of one connection, in two cache lines (`repr(C)`;
/// the first is what every timer and received packet touches): this runs
/// once an interval on every idle connection, and each line it touches is
/// a likely cache miss.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct Keepalive {
    /// `NEVER` when off.
    probe_deadline: Timestamp,
    ignore_deadline: Timestamp,
    /// When the last packet other than an IGNORE went out.
    last_sent: Timestamp,
    /// Probes are numbered from 1: this is the last one sent, and how many.
    last_seq: u64,
    /// When probe `last_seq` left.
    last_probe_sent: Timestamp,
    pub(crate) probes_answered: u64,
    unanswered: u32,
    /// Probes `last_seq - outstanding + 1 ..= last_seq` are in flight.
    outstanding: u32,
    /// Whether IGNOREs and probes may be sent yet (after the first kex;
    /// probes also wait for a way to be answered).
    ignore_enabled: bool,
    probe_enabled: bool,
    /// Something was sent since the IGNORE timer was armed. Commands carry
    /// no timestamp, so rather than re-arming from a stale clock the timer
    /// checks this when it fires: an IGNORE only follows a whole idle interval.
    sent_since_armed: bool,
    /// A command sent something since the last timed call.
    sent_undated: bool,
    /// Whether `probe_interval` and `ignore_interval` are configured.
    probe_on: bool,
    ignore_on: bool,
    /// `KeepaliveConfig`'s intervals in microseconds, as `Timestamp +
    /// Duration` counts them, and its other settings.
    probe_interval: u64,
    ignore_interval: u64,
    ignore_len: (u32, u32),
    ignore_jitter_permille: u32,
    probe_count_max: u32,
    rtt: RttNanos,
    /// Send times of the in-flight probes before `last_seq`, at
    /// `seq % MAX_OUTSTANDING`. Allocated when a probe leaves before the
    /// previous one was answered: over a healthy link it never is.
    earlier: Option<Box<[Timestamp; MAX_OUTSTANDING as usize]>>,
}

impl Keepalive {
    pub(crate) fn new(config: KeepaliveConfig) -> Self {
        Keepalive {
            probe_deadline: NEVER,
            ignore_deadline: NEVER,
            last_sent: Timestamp::ZERO,
            last_seq: 0,
            last_probe_sent: Timestamp::ZERO,
            probes_answered: 0,
            unanswered: 0,
            outstanding: 0,
            ignore_enabled: false,
            probe_enabled: false,
            sent_since_armed: false,
            sent_undated: false,
            probe_on: config.probe_interval.is_some(),
            ignore_on: config.ignore_interval.is_some(),
            probe_interval: config.probe_interval.map_or(0, micros),
            ignore_interval: config.ignore_interval.map_or(0, micros),
            ignore_len: config.ignore_len,
            ignore_jitter_permille: config.ignore_jitter_permille,
            probe_count_max: config.probe_count_max,
            rtt: RttNanos::new(),
            earlier: None,
        }
    }

    /// Keepalive probes sent.
    pub(crate) fn probes_sent(&self) -> u64 {
        self.last_seq
    }

    /// Round trips measured so far.
    pub(crate) fn rtt(&self) -> Rtt {
        self.rtt.get()
    }

    /// Never before the first NEWKEYS: strict kex forbids IGNORE before it.
    pub(crate) fn enable_ignore(&mut self, now: Timestamp, rng: &mut Rng) {
        if !self.ignore_enabled {
            self.ignore_enabled = true;
            self.arm_ignore(now, rng);
        }
    }

    /// Whether IGNOREs and probes are both enabled: nothing left to enable.
    pub(crate) fn fully_enabled(&self) -> bool {
        self.ignore_enabled && self.probe_enabled
    }

    /// Probes need an answerable request: after authentication (global
    /// request) or, with `ping@openssh.com`, after the first kex.
    pub(crate) fn enable_probes(&mut self, now: Timestamp) {
        if !self.probe_enabled {
            self.probe_enabled = true;
            self.on_received(now);
        }
    }

    /// Something was sent: no IGNORE is due before a whole idle interval
    /// has passed since then. `None`: by a command, at a time known only
    /// at the next `observe_time`.
    pub(crate) fn on_sent(&mut self, at: Option<Timestamp>) {
        self.sent_since_armed = true;
        match at {
            Some(t) => self.last_sent = t,
            None => self.sent_undated = true,
        }
    }

    /// The clock at a timed entry point: dates sends made by commands.
    pub(crate) fn observe_time(&mut self, now: Timestamp) {
        if std::mem::take(&mut self.sent_undated) {
            self.last_sent = now;
        }
    }

    /// Arms the IGNORE timer one jittered interval from `now`.
    fn arm_ignore(&mut self, now: Timestamp, rng: &mut Rng) {
        self.sent_since_armed = false;
        if !(self.ignore_on && self.ignore_enabled) {
            return;
        }
        let micros = self.ignore_interval;
        let spread = micros / 1000 * u64::from(self.ignore_jitter_permille.min(1000));
        let delay = micros.saturating_sub(spread) + rng.below(2 * spread + 1);
        self.ignore_deadline = now + Duration::from_micros(delay.max(1));
    }

    /// Something was received: the peer is alive.
    pub(crate) fn on_received(&mut self, now: Timestamp) {
        self.unanswered = 0;
        if self.probe_on && self.probe_enabled {
            self.probe_deadline = after(now, self.probe_interval);
        }
    }

    /// The reply to probe `seq` arrived: an RTT sample. Replies come in
    /// order, so the probes before `seq` are no longer in flight either.
    pub(crate) fn on_probe_reply(&mut self, seq: u64, now: Timestamp) {
        let oldest = self.last_seq + 1 - u64::from(self.outstanding);
        if seq < oldest {
            return;
        }
        if seq <= self.last_seq {
            // `earlier` exists once two probes were in flight together.
            let sent = match &self.earlier {
                Some(earlier) if seq != self.last_seq => earlier[(seq % u64::from(MAX_OUTSTANDING)) as usize],
                _ => self.last_probe_sent,
            };
            self.probes_answered += 1;
            self.rtt.sample(now - sent);
        }
        // In flight now: those after `seq` (none if it was never sent).
        self.outstanding = self.last_seq.saturating_sub(seq) as u32;
    }

    pub(crate) fn poll_timeout(&self) -> Option<Timestamp> {
        deadline(self.ignore_deadline.min(self.probe_deadline))
    }

    /// Fires due timers. `can_send` is false while a key exchange holds
    /// output: an IGNORE then would only queue behind it.
    pub(crate) fn on_timeout(&mut self, now: Timestamp, can_send: bool, rng: &mut Rng) -> KeepaliveActions {
        let mut actions = KeepaliveActions::new();
        if self.probe_on && due(self.probe_deadline, now) {
            self.unanswered = self.unanswered.saturating_add(1);
            if self.probe_count_max > 0 && self.unanswered > self.probe_count_max {
                self.probe_deadline = NEVER;
                self.ignore_deadline = NEVER;
                actions.push(KeepaliveAction::Timeout { unanswered: self.unanswered - 1 });
                return actions;
            }
            if self.outstanding > 0 {
                // The previous probe is still in flight: keep its send time.
                let earlier =
                    self.earlier.get_or_insert_with(|| Box::new([Timestamp::ZERO; MAX_OUTSTANDING as usize]));
                earlier[(self.last_seq % u64::from(MAX_OUTSTANDING)) as usize] = self.last_probe_sent;
            }
            self.last_seq += 1;
            self.last_probe_sent = now;
            self.outstanding = (self.outstanding + 1).min(MAX_OUTSTANDING);
            self.probe_deadline = after(now, self.probe_interval);
            actions.push(KeepaliveAction::Probe(self.last_seq));
        }
        if due(self.ignore_deadline, now) {
            if can_send && !self.sent_since_armed {
                let (lo, hi) = self.ignore_len;
                let len = rng.range_inclusive(
                    u64::from(lo.min(hi)).min(MAX_IGNORE_LEN),
                    u64::from(hi.max(lo)).min(MAX_IGNORE_LEN),
                ) as usize;
                actions.push(KeepaliveAction::Ignore(len));
            }
            // Busy: the next IGNORE is due one interval after the last send
            // (never in the past); in a key exchange, one interval from now.
            let base = if can_send && self.sent_since_armed { self.last_sent } else { now };
            self.arm_ignore(base, rng);
            if due(self.ignore_deadline, now) {
                self.arm_ignore(now, rng);
            }
        }
        actions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(probe: u64, count: u32) -> KeepaliveConfig {
        KeepaliveConfig {
            probe_interval: Some(Duration::from_secs(probe)),
            probe_count_max: count,
            ..Default::default()
        }
    }

    #[test]
    fn ignore_lengths_stay_in_the_configured_range() {
        for (range, lo, hi) in
            [((16, 128), 16, 128), ((200, 40), 40, 200), ((7, 7), 7, 7), ((0, 9000), 0, 4096)]
        {
            let mut rng = Rng::from_u64(5);
            let mut k = Keepalive::new(KeepaliveConfig {
                ignore_interval: Some(Duration::from_secs(1)),
                ignore_len: range,
                ..Default::default()
            });
            k.enable_ignore(Timestamp::ZERO, &mut rng);
            let mut seen = std::collections::BTreeSet::new();
            for _ in 0..400 {
                let t = k.poll_timeout().unwrap();
                for &a in k.on_timeout(t, true, &mut rng).iter() {
                    if let KeepaliveAction::Ignore(len) = a {
                        assert!((lo..=hi).contains(&len), "{range:?}: length {len}");
                        seen.insert(len);
                    }
                }
            }
            assert!(seen.len() > (hi - lo).min(50) / 2, "{range:?}: lengths vary: {seen:?}");
        }
    }

    #[test]
    fn probes_follow_openssh_server_alive_semantics() {
        let mut rng = Rng::from_u64(1);
        let mut k = Keepalive::new(cfg(10, 3));
        k.enable_probes(Timestamp::ZERO);
        for n in 1..=3 {
            let t = k.poll_timeout().unwrap();
            assert_eq!(t, Timestamp::from_secs(10 * n));
            assert!(matches!(k.on_timeout(t, true, &mut rng)[..], [KeepaliveAction::Probe(s)] if s == n));
        }
        let t = k.poll_timeout().unwrap();
        assert_eq!(t, Timestamp::from_secs(40), "closes at interval × (count_max + 1)");
        assert_eq!(k.on_timeout(t, true, &mut rng), vec![KeepaliveAction::Timeout { unanswered: 3 }]);
    }

    #[test]
    fn any_packet_resets_the_count_and_replies_give_rtt() {
        let mut rng = Rng::from_u64(1);
        let mut k = Keepalive::new(cfg(10, 1));
        k.enable_probes(Timestamp::ZERO);
        let t = Timestamp::from_secs(10);
        assert_eq!(k.on_timeout(t, true, &mut rng), vec![KeepaliveAction::Probe(1)]);
        k.on_received(Timestamp::from_millis(10_250));
        k.on_probe_reply(1, Timestamp::from_millis(10_250));
        assert_eq!(k.rtt().last, Some(Duration::from_millis(250)));
        assert_eq!(k.probes_answered, 1);
        assert_eq!(k.poll_timeout(), Some(Timestamp::from_millis(20_250)));
    }

    #[test]
    fn late_replies_give_the_rtt_of_their_own_probe() {
        let mut rng = Rng::from_u64(1);
        // count_max 0: never closes, probes only measure round trips.
        let mut k = Keepalive::new(cfg(1, 0));
        k.enable_probes(Timestamp::ZERO);
        for n in 1..=3 {
            assert_eq!(
                k.on_timeout(Timestamp::from_secs(n), true, &mut rng),
                vec![KeepaliveAction::Probe(n)]
            );
        }
        // Probe 2 answered 1.5 s after it left; probe 1 is no longer in flight.
        k.on_probe_reply(2, Timestamp::from_millis(3_500));
        assert_eq!((k.probes_answered, k.rtt().last), (1, Some(Duration::from_millis(1_500))));
        k.on_probe_reply(1, Timestamp::from_millis(3_600));
        assert_eq!(k.probes_answered, 1, "a reply older than the last answered one counts for nothing");
        k.on_probe_reply(3, Timestamp::from_secs(4));
        assert_eq!((k.probes_answered, k.rtt().last), (2, Some(Duration::from_secs(1))));
        assert_eq!(k.rtt().min, Some(Duration::from_secs(1)));
        // 70 unanswered probes: only the last 64 are remembered.
        for n in 4..=73 {
            assert_eq!(
                k.on_timeout(Timestamp::from_secs(n), true, &mut rng),
                vec![KeepaliveAction::Probe(n)]
            );
        }
        k.on_probe_reply(9, Timestamp::from_secs(80));
        assert_eq!(k.probes_answered, 2, "probe 9 was forgotten");
        k.on_probe_reply(10, Timestamp::from_secs(80));
        assert_eq!((k.probes_answered, k.rtt().last), (3, Some(Duration::from_secs(70))));
        // A reply naming a probe never sent ends every one in flight.
        k.on_probe_reply(u64::MAX, Timestamp::from_secs(81));
        k.on_probe_reply(73, Timestamp::from_secs(81));
        assert_eq!(k.probes_answered, 3);
        assert_eq!(k.probes_sent(), 73);
    }

    #[test]
    fn ignore_interval_is_jittered_within_bounds() {
        let mut rng = Rng::from_u64(2);
        let mut k = Keepalive::new(KeepaliveConfig {
            ignore_interval: Some(Duration::from_secs(100)),
            ..Default::default()
        });
        k.enable_ignore(Timestamp::ZERO, &mut rng);
        let mut seen = std::collections::BTreeSet::new();
        // The next IGNORE is due one jittered interval after the later of
        // the last deadline and the last other send.
        let mut base = Timestamp::ZERO;
        for i in 0..200 {
            let d = k.poll_timeout().unwrap();
            let gap = d - base;
            assert!(gap >= Duration::from_secs(90) && gap <= Duration::from_secs(110), "{gap:?}");
            seen.insert(gap);
            // Every other interval something else was sent 30 s in: no
            // IGNORE then, and the next is due an interval after that send.
            let sent = base + Duration::from_secs(30);
            if i % 2 == 0 {
                k.on_sent(Some(sent));
            }
            let actions = k.on_timeout(d, true, &mut rng);
            assert_eq!(actions.len(), usize::from(i % 2 == 1), "{actions:?}");
            base = if i % 2 == 0 { sent } else { d };
        }
        assert!(seen.len() > 150, "jitter varies");
    }
}
