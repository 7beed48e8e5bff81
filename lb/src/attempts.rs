//! The connect attempts of one client connection (tcp mode) or one request (http mode), without
//! I/O: which server next, whether a retry goes to the same server or another, when to give up,
//! and the retry counters. The tcp mode (`l4`) and the http mode (`l7`) connect and tell it what
//! happened.
//!
//! HAProxy's rules: `retries` attempts after the first; without `redispatch` a retry goes to the
//! server that just failed while it is still available, with it to another one at once (no
//! turn-around delay). A server whose name lost its address since the pick is skipped, not
//! counted as an attempt. A local shortage (descriptors, buffers, local ports) is waited out
//! within `timeout_connect`, not counted either: no other server would do better.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::balance::Tried;
use crate::frontend::{FrontendCounters, FrontendSnapshot, Settings};

/// Pooled connections found closed by their server as a request went out, at most, before the
/// request is answered 502: each goes again without counting as an attempt.
const MAX_STALE: u32 = 8;

/// Why no server is left to try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GiveUp {
    /// No server was available for the first attempt.
    NoServer,
    /// Attempts were made and failed, and no server is available for another.
    AllFailed,
}

/// The attempts of one connection or request.
#[derive(Debug)]
pub(crate) struct Attempts {
    /// Attempts allowed after the first.
    allowed: u32,
    redispatch: bool,
    tried: Tried,
    /// The server of the last failed attempt.
    previous: Option<usize>,
    /// Attempts made after the first.
    made: u32,
    /// Stale pooled connections met in a row (http mode).
    stale: u32,
    /// Time spent waiting out local shortages.
    short_wait: Duration,
}

impl Attempts {
    /// Attempts under `settings`' `retries` and `redispatch`.
    #[inline]
    pub(crate) fn new(settings: &Settings) -> Attempts {
        Attempts {
            allowed: settings.retries,
            redispatch: settings.redispatch,
            tried: Tried::default(),
            previous: None,
            made: 0,
            stale: 0,
            short_wait: Duration::ZERO,
        }
    }

    /// Retries made so far (the access log's `retries`).
    #[inline]
    pub(crate) fn retries(&self) -> u32 {
        self.made
    }

