//! [`Reconnect`]: when to dial again after a connection is lost, as a pure
//! machine (time and seed in, actions and a deadline out).
//!
//! Counting:
//! - a *failure* is a lost connection or a failed dial. After failure `n`
//!   (consecutive, 1-based) the machine waits
//!   `min(max_delay, initial_delay × multiplier^(n-1))` before jitter; with
//!   full jitter the wait is uniform in `[0, that]`, with equal jitter in
//!   `[that/2, that]`. Failure `max_retries + 1` gives up, so at most
//!   `max_retries` retries follow a run of failures;
//! - *attempts* are dials: the one `Reconnect::new` assumes under way, and
//!   every `Dial`. `Dial { attempt }` and `Scheduled { attempt }` number the
//!   dial, `GiveUp { attempts }` says how many were made, all counted since
//!   the count last reset. So a run that starts with the first dial failing
//!   gives up after `max_retries + 1` attempts, one that starts with a
//!   stable connection lost after `max_retries`;
//! - a connection that has stayed up for `stable_period` resets both counts
//!   (at that moment, on `handle_timeout`: `poll_timeout` asks for it; or
//!   on `lost` at the latest), so the next loss starts a fresh run.
//!
//! Close reasons that a retry cannot fix give up at once.

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
    /// Delay after the first failure (before jitter).
    pub initial_delay: Duration,
    /// Each further failure waits this many times longer (0 counts as 1).
    pub multiplier: u32,
    /// Longest delay (before jitter).
    pub max_delay: Duration,
    /// Retries after consecutive failures before giving up (`None`: never):
    /// failure `max_retries + 1` gives up.
    pub max_retries: Option<u32>,
    /// Randomness on each delay.
    pub jitter: Jitter,
    /// A connection up this long resets the counts.
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
    /// `max_retries` retries after consecutive failures did not help; the
    /// last failure.
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
    /// Dial now; this is dial number `attempt` since the count last reset
    /// (the dial `Reconnect::new` assumes is number 1).
    Dial {
        /// Its number.
        attempt: u32,
    },
    /// Waiting `delay` before dial number `attempt` (for reporting "retrying in").
    Scheduled {
        /// The number of the dial that will follow.
        attempt: u32,
        /// How long until it.
        delay: Duration,
    },
    /// Stop trying.
    GiveUp {
        /// Why.
        reason: GiveUpReason,
        /// Dials made since the count last reset, the one in flight included.
        attempts: u32,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    /// Dialling (the adapter reports `connected` or `dial_failed`).
    Dialing,
    Connected {
        since: Timestamp,
        /// Whether it has been up for `stable_period` (the counts were reset).
        stable: bool,
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
    /// Consecutive failures since the count last reset.
    failures: u32,
    /// Dials made since the count last reset.
    dials: u32,
    actions: VecDeque<ReconnectAction>,
}

impl Reconnect {
    /// A scheduler whose first dial is already under way (the adapter
    /// dials at once; call `connected` or `dial_failed`). That dial is
    /// attempt 1.
    pub fn new(config: ReconnectConfig, seed: Seed) -> Self {
        Reconnect {
            config,
            rng: Rng::from_seed(seed),
            state: State::Dialing,
            failures: 0,
            dials: 1,
            actions: VecDeque::new(),
        }
    }

    /// Consecutive failures (losses and failed dials) since the count last
    /// reset: the next delay follows failure `failures()`.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Dials made since the count last reset (what `GiveUp` would report).
    pub fn attempts(&self) -> u32 {
        self.dials
    }

    /// Whether it gave up (or was stopped).
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The delay after failure `n` (1-based), before jitter.
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
            self.state = State::Connected { since: now, stable: false };
            self.check_stable(now);
        }
    }

    /// Resets the counts once the connection has been up `stable_period`.
    fn check_stable(&mut self, now: Timestamp) {
        if let State::Connected { since, stable: ref mut stable @ false } = self.state
            && now.saturating_duration_since(since) >= self.config.stable_period
        {
            *stable = true;
            self.failures = 0;
            self.dials = 0;
        }
    }

    /// The connection ended for `reason`.
    pub fn lost(&mut self, now: Timestamp, reason: &CloseReason) {
        if self.state == State::Done {
            return;
        }
        self.check_stable(now);
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
        self.actions.push_back(ReconnectAction::Scheduled { attempt: self.dials.saturating_add(1), delay });
        if delay.is_zero() {
            self.handle_timeout(now);
        }
    }

    fn give_up(&mut self, reason: GiveUpReason) {
        self.state = State::Done;
        self.actions.push_back(ReconnectAction::GiveUp { reason, attempts: self.dials });
    }

    /// Stops: no more dials.
    pub fn stop(&mut self) {
        if self.state != State::Done {
            self.give_up(GiveUpReason::Stopped);
        }
    }

    /// Time passed: a scheduled dial that is due, or a connection that has
    /// become stable. Spurious calls are harmless.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        match self.state {
            State::Waiting { until } if until <= now => {
                self.state = State::Dialing;
                self.dials = self.dials.saturating_add(1);
                self.actions.push_back(ReconnectAction::Dial { attempt: self.dials });
            }
            State::Connected { .. } => self.check_stable(now),
            _ => {}
        }
    }

    /// The next action, if any.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<ReconnectAction> {
        self.actions.pop_front()
    }

    /// When `handle_timeout` should next be called: the scheduled dial, or
    /// the moment a connection becomes stable (for current counts; `lost`
    /// catches up if the adapter does not wake for it).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        match self.state {
            State::Waiting { until } => Some(until),
            State::Connected { since, stable: false } => Some(since + self.config.stable_period),
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
        // Up, then lost before it was stable: the first dial is attempt 1.
        r.connected(now);
        let mut waits = Vec::new();
        r.lost(now, &CloseReason::Eof);
        let mut dials = Vec::new();
        loop {
            let actions = drain(&mut r);
            if let Some(ReconnectAction::GiveUp { reason, attempts }) = actions.last() {
                assert!(matches!(reason, GiveUpReason::RetriesExhausted(_)));
                // The first dial and six retries.
                assert_eq!(*attempts, 7);
                break;
            }
            let Some(t) = r.poll_timeout() else { panic!("no timer: {actions:?}") };
            waits.push((t - now).as_secs());
            now = t;
            r.handle_timeout(now);
            let [ReconnectAction::Dial { attempt }] = drain(&mut r)[..] else { panic!("no dial") };
            dials.push(attempt);
            r.dial_failed(now, true, "connection refused");
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 30]);
        assert_eq!(dials, [2, 3, 4, 5, 6, 7]);
    }

    #[test]
    fn attempts_count_dials_however_the_run_started() {
        let config = ReconnectConfig { max_retries: Some(3), ..no_jitter() };
        // Every dial fails at once; returns the dials' numbers and `attempts`.
        let run = |r: &mut Reconnect, mut now: Timestamp| -> (Vec<u32>, u32) {
            let mut dials = Vec::new();
            loop {
                for a in drain(r) {
                    match a {
                        ReconnectAction::Dial { attempt } => {
                            dials.push(attempt);
                            r.dial_failed(now, true, "refused");
                        }
                        ReconnectAction::GiveUp { attempts, .. } => return (dials, attempts),
                        ReconnectAction::Scheduled { .. } => {}
                    }
                }
                // Nothing due: time passes to the retry (none once given up).
                if let Some(t) = r.poll_timeout() {
                    now = t;
                    r.handle_timeout(now);
                }
            }
        };
        // The first dial fails: it and three retries.
        let mut r = Reconnect::new(config.clone(), [0; 32]);
        r.dial_failed(Timestamp::ZERO, true, "refused");
        assert_eq!(run(&mut r, Timestamp::ZERO), (vec![2, 3, 4], 4));
        // A stable connection is lost: three retries, the loss is no attempt.
        let mut r = Reconnect::new(config, [0; 32]);
        r.connected(Timestamp::ZERO);
        r.lost(Timestamp::from_secs(60), &CloseReason::Eof);
        assert_eq!(run(&mut r, Timestamp::from_secs(60)), (vec![1, 2, 3], 3));
    }

    #[test]
    fn terminal_reasons_give_up_at_once() {
        for reason in [
            CloseReason::HostKeyRejected,
            CloseReason::AuthFailed { offered: vec![], attempts: vec![] },
            CloseReason::Local { code: crate::DisconnectCode::BY_APPLICATION, description: "bye".into() },
            CloseReason::Error(crate::Error::BadHostKeySignature { reason: "x".into() }),
        ] {
            // Lost 1 s after the first dial came up: that dial is the attempt.
            let mut r = Reconnect::new(ReconnectConfig::default(), [1; 32]);
            r.connected(Timestamp::ZERO);
            r.lost(Timestamp::from_secs(1), &reason);
            assert_eq!(
                drain(&mut r),
                vec![ReconnectAction::GiveUp {
                    reason: GiveUpReason::NotRetryable(reason.clone()),
                    attempts: 1
                }]
            );
            assert!(r.is_done() && r.poll_timeout().is_none());
            // Lost after it was stable: no attempt since the reset.
            let mut r = Reconnect::new(ReconnectConfig::default(), [1; 32]);
            r.connected(Timestamp::ZERO);
            r.lost(Timestamp::from_secs(31), &reason);
            assert_eq!(
                drain(&mut r),
                vec![ReconnectAction::GiveUp { reason: GiveUpReason::NotRetryable(reason), attempts: 0 }]
            );
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
        // The machine asks to be woken when the connection becomes stable,
        // and the counts are current from then on, not only at the next loss.
        assert_eq!(r.poll_timeout(), Some(Timestamp::from_secs(53)));
        r.handle_timeout(Timestamp::from_secs(52));
        assert_eq!((r.failures(), r.attempts()), (2, 3));
        r.handle_timeout(Timestamp::from_secs(53));
        assert_eq!((r.failures(), r.attempts(), r.poll_timeout()), (0, 0, None));
        assert_eq!(drain(&mut r), []);
        // Up 40 s: this is the first failure again.
        r.lost(Timestamp::from_secs(63), &CloseReason::KeepaliveTimeout { unanswered: 3 });
        assert_eq!(r.failures(), 1);
        assert_eq!(drain(&mut r), [ReconnectAction::Scheduled { attempt: 1, delay: Duration::from_secs(1) }]);
        assert_eq!(r.poll_timeout(), Some(Timestamp::from_secs(64)));
    }

    #[test]
    fn a_zero_stable_period_resets_on_connect() {
        let mut r = Reconnect::new(ReconnectConfig { stable_period: Duration::ZERO, ..no_jitter() }, [0; 32]);
        r.dial_failed(Timestamp::ZERO, true, "refused");
        r.handle_timeout(Timestamp::from_secs(1));
        assert_eq!(drain(&mut r).last(), Some(&ReconnectAction::Dial { attempt: 2 }));
        r.connected(Timestamp::from_secs(1));
        assert_eq!((r.failures(), r.attempts(), r.poll_timeout()), (0, 0, None));
    }
}
