//! [`Reconnect`]: when to dial again after a connection is lost, as a pure
//! machine (time and seed in, actions and a deadline out).
//!
//! Attempt `n` (1-based, counting consecutive failures) waits
//! `min(max_delay, initial_delay × multiplier^(n-1))` before jitter; with
//! full jitter the wait is uniform in `[0, that]`, with equal jitter in
//! `[that/2, that]`. A connection that stayed up for `stable_period` resets
//! the count. Close reasons that a retry cannot fix give up at once.

use std::collections::VecDeque;

use crate::error::CloseReason;
use crate::rng::{Rng, Seed};
use crate::time::{Duration, Timestamp};

/// How much randomness spreads the retries of many clients.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Jitter {
    /// Exactly the backoff curve.
    None,
    /// Uniform in `[0, delay]` (AWS's "full jitter": the best spread).
    Full,
    /// Uniform in `[delay/2, delay]`.
    Equal,
}

/// Backoff settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReconnectConfig {
    /// Delay before the first retry (before jitter).
    pub initial_delay: Duration,
    /// Each further retry waits this many times longer.
    pub multiplier: u32,
    /// Longest delay (before jitter).
    pub max_delay: Duration,
    /// Consecutive failed attempts before giving up (`None`: never).
    pub max_retries: Option<u32>,
    /// Randomness on each delay.
    pub jitter: Jitter,
    /// A connection up this long resets the attempt count.
    pub stable_period: Duration,
}

impl Default for ReconnectConfig {
    fn default() -> Self {
        ReconnectConfig {
            initial_delay: Duration::from_secs(1),
            multiplier: 2,
            max_delay: Duration::from_secs(30),
            max_retries: Some(3),
            jitter: Jitter::Full,
            stable_period: Duration::from_secs(30),
        }
    }
}

/// Why the machine gave up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GiveUpReason {
    /// The connection ended for a reason a retry cannot fix.
    NotRetryable(CloseReason),
    /// Dialling failed in a way a retry cannot fix (e.g. an unknown host).
    DialFailed(String),
    /// `max_retries` consecutive attempts failed; the last failure.
    RetriesExhausted(String),
    /// The application stopped it.
    Stopped,
}

impl core::fmt::Display for GiveUpReason {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            GiveUpReason::NotRetryable(r) => write!(f, "not retrying: {r}"),
            GiveUpReason::DialFailed(e) => write!(f, "not retrying: {e}"),
            GiveUpReason::RetriesExhausted(last) => write!(f, "retries exhausted (last: {last})"),
            GiveUpReason::Stopped => f.write_str("stopped"),
        }
    }
}

/// What the adapter should do.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub enum ReconnectAction {
    /// Dial now; this is consecutive attempt number `attempt` (1-based).
    Dial {
        /// Consecutive attempt number.
        attempt: u32,
    },
    /// Waiting `delay` before attempt `attempt` (for reporting "retrying in").
    Scheduled {
        /// The attempt that will follow.
        attempt: u32,
        /// How long until it.
        delay: Duration,
    },
    /// Stop trying.
    GiveUp {
        /// Why.
        reason: GiveUpReason,
        /// Consecutive attempts made.
        attempts: u32,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    /// Dialling (the adapter reports `connected` or `dial_failed`).
    Dialing,
    Connected {
        since: Timestamp,
    },
    Waiting {
        until: Timestamp,
    },
    Done,
}

/// The reconnect scheduler of one logical connection.
#[derive(Debug)]
pub struct Reconnect {
    config: ReconnectConfig,
    rng: Rng,
    state: State,
    /// Consecutive failures since the last stable connection.
    failures: u32,
    actions: VecDeque<ReconnectAction>,
}

impl Reconnect {
    /// A scheduler whose first dial is already under way (the adapter
    /// dials at once; call `connected` or `dial_failed`).
    pub fn new(config: ReconnectConfig, seed: Seed) -> Self {
        Reconnect {
            config,
            rng: Rng::from_seed(seed),
            state: State::Dialing,
            failures: 0,
            actions: VecDeque::new(),
        }
    }

    /// Consecutive failed attempts so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Whether it gave up (or was stopped).
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The delay before attempt `n` (1-based), before jitter.
    pub fn base_delay(&self, n: u32) -> Duration {
        let mut d = self.config.initial_delay;
        for _ in 1..n {
            d = d.saturating_mul(self.config.multiplier.max(1));
            if d >= self.config.max_delay {
                return self.config.max_delay;
            }
        }
        d.min(self.config.max_delay)
    }

    fn jittered(&mut self, d: Duration) -> Duration {
        let micros = d.as_micros().min(u128::from(u64::MAX)) as u64;
        let picked = match self.config.jitter {
            Jitter::None => micros,
            Jitter::Full => self.rng.range_inclusive(0, micros),
            Jitter::Equal => self.rng.range_inclusive(micros / 2, micros),
        };
        Duration::from_micros(picked)
    }

    /// The connection is up.
    pub fn connected(&mut self, now: Timestamp) {
        if self.state != State::Done {
            self.state = State::Connected { since: now };
        }
    }