    /// The server for the next attempt of `client`, counting it in `counters` and the server's
    /// own counters as a retry (and a redispatch when it is another server than the one that
    /// failed) unless it is the first attempt or goes again after a stale pooled connection.
    #[inline]
    pub(crate) fn pick(
        &mut self,
        snap: &FrontendSnapshot,
        counters: &FrontendCounters,
        client: IpAddr,
    ) -> Result<usize, GiveUp> {
        let members = snap.servers.members();
        let idx = match self.previous {
            Some(p) if !self.redispatch && members[p].state.is_available() => p,
            _ => match snap.servers.pick(client, self.tried) {
                Some(i) => i,
                None if self.made == 0 => return Err(GiveUp::NoServer),
                None => return Err(GiveUp::AllFailed),
            },
        };
        if self.made > 0 && self.stale == 0 {
            counters.retries.fetch_add(1, Ordering::Relaxed);
            members[idx]
                .state
                .counters
                .retries
                .fetch_add(1, Ordering::Relaxed);
            if let Some(p) = self.previous.filter(|&p| p != idx) {
                counters.redispatches.fetch_add(1, Ordering::Relaxed);
                members[p]
                    .state
                    .counters
                    .redispatches
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(idx)
    }

    /// Server `idx` has no address (its name lost it since the pick): pick another, no attempt
    /// spent.
    #[inline]
    pub(crate) fn skip(&mut self, idx: usize) {
        self.tried.mark(idx);
    }

    /// An attempt on server `idx` failed. Returns whether to make another (then [`pick`]
    /// again); `false` once the retries are spent.
    ///
    /// [`pick`]: Attempts::pick
    #[inline]
    pub(crate) fn failed(&mut self, idx: usize) -> bool {
        self.tried.mark(idx);
        self.previous = Some(idx);
        if self.made >= self.allowed {
            return false;
        }
        self.made += 1;
        true
    }

    /// http mode: a request reached server `idx` and failed there. It goes again (as
    /// [`Attempts::failed`]) only if `may_retry` (it can be replayed safely) and retries are
    /// left.
    #[inline]
    pub(crate) fn failed_after_send(&mut self, idx: usize, may_retry: bool) -> bool {
        self.stale = 0;
        may_retry && self.failed(idx)
    }

    /// http mode: the server had closed the pooled connection the request went out on, so the
    /// request never reached it. Returns whether to go again (same rules, no attempt spent);
    /// `false` after [`MAX_STALE`] in a row.
    #[inline]
    pub(crate) fn stale(&mut self) -> bool {
        self.stale += 1;
        self.stale <= MAX_STALE
    }

    /// A local shortage: how long to pause before going again, or `None` once `budget`
    /// (`timeout_connect`) is spent waiting and the caller gives up.
    #[inline]
    pub(crate) fn shortage(&mut self, budget: Duration) -> Option<Duration> {
        let pause = crate::listener::shortage_pause(self.short_wait, budget)?;
        self.short_wait += pause;
        Some(pause)
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;

    use healthcheck::{Health, ServerState};

    use super::*;
    use crate::config::FrontendConfig;
    use crate::frontend::Frontend;

    const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 9));

    /// A frontend of `n` servers, balanced `first`, with `extra` config lines.
    fn frontend(n: usize, extra: &str) -> (Frontend, Vec<Arc<ServerState>>) {
        let mut text = format!("name = \"fe\"\nbalance = \"first\"\n{extra}\n");
        let mut states = Vec::new();
        for i in 0..n {
            let addr: SocketAddr = format!("10.0.0.{}:80", i + 1).parse().expect("address");
            text.push_str(&format!(
                "[[server]]\nname = \"s{i}\"\naddress = \"{addr}\"\n"
            ));
            states.push(Arc::new(ServerState::new(format!("s{i}"), addr, false)));
        }
        let cfg: FrontendConfig = toml::from_str(&text).expect("test config");
        (Frontend::new(&cfg, states.clone()), states)
    }

    fn retries(s: &ServerState) -> (u64, u64) {
        (
            s.counters.retries.load(Ordering::Relaxed),
            s.counters.redispatches.load(Ordering::Relaxed),
        )
    }

    #[test]
    fn without_redispatch_a_retry_goes_to_the_same_server_then_gives_up() {
        let (fe, states) = frontend(2, "retries = 2\nredispatch = false");
        let snap = fe.snapshot();
        let mut a = Attempts::new(&snap.settings);
        assert_eq!(a.pick(&snap, &fe.counters, CLIENT), Ok(0));
        assert!(a.failed(0));
        assert_eq!(a.pick(&snap, &fe.counters, CLIENT), Ok(0), "same server");
        assert!(a.failed(0));
        assert_eq!(a.pick(&snap, &fe.counters, CLIENT), Ok(0));
        assert!(!a.failed(0), "two retries spent");
        assert_eq!(a.retries(), 2);
        assert_eq!(fe.counters.retries.load(Ordering::Relaxed), 2);
        assert_eq!(fe.counters.redispatches.load(Ordering::Relaxed), 0);
        assert_eq!(retries(&states[0]), (2, 0));
        assert_eq!(retries(&states[1]), (0, 0));
    }

    #[test]
    fn without_redispatch_a_server_gone_down_is_left() {
        let (fe, states) = frontend(2, "retries = 3\nredispatch = false");
        let snap = fe.snapshot();
        let mut a = Attempts::new(&snap.settings);
        assert_eq!(a.pick(&snap, &fe.counters, CLIENT), Ok(0));
        assert!(a.failed(0));
        states[0].set_health(Health::Down);
        assert_eq!(a.pick(&snap, &fe.counters, CLIENT), Ok(1));
        assert_eq!(fe.counters.redispatches.load(Ordering::Relaxed), 1);
        assert_eq!(retries(&states[0]), (0, 1), "s0 redispatched from");
        assert_eq!(retries(&states[1]), (1, 0), "s1 retried on");
    }

    #[test]
    fn with_redispatch_each_retry_goes_to_another_server() {
        let (fe, states) = frontend(3, "retries = 3\nredispatch = true");
        let snap = fe.snapshot();
        let mut a = Attempts::new(&snap.settings);
        assert_eq!(a.pick(&snap, &fe.counters, CLIENT), Ok(0));
        assert!(a.failed(0));
        assert_eq!(a.pick(&snap, &fe.counters, CLIENT), Ok(1));
        assert!(a.failed(1));
        assert_eq!(a.pick(&snap, &fe.counters, CLIENT), Ok(2));
        assert_eq!(fe.counters.retries.load(Ordering::Relaxed), 2);
        assert_eq!(fe.counters.redispatches.load(Ordering::Relaxed), 2);
        assert_eq!(retries(&states[0]), (0, 1));
        assert_eq!(retries(&states[1]), (1, 1));
        assert_eq!(retries(&states[2]), (1, 0));
    }

    #[test]
    fn no_server_at_first_differs_from_none_left_after_failures() {
        let (fe, states) = frontend(1, "retries = 3");
        let snap = fe.snapshot();
        states[0].set_health(Health::Down);
        let mut a = Attempts::new(&snap.settings);
        assert_eq!(a.pick(&snap, &fe.counters, CLIENT), Err(GiveUp::NoServer));
        states[0].set_health(Health::Up);
        assert_eq!(a.pick(&snap, &fe.counters, CLIENT), Ok(0));
        assert!(a.failed(0));
        states[0].set_health(Health::Down);
        assert_eq!(a.pick(&snap, &fe.counters, CLIENT), Err(GiveUp::AllFailed));
    }

    #[test]
    fn a_skipped_server_costs_no_attempt() {
        let (fe, _) = frontend(2, "retries = 0\nredispatch = true");
        let snap = fe.snapshot();
        let mut a = Attempts::new(&snap.settings);
        assert_eq!(a.pick(&snap, &fe.counters, CLIENT), Ok(0));
        a.skip(0);
        assert_eq!(a.pick(&snap, &fe.counters, CLIENT), Ok(1));
        assert_eq!(a.retries(), 0);
        assert_eq!(fe.counters.retries.load(Ordering::Relaxed), 0);
        assert!(!a.failed(1), "no retries allowed");
    }

    #[test]
    fn stale_pooled_connections_go_again_uncounted_up_to_a_bound() {
        let (fe, _) = frontend(2, "retries = 3\nredispatch = true");
        let snap = fe.snapshot();
        let mut a = Attempts::new(&snap.settings);
        assert_eq!(a.pick(&snap, &fe.counters, CLIENT), Ok(0));
        assert!(a.failed_after_send(0, true));
        for _ in 0..MAX_STALE {
            assert_eq!(a.pick(&snap, &fe.counters, CLIENT), Ok(1));
            assert!(a.stale());
        }
        // Only the pick right after the failure counted as a retry.
        assert_eq!(fe.counters.retries.load(Ordering::Relaxed), 1);
        assert!(!a.stale(), "the ninth in a row gives up");
        assert!(!a.failed_after_send(1, false), "not replayable");
        assert!(a.failed_after_send(1, true));
        assert_eq!(a.retries(), 2);
    }

    #[test]
    fn shortage_pauses_double_up_to_50_ms_within_the_budget() {
        let (fe, _) = frontend(1, "");
        let mut a = Attempts::new(&fe.snapshot().settings);
        let budget = Duration::from_millis(100);
        let mut pauses = Vec::new();
        while let Some(p) = a.shortage(budget) {
            pauses.push(p.as_millis());
        }
        assert_eq!(pauses, [5, 5, 10, 20, 40, 20]);
        assert_eq!(a.shortage(budget), None, "spent for good");
    }
}
