//! What the driver does for auth_hmac: load the keys of a `[[vrrp]]` block, hand the state
//! to the [`Machine`], and keep the state file (if configured) current.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::keys::credentials_directory;
use super::state::{self, ReplayState};
use super::{AuthHmac, Params};
use crate::config::{join_problems, VrrpConfig};
use crate::machine::Machine;

/// How often a changed state is written to the state file (and at stop).
pub(crate) const SAVE_EVERY: Duration = Duration::from_secs(5);

/// The settings of `cfg`'s auth_hmac with its keys read (`None` without auth_hmac), or every
/// problem joined in one line.
pub(crate) fn load(cfg: &VrrpConfig) -> Result<Option<Params>, String> {
    let Some(h) = &cfg.auth_hmac else {
        return Ok(None);
    };
    let creds = credentials_directory();
    h.load(*cfg.advert_interval.get_ref(), creds.as_deref())
        .map(Some)
        .map_err(|problems| join_problems(&problems))
}

/// Gives `machine` the auth_hmac of `cfg` with `params` from [`load`]: a running state keeps
/// its sequences and marks (reload); a new one takes back the state file if there is one.
pub(crate) fn apply(machine: &mut Machine, cfg: &VrrpConfig, params: Option<Params>) {
    let peers = cfg.unicast_peers.len();
    match (machine.auth_hmac_mut(), params) {
        (_, None) => machine.set_auth_hmac(None),
        (Some(h), Some(p)) => {
            info!(mode = %p.mode, keys = ?p.keys.ids(), active_key = p.keys.active().id(), "auth_hmac settings updated");
            h.reconfigure(p, peers)
        }
        (None, Some(p)) => {
            info!(mode = %p.mode, keys = ?p.keys.ids(), active_key = p.keys.active().id(), "auth_hmac on");
            let mut h = AuthHmac::new(p, peers);
            if let Some(path) = state_file(cfg) {
                match state::load(&path) {
                    Ok(Some(snap)) => {
                        snap.restore_into(&mut h);
                        info!(file = %path.display(), senders = snap.marks.len(), "auth_hmac state taken back");
                    }
                    Ok(None) => {}
                    Err(e) => {
                        warn!(error = %e, "auth_hmac state file not used; starting without it")
                    }
                }
            }
            machine.set_auth_hmac(Some(h));
        }
    }
}

fn state_file(cfg: &VrrpConfig) -> Option<PathBuf> {
    cfg.auth_hmac
        .as_ref()?
        .state_file
        .as_ref()
        .map(|p| p.get_ref().clone())
}

/// Writes the state file when the state changed, at most every [`SAVE_EVERY`] unless `now`
/// is `None` (at stop: at once).
#[derive(Debug, Default)]
pub(crate) struct Saver {
    last: Option<ReplayState>,
    at: Option<Instant>,
}

impl Saver {
    pub(crate) fn tick(&mut self, machine: &Machine, cfg: &VrrpConfig, now: Option<Instant>) {
        let (Some(path), Some(h)) = (state_file(cfg), machine.auth_hmac()) else {
            return;
        };
        if let (Some(now), Some(at)) = (now, self.at) {
            if now.duration_since(at) < SAVE_EVERY {
                return;
            }
        }
        let snap = ReplayState::of(h);
        if self.last.as_ref() == Some(&snap) {
            return;
        }
        match state::save(&path, &snap) {
            Ok(()) => {
                self.last = Some(snap);
                self.at = now;
            }
            Err(e) => {
                warn!(error = %e, "auth_hmac state not saved");
                self.at = now;
            }
        }
    }
}