    /// The connection ended for `reason`.
    pub fn lost(&mut self, now: Timestamp, reason: &CloseReason) {
        if self.state == State::Done {
            return;
        }
        if let State::Connected { since } = self.state
            && now.saturating_duration_since(since) >= self.config.stable_period
        {
            self.failures = 0;
        }
        if !reason.is_retryable() {
            self.give_up(GiveUpReason::NotRetryable(reason.clone()));
            return;
        }
        self.failed(now, reason.to_string());
    }

    /// Dialling (TCP, kex or authentication) failed. `retryable` is false
    /// for failures that will repeat (unknown host, refused credentials).
    pub fn dial_failed(&mut self, now: Timestamp, retryable: bool, error: &str) {
        if self.state == State::Done {
            return;
        }
        if !retryable {
            self.give_up(GiveUpReason::DialFailed(error.to_owned()));
            return;
        }
        self.failed(now, error.to_owned());
    }

    fn failed(&mut self, now: Timestamp, what: String) {
        self.failures = self.failures.saturating_add(1);
        if self.config.max_retries.is_some_and(|max| self.failures > max) {
            self.give_up(GiveUpReason::RetriesExhausted(what));
            return;
        }
        let base = self.base_delay(self.failures);
        let delay = self.jittered(base);
        self.state = State::Waiting { until: now + delay };
        self.actions.push_back(ReconnectAction::Scheduled { attempt: self.failures, delay });
        if delay.is_zero() {
            self.handle_timeout(now);
        }
    }

    fn give_up(&mut self, reason: GiveUpReason) {
        self.state = State::Done;
        self.actions.push_back(ReconnectAction::GiveUp { reason, attempts: self.failures });
    }

    /// Stops: no more dials.
    pub fn stop(&mut self) {
        if self.state != State::Done {
            self.give_up(GiveUpReason::Stopped);
        }
    }

    /// Time passed. Spurious calls are harmless.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        if let State::Waiting { until } = self.state
            && until <= now
        {
            self.state = State::Dialing;
            self.actions.push_back(ReconnectAction::Dial { attempt: self.failures });
        }
    }

    /// The next action, if any.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<ReconnectAction> {
        self.actions.pop_front()
    }

    /// When `handle_timeout` should next be called.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        match self.state {
            State::Waiting { until } => Some(until),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_jitter() -> ReconnectConfig {
        ReconnectConfig { jitter: Jitter::None, ..ReconnectConfig::default() }
    }

    fn drain(r: &mut Reconnect) -> Vec<ReconnectAction> {
        std::iter::from_fn(|| r.poll_action()).collect()
    }

    #[test]
    fn backoff_doubles_to_the_cap_then_gives_up() {
        let mut r = Reconnect::new(ReconnectConfig { max_retries: Some(6), ..no_jitter() }, [0; 32]);
        let mut now = Timestamp::ZERO;
        r.connected(now);
        let mut waits = Vec::new();
        r.lost(now, &CloseReason::Eof);
        loop {
            let actions = drain(&mut r);
            if let Some(ReconnectAction::GiveUp { reason, attempts }) = actions.last() {
                assert!(matches!(reason, GiveUpReason::RetriesExhausted(_)));
                assert_eq!(*attempts, 7);
                break;
            }
            let Some(t) = r.poll_timeout() else { panic!("no timer: {actions:?}") };
            waits.push((t - now).as_secs());
            now = t;
            r.handle_timeout(now);
            assert!(matches!(drain(&mut r)[..], [ReconnectAction::Dial { .. }]));
            r.dial_failed(now, true, "connection refused");
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 30]);
    }

    #[test]
    fn terminal_reasons_give_up_at_once() {
        for reason in [
            CloseReason::HostKeyRejected,
            CloseReason::AuthFailed { offered: vec![], attempts: vec![] },
            CloseReason::Local { code: crate::DisconnectCode::BY_APPLICATION, description: "bye".into() },
            CloseReason::Error(crate::Error::BadHostKeySignature { reason: "x".into() }),
        ] {
            let mut r = Reconnect::new(ReconnectConfig::default(), [1; 32]);
            r.connected(Timestamp::ZERO);
            r.lost(Timestamp::from_secs(1), &reason);
            assert_eq!(
                drain(&mut r),
                vec![ReconnectAction::GiveUp { reason: GiveUpReason::NotRetryable(reason), attempts: 0 }]
            );
            assert!(r.is_done() && r.poll_timeout().is_none());
        }
    }

    #[test]
    fn stable_period_resets_the_count() {
        let mut r = Reconnect::new(no_jitter(), [2; 32]);
        r.connected(Timestamp::ZERO);
        r.lost(Timestamp::from_secs(10), &CloseReason::Eof);
        assert_eq!(r.failures(), 1);
        r.handle_timeout(Timestamp::from_secs(11));
        let _ = drain(&mut r);
        r.connected(Timestamp::from_secs(11));
        // Up 10 s (< 30 s): the count goes on.
        r.lost(Timestamp::from_secs(21), &CloseReason::Eof);
        assert_eq!(r.failures(), 2);
        r.handle_timeout(Timestamp::from_secs(23));
        let _ = drain(&mut r);
        r.connected(Timestamp::from_secs(23));
        // Up 40 s: reset, this is the first failure again.
        r.lost(Timestamp::from_secs(63), &CloseReason::KeepaliveTimeout { unanswered: 3 });
        assert_eq!(r.failures(), 1);
        assert_eq!(r.poll_timeout(), Some(Timestamp::from_secs(64)));
    }
}
