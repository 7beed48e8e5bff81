//! The rise/fall state machine of one checked server, without I/O or clocks.
//!
//! It is HAProxy's: a counter runs from 0 (fully down) to `rise + fall - 1` (fully up).
//! A fully up server is taken down by `fall` failures net of successes (so `fall` consecutive
//! failures from fully up); a down server needs `rise` *consecutive* successes, a failure
//! while rising starting it over. While the counter sits between its ends the server is
//! "changing state" and is checked every `fast_interval`; fully up, every `interval`; fully
//! down, every `down_interval`.
//!
//! The driver ([`crate::checker`]) owns the sockets and the timer: it asks [`HealthMachine::
//! poll_timeout`] when to check, calls [`HealthMachine::start_check`] and
//! [`HealthMachine::finish_check`] around each probe, and [`HealthMachine::request_recheck`]
//! when the proxy reports a failure.

use std::time::{Duration, Instant};

use crate::config::CheckConfig;
use crate::outcome::Progress;
use crate::state::Health;

/// Share of an interval that jitter may cut from it: checks of different servers drift apart
/// instead of running in lockstep, and no delay is ever longer than configured.
pub const MAX_JITTER: f64 = 0.1;

/// A passive observation never re-checks a server sooner than this after its last check
/// started (nor later than `fast_interval`): a region refusing thousands of connects per
/// second is probed a few times per second, not thousands.
pub const MIN_RECHECK_GAP: Duration = Duration::from_millis(100);

/// Rise/fall counter and check schedule of one server.
#[derive(Debug, Clone)]
pub struct HealthMachine {
    rise: u32,
    fall: u32,
    /// HAProxy's `check->health`: 0..=rise+fall-1.
    counter: u32,
    up: bool,
    interval: Duration,
    fast_interval: Duration,
    down_interval: Duration,
    /// When the next check is due; `None` while one runs.
    next: Option<Instant>,
    /// When the running or last check started.
    last_start: Option<Instant>,
}

impl HealthMachine {
    /// A machine in `initial` state (fully so), its first check due at `now + first_delay`.
    ///
    /// The driver spreads first checks over the interval with a random `first_delay`.
    pub fn new(cfg: &CheckConfig, initial: Health, now: Instant, first_delay: Duration) -> Self {
        let rise = cfg.rise.max(1);
        let fall = cfg.fall.max(1);
        let up = initial == Health::Up;
        HealthMachine {
            rise,
            fall,
            counter: if up { rise + fall - 1 } else { 0 },
            up,
            interval: cfg.interval,
            fast_interval: cfg.fast_interval(),
            down_interval: cfg.down_interval(),
            next: Some(now + first_delay),
            last_start: None,
        }
    }

    /// What the checks say now.
    pub fn health(&self) -> Health {
        if self.up {
            Health::Up
        } else {
            Health::Down
        }
    }

    /// Between fully up and fully down: checked at the fast interval.
    pub fn is_changing(&self) -> bool {
        self.counter != 0 && self.counter != self.max()
    }

    /// Progress towards the other state (HAProxy's `UP 1/3`, `DOWN 1/2`); `None` when fully
    /// up or fully down.
    pub fn progress(&self) -> Option<Progress> {
        if !self.is_changing() {
            None
        } else if self.up {
            Some(Progress {
                toward: Health::Down,
                done: self.max() - self.counter,
                needed: self.fall,
            })
        } else {
            Some(Progress {
                toward: Health::Up,
                done: self.counter,
                needed: self.rise,
            })
        }
    }

