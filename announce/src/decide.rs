//! Whether this host should announce its VIPs, and the drain sequence on shutdown: a sans-IO
//! state machine. It takes facts (health of the tracked frontends, track scripts, an admin
//! decision, shutdown) with the current time and returns actions and its next deadline; the
//! driver that owns the VIP interface and the listeners is a thin loop around it.
//!
//! The rule: the VIPs are announced while the listeners are ready, every tracked frontend has
//! at least one server up, every track script passes and no operator holds them withdrawn, and
//! that has held for `announce_delay`. Any fact to the contrary withdraws at once. On shutdown
//! the route goes first, then, `drain_delay` after the withdrawal, the listeners close (so the
//! router has moved new flows to other hosts before this one refuses them); the established
//! connections then get the daemon's `shutdown_grace`.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Timings of the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// How long the VIPs must have been fit to announce before they are (also after a
    /// withdrawal): lets the first health checks run, and damps flaps seen by the router.
    pub announce_delay: Duration,
    /// On shutdown, from the withdrawal to closing the listeners.
    pub drain_delay: Duration,
}

impl Default for Timings {
    fn default() -> Timings {
        Timings {
            announce_delay: DEFAULT_ANNOUNCE_DELAY,
            drain_delay: DEFAULT_DRAIN_DELAY,
        }
    }
}

/// Default of `announce_delay`: one health-check interval of the MAAS guide's setup.
pub const DEFAULT_ANNOUNCE_DELAY: Duration = Duration::from_secs(2);
/// Default of `drain_delay`: an order of magnitude above the withdrawal time measured at an
/// FRR router (about 0.15 s), for routers that program a hardware FIB more slowly.
pub const DEFAULT_DRAIN_DELAY: Duration = Duration::from_secs(2);

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Offer the VIPs to the routing daemon.
    Announce,
    /// Withdraw them (they stay local).
    Withdraw,
    /// Close the listeners: the drain delay has passed (once, on shutdown).
    CloseListeners,
}

/// Announced or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// The VIPs are offered to the routing daemon.
    Announced,
    /// They are not.
    Withdrawn,
}

/// Why the VIPs are in their state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reason {
    /// The listeners are not ready yet.
    Starting,
    /// Fit to announce, waiting for `announce_delay` to pass.
    Holding,
    /// Announced: every condition holds.
    Healthy,
    /// No server of a tracked frontend is up (or its health is not known yet).
    NoServerUp {
        /// Its `[[frontend]] name`.
        frontend: String,
    },
    /// A track script fails (or has not run yet).
    TrackScript {
        /// Its `[[announce.track_script]] name`.
        script: String,
    },
    /// An operator withdrew them.
    Admin,
    /// Shutting down.
    Draining,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Starting => f.write_str("starting: listeners not ready"),
            Reason::Holding => f.write_str("healthy, waiting for announce_delay"),
            Reason::Healthy => f.write_str("healthy"),
            Reason::NoServerUp { frontend } => write!(f, "no server of frontend {frontend} is up"),
            Reason::TrackScript { script } => write!(f, "track script {script} fails"),
            Reason::Admin => f.write_str("withdrawn by an operator"),
            Reason::Draining => f.write_str("shutting down"),
        }
    }
}

/// What the machine reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Announced or withdrawn.
    pub state: State,
    pub reason: Reason,
    /// When the state last changed (start, if never).
    pub since: Instant,
    /// Announcements and withdrawals so far.
    pub transitions: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    /// Shutdown requested; listeners close at the drain timer.
    Draining,
    /// Listeners closed; nothing more to do.
    Closed,
}

#[derive(Debug, Clone, Copy)]
enum Timer {
    Announce = 0,
    Drain = 1,
}

/// The announce/withdraw/drain machine of one `[[announce]]` block.
#[derive(Debug)]
pub struct Announcer {
    timings: Timings,
    ready: bool,
    admin_withdrawn: bool,
    /// Tracked frontends in config order: `None` until their health is known.
    frontends: Vec<(String, Option<bool>)>,
    /// Track scripts in config order: `None` until they have run.
    scripts: Vec<(String, Option<bool>)>,
    phase: Phase,
    state: State,
    reason: Reason,
    since: Instant,
    transitions: u64,
    timers: [Option<Instant>; 2],
    actions: VecDeque<Action>,
}

