//! systemd integration: `Type=notify` readiness, reload and stop notices, and watchdog pings.
//!
//! Every call is a no-op when not started by systemd (no `$NOTIFY_SOCKET`).

use std::time::Duration;

use sd_notify::NotifyState;
use tracing::debug;

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

/// Pings the watchdog at half its period from a task of the runtime, so a wedged event loop
/// stops the pings and systemd restarts the daemon. Nothing happens without `WatchdogSec=`.
pub(crate) fn spawn_watchdog() -> Option<tokio::task::JoinHandle<()>> {
    let mut usec = 0u64;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return None;
    }
    let period = Duration::from_micros(usec / 2);
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            notify(&[NotifyState::Watchdog]);
        }
    }))
}