    /// When the next check is due; `None` while a check runs.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.next
    }

    /// The driver starts a check now.
    pub fn start_check(&mut self, now: Instant) {
        self.next = None;
        self.last_start = Some(now);
    }

    /// A check that started at the last [`start_check`](Self::start_check) ended at `now`.
    ///
    /// `jitter` in `0.0..1.0` (the driver draws it at random, tests pass 0) cuts up to
    /// [`MAX_JITTER`] of the next interval. The next check is due that interval after this
    /// one *started*, or at once if the check took longer. Returns the new health if it
    /// changed.
    pub fn finish_check(&mut self, now: Instant, passed: bool, jitter: f64) -> Option<Health> {
        let max = self.max();
        let changed = if passed {
            if self.counter < max {
                self.counter += 1;
            }
            if !self.up && self.counter >= self.rise {
                self.up = true;
                self.counter = max;
                Some(Health::Up)
            } else {
                None
            }
        } else if self.up {
            self.counter = self.counter.saturating_sub(1);
            if self.counter < self.rise {
                self.up = false;
                self.counter = 0;
                Some(Health::Down)
            } else {
                None
            }
        } else {
            // Rising needs consecutive successes.
            self.counter = 0;
            None
        };
        let base = if self.is_changing() {
            self.fast_interval
        } else if self.up {
            self.interval
        } else {
            self.down_interval
        };
        let delay = base.mul_f64(1.0 - MAX_JITTER * jitter.clamp(0.0, 1.0));
        let start = self.last_start.unwrap_or(now);
        self.next = Some((start + delay).max(now));
        changed
    }

    /// The proxy saw this server fail: check it at once, but not sooner than
    /// [`MIN_RECHECK_GAP`] (at most `fast_interval`) after the last check started. A check
    /// already running is result enough.
    pub fn request_recheck(&mut self, now: Instant) {
        let Some(next) = self.next else { return };
        let earliest = match self.last_start {
            Some(s) => (s + MIN_RECHECK_GAP.min(self.fast_interval)).max(now),
            None => now,
        };
        self.next = Some(next.min(earliest));
    }

    /// The proxy's errors took the server down (`on_error = "mark_down"`): fully down, so that
    /// `rise` good checks in a row bring it back, and checked soon as by
    /// [`request_recheck`](Self::request_recheck) (HAProxy's `mark-down` with `fastinter`).
    pub fn mark_down(&mut self, now: Instant) {
        self.reset(Health::Down);
        self.request_recheck(now);
    }

    /// Force the state without a check (a server whose check was turned off stays up).
    pub fn reset(&mut self, h: Health) {
        self.up = h == Health::Up;
        self.counter = if self.up { self.max() } else { 0 };
    }

    fn max(&self) -> u32 {
        self.rise + self.fall - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn cfg(rise: u32, fall: u32) -> CheckConfig {
        CheckConfig {
            interval: 1000 * MS,
            fast_interval: Some(100 * MS),
            down_interval: Some(3000 * MS),
            rise,
            fall,
            ..CheckConfig::default()
        }
    }

    /// Runs one check of `took` at the machine's deadline; returns (start, transition).
    fn step(m: &mut HealthMachine, passed: bool, took: Duration) -> (Instant, Option<Health>) {
        let at = m.poll_timeout().expect("a check is due");
        m.start_check(at);
        assert_eq!(m.poll_timeout(), None, "no deadline while a check runs");
        (at, m.finish_check(at + took, passed, 0.0))
    }

    #[test]
    fn fall_consecutive_failures_take_an_up_server_down() {
        let t0 = Instant::now();
        let mut m = HealthMachine::new(&cfg(2, 3), Health::Up, t0, 500 * MS);
        let (s1, h) = step(&mut m, false, MS);
        assert_eq!((s1 - t0, h), (500 * MS, None));
        assert!(m.is_changing());
        assert_eq!(
            m.progress().map(|p| p.to_string()).as_deref(),
            Some("going down 1/3")
        );
        let (s2, h) = step(&mut m, false, MS);
        assert_eq!(
            (s2 - s1, h),
            (100 * MS, None),
            "fast interval while going down"
        );
        let (s3, h) = step(&mut m, false, MS);
        assert_eq!((s3 - s2, h), (100 * MS, Some(Health::Down)));
        assert_eq!(m.health(), Health::Down);
        assert!(!m.is_changing());
        let (s4, h) = step(&mut m, false, MS);
        assert_eq!((s4 - s3, h), (3000 * MS, None), "down interval once down");
    }

    #[test]
    fn a_success_while_going_down_counts_back_up_as_haproxy() {
        let t0 = Instant::now();
        let mut m = HealthMachine::new(&cfg(2, 3), Health::Up, t0, MS);
        assert_eq!(step(&mut m, false, MS).1, None);
        assert_eq!(step(&mut m, false, MS).1, None);
        assert_eq!(step(&mut m, true, MS).1, None);
        assert_eq!(
            m.progress(),
            Some(Progress {
                toward: Health::Down,
                done: 1,
                needed: 3
            }),
            "one failure still counted"
        );
        assert_eq!(step(&mut m, true, MS).1, None);
        assert!(!m.is_changing());
        let (s, _) = step(&mut m, true, MS);
        assert_eq!(
            m.poll_timeout().expect("due") - s,
            1000 * MS,
            "normal interval"
        );
        // Fully up again: it takes `fall` failures anew.
        assert_eq!(step(&mut m, false, MS).1, None);
        assert_eq!(step(&mut m, false, MS).1, None);
        assert_eq!(step(&mut m, false, MS).1, Some(Health::Down));
    }

    #[test]
    fn rise_consecutive_successes_bring_a_down_server_back() {
        let t0 = Instant::now();
        let mut m = HealthMachine::new(&cfg(3, 2), Health::Down, t0, MS);
        assert_eq!(step(&mut m, true, MS).1, None);
        assert_eq!(
            m.progress().map(|p| p.to_string()).as_deref(),
            Some("going up 1/3")
        );
        assert_eq!(step(&mut m, true, MS).1, None);
        assert_eq!(
            step(&mut m, false, MS).1,
            None,
            "a failure while rising starts over"
        );
        assert_eq!(m.progress(), None);
        let (s, h) = step(&mut m, true, MS);
        assert_eq!(h, None);
        assert_eq!(
            m.poll_timeout().expect("due") - s,
            100 * MS,
            "fast interval rising"
        );
        assert_eq!(step(&mut m, true, MS).1, None);
        assert_eq!(step(&mut m, true, MS).1, Some(Health::Up));
        assert_eq!(m.health(), Health::Up);
        assert!(!m.is_changing());
    }

    #[test]
    fn rise_and_fall_of_one_flip_at_once() {
        let t0 = Instant::now();
        let mut m = HealthMachine::new(&cfg(1, 1), Health::Up, t0, MS);
        assert_eq!(step(&mut m, false, MS).1, Some(Health::Down));
        assert_eq!(step(&mut m, true, MS).1, Some(Health::Up));
        assert!(!m.is_changing());
    }

    #[test]
    fn interval_counts_from_check_start_and_a_slow_check_runs_the_next_at_once() {
        let t0 = Instant::now();
        let mut m = HealthMachine::new(&cfg(2, 3), Health::Up, t0, MS);
        let (s, _) = step(&mut m, true, 300 * MS);
        assert_eq!(m.poll_timeout(), Some(s + 1000 * MS));
        let (s, _) = step(&mut m, false, 2000 * MS);
        assert_eq!(
            m.poll_timeout(),
            Some(s + 2000 * MS),
            "no gap after a slow check"
        );
    }

    #[test]
    fn jitter_only_shortens() {
        let t0 = Instant::now();
        let mut m = HealthMachine::new(&cfg(2, 3), Health::Up, t0, MS);
        m.start_check(t0);
        m.finish_check(t0, true, 1.0);
        assert_eq!(m.poll_timeout(), Some(t0 + 900 * MS));
        m.start_check(t0);
        m.finish_check(t0, true, 7.0);
        assert_eq!(m.poll_timeout(), Some(t0 + 900 * MS), "jitter is clamped");
    }

    #[test]
    fn recheck_runs_at_once_but_not_in_a_storm() {
        let t0 = Instant::now();
        let mut m = HealthMachine::new(&cfg(2, 3), Health::Up, t0, 700 * MS);
        m.request_recheck(t0 + 10 * MS);
        assert_eq!(
            m.poll_timeout(),
            Some(t0 + 10 * MS),
            "no check yet: at once"
        );
        let (s, _) = step(&mut m, true, MS);
        m.request_recheck(s + 20 * MS);
        assert_eq!(
            m.poll_timeout(),
            Some(s + 100 * MS),
            "min gap after the last start"
        );
        m.request_recheck(s + 500 * MS);
        assert_eq!(
            m.poll_timeout(),
            Some(s + 100 * MS),
            "never later than planned"
        );
        let (s, _) = step(&mut m, true, MS);
        m.request_recheck(s + 400 * MS);
        assert_eq!(m.poll_timeout(), Some(s + 400 * MS));
        m.start_check(s + 400 * MS);
        m.request_recheck(s + 401 * MS);
        assert_eq!(m.poll_timeout(), None, "a running check is result enough");
    }

    #[test]
    fn mark_down_needs_rise_checks_and_checks_soon() {
        let t0 = Instant::now();
        let mut m = HealthMachine::new(&cfg(2, 3), Health::Up, t0, 900 * MS);
        m.mark_down(t0 + 10 * MS);
        assert_eq!(m.health(), Health::Down);
        assert_eq!(m.progress(), None, "fully down");
        assert_eq!(
            m.poll_timeout(),
            Some(t0 + 10 * MS),
            "no check yet: at once"
        );
        assert_eq!(
            step(&mut m, true, MS).1,
            None,
            "one good check is not enough"
        );
        assert_eq!(step(&mut m, true, MS).1, Some(Health::Up));
    }

    #[test]
    fn reset_forces_state() {
        let t0 = Instant::now();
        let mut m = HealthMachine::new(&cfg(2, 3), Health::Down, t0, MS);
        m.reset(Health::Up);
        assert_eq!(m.health(), Health::Up);
        assert!(!m.is_changing());
    }
}