impl Announcer {
    /// A machine tracking `frontends` and `scripts` (names), withdrawn and starting.
    pub fn new(
        timings: Timings,
        frontends: impl IntoIterator<Item = String>,
        scripts: impl IntoIterator<Item = String>,
        now: Instant,
    ) -> Announcer {
        Announcer {
            timings,
            ready: false,
            admin_withdrawn: false,
            frontends: frontends.into_iter().map(|n| (n, None)).collect(),
            scripts: scripts.into_iter().map(|n| (n, None)).collect(),
            phase: Phase::Running,
            state: State::Withdrawn,
            reason: Reason::Starting,
            since: now,
            transitions: 0,
            timers: [None; 2],
            actions: VecDeque::new(),
        }
    }

    /// The listeners are bound and the VIP interface exists: announcing may begin.
    pub fn set_ready(&mut self, now: Instant) {
        self.ready = true;
        self.evaluate(now);
    }

    /// Whether frontend `name` has at least one server up. Unknown names are ignored (the
    /// config check rejects them).
    pub fn set_frontend(&mut self, name: &str, any_up: bool, now: Instant) {
        if let Some(f) = self.frontends.iter_mut().find(|(n, _)| n == name) {
            f.1 = Some(any_up);
        }
        self.evaluate(now);
    }

    /// Whether track script `name` passes (after its own rise/fall).
    pub fn set_script(&mut self, name: &str, ok: bool, now: Instant) {
        if let Some(s) = self.scripts.iter_mut().find(|(n, _)| n == name) {
            s.1 = Some(ok);
        }
        self.evaluate(now);
    }

    /// An operator holds the VIPs withdrawn (`true`) or releases them.
    pub fn set_admin_withdrawn(&mut self, withdrawn: bool, now: Instant) {
        self.admin_withdrawn = withdrawn;
        self.evaluate(now);
    }

    /// Begins the drain: withdraw now, close the listeners `drain_delay` after the VIPs were
    /// withdrawn (at once if they were withdrawn that long ago, or never announced).
    /// Idempotent.
    pub fn shutdown(&mut self, now: Instant) {
        if self.phase != Phase::Running {
            return;
        }
        let was_announced = self.state == State::Announced;
        self.phase = Phase::Draining;
        self.evaluate(now);
        let close_at = if was_announced || self.transitions > 0 {
            // `since` is the withdrawal: just now, or earlier.
            self.since + self.timings.drain_delay
        } else {
            now
        };
        self.timers[Timer::Drain as usize] = Some(close_at.max(now));
        self.handle_timeout(now);
    }

