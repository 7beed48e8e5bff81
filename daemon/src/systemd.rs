//! systemd integration: `Type=notify` readiness, reload and stop notices, and watchdog pings.
//!
//! Every call is a no-op when not started by systemd (no `$NOTIFY_SOCKET`).

use std::time::Duration;

use sd_notify::NotifyState;
use tracing::{debug, error, info};

fn notify(state: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, state) {
        debug!(cause = %e, "sd_notify failed");
    }
}

/// Startup finished: listeners bound, tasks running.
pub(crate) fn ready(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A reload started (systemd needs a monotonic timestamp with RELOADING=1).
pub(crate) fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[NotifyState::Reloading, now]),
        Err(_) => notify(&[NotifyState::Reloading]),
    }
}

/// A reload ended, applied or not.
pub(crate) fn reloaded(status: &str) {
    notify(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Shutdown started.
pub(crate) fn stopping() {
    notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// Pings the watchdog at half its period, from a task of the control runtime, and only while
/// every proxy worker thread has beaten (see [`lb::workers::Heartbeats`]) within that half
/// period (at least two heartbeats): a wedged worker (a busy loop, a blocked system call) or
/// a wedged control runtime stops the pings, and systemd restarts the daemon within 1.5 x
/// `WatchdogSec=` of the stall. Nothing happens without `WatchdogSec=`.
pub(crate) fn spawn_watchdog(beats: lb::Heartbeats) -> Option<tokio::task::JoinHandle<()>> {
    let mut usec = 0u64;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return None;
    }
    let period = Duration::from_micros(usec / 2);
    let limit = period.max(2 * lb::workers::HEARTBEAT);
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        let mut withheld = false;
        loop {
            tick.tick().await;
            match beats.silent_longer_than(limit) {
                None => {
                    if withheld {
                        info!("every proxy worker runs again: watchdog pings resume");
                        withheld = false;
                    }
                    notify(&[NotifyState::Watchdog]);
                }
                Some((worker, silent)) => {
                    if !withheld {
                        error!(
                            worker, silent_s = silent.as_secs_f64(),
                            "proxy worker proxy-{worker} has not run for {:.1} s: watchdog ping \
                             withheld (systemd restarts maas-vip once WatchdogSec passes without one)",
                            silent.as_secs_f64()
                        );
                        withheld = true;
                    }
                }
            }
        }
    }))
}