    /// Fires the timers that are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.due(Timer::Announce, now) {
            self.timers[Timer::Announce as usize] = None;
            if self.blocker().is_none() && self.state == State::Withdrawn {
                self.transition(State::Announced, Reason::Healthy, now);
            }
        }
        if self.due(Timer::Drain, now) {
            self.timers[Timer::Drain as usize] = None;
            self.phase = Phase::Closed;
            self.actions.push_back(Action::CloseListeners);
        }
    }

    /// The next deadline, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.iter().flatten().min().copied()
    }

    /// The next action to carry out, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Announced or withdrawn, why, since when, transitions.
    pub fn status(&self) -> Status {
        Status {
            state: self.state,
            reason: self.reason.clone(),
            since: self.since,
            transitions: self.transitions,
        }
    }

    /// Whether the listeners have been told to close.
    pub fn closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    fn due(&self, t: Timer, now: Instant) -> bool {
        self.timers[t as usize].is_some_and(|at| at <= now)
    }

    /// The first reason, in a fixed order, not to announce.
    fn blocker(&self) -> Option<Reason> {
        if self.phase != Phase::Running {
            return Some(Reason::Draining);
        }
        if !self.ready {
            return Some(Reason::Starting);
        }
        if self.admin_withdrawn {
            return Some(Reason::Admin);
        }
        if let Some((name, _)) = self.frontends.iter().find(|(_, up)| *up != Some(true)) {
            return Some(Reason::NoServerUp {
                frontend: name.clone(),
            });
        }
        if let Some((name, _)) = self.scripts.iter().find(|(_, ok)| *ok != Some(true)) {
            return Some(Reason::TrackScript {
                script: name.clone(),
            });
        }
        None
    }

    fn evaluate(&mut self, now: Instant) {
        match (self.blocker(), self.state) {
            (Some(why), State::Announced) => {
                self.timers[Timer::Announce as usize] = None;
                self.transition(State::Withdrawn, why, now);
            }
            (Some(why), State::Withdrawn) => {
                self.timers[Timer::Announce as usize] = None;
                self.reason = why;
            }
            (None, State::Withdrawn) => {
                if self.timers[Timer::Announce as usize].is_none() {
                    self.timers[Timer::Announce as usize] = Some(now + self.timings.announce_delay);
                    self.reason = Reason::Holding;
                }
                self.handle_timeout(now);
            }
            (None, State::Announced) => {}
        }
    }

    fn transition(&mut self, to: State, why: Reason, now: Instant) {
        self.state = to;
        self.reason = why;
        self.since = now;
        self.transitions += 1;
        self.actions.push_back(match to {
            State::Announced => Action::Announce,
            State::Withdrawn => Action::Withdraw,
        });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn machine(t0: Instant) -> Announcer {
        Announcer::new(
            Timings {
                announce_delay: 2 * S,
                drain_delay: 3 * S,
            },
            ["maas".to_string(), "api".to_string()],
            ["chk_named".to_string()],
            t0,
        )
    }

    fn actions(m: &mut Announcer) -> Vec<Action> {
        std::iter::from_fn(|| m.poll_action()).collect()
    }

    /// Ready, both frontends up, the script passing, at `t`.
    fn fit(m: &mut Announcer, t: Instant) {
        m.set_ready(t);
        m.set_frontend("maas", true, t);
        m.set_frontend("api", true, t);
        m.set_script("chk_named", true, t);
    }

    #[test]
    fn announces_only_when_every_fact_holds_and_after_the_delay() {
        let t0 = Instant::now();
        let mut m = machine(t0);
        assert_eq!(m.status().reason, Reason::Starting);
        m.set_frontend("maas", true, t0);
        m.set_frontend("api", true, t0);
        m.set_script("chk_named", true, t0);
        assert_eq!(m.status().reason, Reason::Starting, "not before ready");
        assert_eq!(m.poll_timeout(), None);
        m.set_ready(t0 + S);
        assert_eq!(m.status().reason, Reason::Holding);
        assert_eq!(m.poll_timeout(), Some(t0 + 3 * S));
        m.handle_timeout(t0 + 2 * S);
        assert!(actions(&mut m).is_empty(), "the delay has not passed");
        m.handle_timeout(t0 + 3 * S);
        assert_eq!(actions(&mut m), vec![Action::Announce]);
        let st = m.status();
        assert_eq!(
            (st.state, st.reason, st.since, st.transitions),
            (State::Announced, Reason::Healthy, t0 + 3 * S, 1)
        );
        assert_eq!(m.poll_timeout(), None);
    }

    #[test]
    fn unknown_health_and_unrun_scripts_block() {
        let t0 = Instant::now();
        let mut m = machine(t0);
        m.set_ready(t0);
        assert_eq!(
            m.status().reason,
            Reason::NoServerUp {
                frontend: "maas".into()
            }
        );
        m.set_frontend("maas", true, t0);
        assert_eq!(
            m.status().reason,
            Reason::NoServerUp {
                frontend: "api".into()
            }
        );
        m.set_frontend("api", true, t0);
        assert_eq!(
            m.status().reason,
            Reason::TrackScript {
                script: "chk_named".into()
            }
        );
        m.set_frontend("nonesuch", false, t0);
        assert_eq!(
            m.status().reason,
            Reason::TrackScript {
                script: "chk_named".into()
            }
        );
    }

    #[test]
    fn any_blocker_withdraws_at_once_and_reannounce_waits_again() {
        let t0 = Instant::now();
        let mut m = machine(t0);
        fit(&mut m, t0);
        m.handle_timeout(t0 + 2 * S);
        assert_eq!(actions(&mut m), vec![Action::Announce]);

        m.set_frontend("api", false, t0 + 10 * S);
        assert_eq!(actions(&mut m), vec![Action::Withdraw]);
        let st = m.status();
        assert_eq!(st.state, State::Withdrawn);
        assert_eq!(
            st.reason,
            Reason::NoServerUp {
                frontend: "api".into()
            }
        );
        assert_eq!((st.since, st.transitions), (t0 + 10 * S, 2));

        // Back, but gone again before the delay: no announcement, no transition.
        m.set_frontend("api", true, t0 + 11 * S);
        assert_eq!(m.poll_timeout(), Some(t0 + 13 * S));
        m.set_script("chk_named", false, t0 + 12 * S);
        assert_eq!(m.poll_timeout(), None, "the announce timer is cancelled");
        m.handle_timeout(t0 + 13 * S);
        assert!(actions(&mut m).is_empty());
        assert_eq!(
            m.status().reason,
            Reason::TrackScript {
                script: "chk_named".into()
            }
        );
        assert_eq!(m.status().transitions, 2);

        // The delay restarts from the moment every fact holds again.
        m.set_script("chk_named", true, t0 + 20 * S);
        m.handle_timeout(t0 + 21 * S);
        assert!(actions(&mut m).is_empty());
        m.handle_timeout(t0 + 22 * S);
        assert_eq!(actions(&mut m), vec![Action::Announce]);

        m.set_admin_withdrawn(true, t0 + 30 * S);
        assert_eq!(actions(&mut m), vec![Action::Withdraw]);
        assert_eq!(m.status().reason, Reason::Admin);
        m.set_admin_withdrawn(false, t0 + 31 * S);
        m.handle_timeout(t0 + 33 * S);
        assert_eq!(actions(&mut m), vec![Action::Announce]);
        assert_eq!(m.status().transitions, 5);
    }

    #[test]
    fn zero_delay_announces_on_the_fact_itself() {
        let t0 = Instant::now();
        let mut m = Announcer::new(
            Timings {
                announce_delay: Duration::ZERO,
                drain_delay: S,
            },
            ["maas".to_string()],
            [],
            t0,
        );
        m.set_ready(t0);
        assert!(actions(&mut m).is_empty());
        m.set_frontend("maas", true, t0);
        assert_eq!(actions(&mut m), vec![Action::Announce]);
        assert_eq!(m.poll_timeout(), None);
    }

    #[test]
    fn shutdown_withdraws_then_closes_listeners_after_the_drain_delay() {
        let t0 = Instant::now();
        let mut m = machine(t0);
        fit(&mut m, t0);
        m.handle_timeout(t0 + 2 * S);
        assert_eq!(actions(&mut m), vec![Action::Announce]);

        m.shutdown(t0 + 10 * S);
        assert_eq!(
            actions(&mut m),
            vec![Action::Withdraw],
            "the route goes first"
        );
        assert_eq!(m.status().reason, Reason::Draining);
        assert_eq!(m.poll_timeout(), Some(t0 + 13 * S));
        m.handle_timeout(t0 + 12 * S);
        assert!(
            actions(&mut m).is_empty(),
            "listeners stay open during the drain delay"
        );
        assert!(!m.closed());
        // Health returning during the drain announces nothing.
        m.set_frontend("maas", true, t0 + 12 * S);
        m.set_admin_withdrawn(false, t0 + 12 * S);
        m.handle_timeout(t0 + 13 * S);
        assert_eq!(actions(&mut m), vec![Action::CloseListeners]);
        assert!(m.closed());
        assert_eq!(m.poll_timeout(), None);
        m.shutdown(t0 + 14 * S);
        assert!(actions(&mut m).is_empty(), "idempotent");
        assert_eq!(m.status().state, State::Withdrawn);
    }

    #[test]
    fn shutdown_after_an_earlier_withdrawal_waits_only_the_rest_of_the_delay() {
        let t0 = Instant::now();
        let mut m = machine(t0);
        fit(&mut m, t0);
        m.handle_timeout(t0 + 2 * S);
        m.set_frontend("maas", false, t0 + 10 * S);
        assert_eq!(actions(&mut m), vec![Action::Announce, Action::Withdraw]);
        m.shutdown(t0 + 11 * S);
        assert!(actions(&mut m).is_empty());
        assert_eq!(
            m.poll_timeout(),
            Some(t0 + 13 * S),
            "3 s after the withdrawal at 10 s"
        );
        m.handle_timeout(t0 + 13 * S);
        assert_eq!(actions(&mut m), vec![Action::CloseListeners]);

        // Withdrawn long ago: close at once.
        let mut m = machine(t0);
        fit(&mut m, t0);
        m.handle_timeout(t0 + 2 * S);
        m.set_frontend("maas", false, t0 + 10 * S);
        let _ = actions(&mut m);
        m.shutdown(t0 + 60 * S);
        assert_eq!(actions(&mut m), vec![Action::CloseListeners]);
    }

    #[test]
    fn shutdown_before_any_announcement_closes_at_once() {
        let t0 = Instant::now();
        let mut m = machine(t0);
        fit(&mut m, t0);
        assert_eq!(m.status().reason, Reason::Holding);
        m.shutdown(t0 + S);
        assert_eq!(actions(&mut m), vec![Action::CloseListeners]);
        assert_eq!(m.status().transitions, 0);
        assert_eq!(
            m.poll_timeout(),
            None,
            "the pending announcement is cancelled"
        );
    }

    #[test]
    fn reasons_read_well() {
        assert_eq!(
            Reason::NoServerUp {
                frontend: "maas".into()
            }
            .to_string(),
            "no server of frontend maas is up"
        );
        assert_eq!(
            serde_json::to_string(&Reason::TrackScript {
                script: "chk".into()
            })
            .unwrap(),
            r#"{"kind":"track_script","script":"chk"}"#
        );
        assert_eq!(
            serde_json::to_string(&State::Announced).unwrap(),
            r#""announced""#
        );
    }
}
