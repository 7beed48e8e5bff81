//! The `auth_hmac` table of a `[[vrrp]]` block:
//!
//! ```toml
//! [vrrp.auth_hmac]
//! keys = [
//!     { id = 1, key_file = "/etc/maas-vip/vrrp-hmac-1.key" },   # mode 0600
//!     { id = 2, credential = "vrrp_hmac_2" },    # $CREDENTIALS_DIRECTORY/vrrp_hmac_2
//! ]
//! active_key = 1            # the signing key; may be left out with one key
//! mode = "enforce"          # "receive-only", "permissive" or "enforce"
//! anti_replay = "time"      # or "monotonic"
//! time_window = "5s"        # time only; default 3 advert intervals, at least 5s
//! state_file = "/var/lib/maas-vip/maas_region.hmac"   # optional, see auth_hmac::state
//! ```
//!
//! Keys are never written in the config itself. [`AuthHmacConfig::validate`] checks the
//! table alone; [`AuthHmacConfig::load`] reads the keys (files, credentials).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use serde_spanned::Spanned;

use super::keys::{load_credential, load_key_file, KeyFileError};
use super::{AntiReplay, Key, KeySet, Mode, Params, WINDOW_MAX, WINDOW_MIN};
use crate::config::Problem;

/// `auth_hmac = { ... }`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthHmacConfig {
    /// The keys, each from a file or a systemd credential.
    pub keys: Spanned<Vec<KeyConfig>>,
    /// Id of the signing key; may be left out when there is one key.
    #[serde(default, deserialize_with = "de_key_id_opt")]
    pub active_key: Option<Spanned<u8>>,
    /// receive-only, permissive or enforce (default).
    #[serde(default)]
    pub mode: Mode,
    /// time (default) or monotonic.
    #[serde(default)]
    pub anti_replay: AntiReplayKind,
    /// Freshness window of time mode, whole seconds from 1s to 300s.
    #[serde(default, deserialize_with = "de_window")]
    pub time_window: Option<Spanned<Duration>>,
    /// Where the replay state (last sequence sent, last accepted per sender) is kept across
    /// restarts; none: kept in memory only, as keepalived does.
    #[serde(default)]
    pub state_file: Option<Spanned<PathBuf>>,
}

/// One key: `{ id = 1, key_file = "..." }` or `{ id = 1, credential = "..." }`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// 1..=255, carried in the trailer.
    #[serde(deserialize_with = "de_key_id")]
    pub id: Spanned<u8>,
    /// A file of mode 0600 (or stricter) holding the key.
    #[serde(default)]
    pub key_file: Option<Spanned<PathBuf>>,
    /// The name of a systemd credential (`LoadCredential=NAME:PATH` in the unit).
    #[serde(default)]
    pub credential: Option<Spanned<String>>,
}

/// `anti_replay`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AntiReplayKind {
    /// Freshness window and growing sequences.
    #[default]
    Time,
    /// Growing sequences only.
    Monotonic,
}

impl AuthHmacConfig {
    /// Checks of the table alone (no file is read).
    pub fn validate(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let keys = self.keys.get_ref();
        if keys.is_empty() {
            out.push(Spanned::new(
                self.keys.span(),
                "`auth_hmac.keys` needs at least one key, e.g. [{ id = 1, key_file = \"/etc/maas-vip/vrrp-hmac-1.key\" }]".into(),
            ));
        }
        for (i, k) in keys.iter().enumerate() {
            if keys[..i].iter().any(|o| o.id.get_ref() == k.id.get_ref()) {
                out.push(Spanned::new(
                    k.id.span(),
                    format!("auth_hmac key id {} is given twice", k.id.get_ref()),
                ));
            }
            match (&k.key_file, &k.credential) {
                (Some(_), Some(c)) => out.push(Spanned::new(
                    c.span(),
                    "an auth_hmac key has `key_file` or `credential`, not both".into(),
                )),
                (None, None) => out.push(Spanned::new(
                    k.id.span(),
                    format!(
                        "auth_hmac key {} needs `key_file` or `credential` (keys are never written in the config)",
                        k.id.get_ref()
                    ),
                )),
                _ => {}
            }
        }
        match &self.active_key {
            Some(a) if !keys.iter().any(|k| k.id.get_ref() == a.get_ref()) => {
                out.push(Spanned::new(
                    a.span(),
                    format!(
                        "active_key {} is not one of the auth_hmac keys",
                        a.get_ref()
                    ),
                ))
            }
            Some(_) => {}
            None if keys.len() > 1 => out.push(Spanned::new(
                self.keys.span(),
                "with several auth_hmac keys, `active_key` says which one signs".into(),
            )),
            None => {}
        }
        if let (Some(w), AntiReplayKind::Monotonic) = (&self.time_window, self.anti_replay) {
            out.push(Spanned::new(
                w.span(),
                "`time_window` is for anti_replay = \"time\" only".into(),
            ));
        }
        out
    }

    /// The id of the signing key: `active_key`, or the only key.
    pub fn active_key(&self) -> Option<u8> {
        match &self.active_key {
            Some(a) => Some(*a.get_ref()),
            None => match self.keys.get_ref().as_slice() {
                [only] => Some(*only.id.get_ref()),
                _ => None,
            },
        }
    }

    /// The anti-replay rule for an instance advertising every `advert_interval`.
    pub fn anti_replay(&self, advert_interval: Duration) -> AntiReplay {
        match (self.anti_replay, &self.time_window) {
            (AntiReplayKind::Monotonic, _) => AntiReplay::Monotonic,
            (AntiReplayKind::Time, Some(w)) => AntiReplay::Time {
                window: w.get_ref().as_secs() as u32,
            },
            (AntiReplayKind::Time, None) => AntiReplay::time_for(advert_interval),
        }
    }

    /// Reads each key that names one source (`key_file` or `credential`; [`Self::validate`]
    /// reports the others), in order: the key or why not, at its `key_file` or `credential`
    /// value. `credentials` is `$CREDENTIALS_DIRECTORY` as in [`AuthHmacConfig::load`].
    pub fn read_keys(&self, credentials: Option<&Path>) -> Vec<Spanned<Result<Key, KeyFileError>>> {
        self.keys
            .get_ref()
            .iter()
            .filter_map(|k| {
                let id = *k.id.get_ref();
                match (&k.key_file, &k.credential) {
                    (Some(f), None) => Some(Spanned::new(f.span(), load_key_file(id, f.get_ref()))),
                    (None, Some(c)) => Some(Spanned::new(
                        c.span(),
                        load_credential(id, c.get_ref(), credentials),
                    )),
                    _ => None,
                }
            })
            .collect()
    }

    /// Reads every key (`credentials` is `$CREDENTIALS_DIRECTORY`, see
    /// [`super::keys::credentials_directory`]) and gives the settings; otherwise every
    /// problem, each at the value it is about. Run [`AuthHmacConfig::validate`] first.
    pub fn load(
        &self,
        advert_interval: Duration,
        credentials: Option<&Path>,
    ) -> Result<Params, Vec<Problem>> {
        let mut problems = self.validate();
        let mut keys: Vec<Key> = Vec::new();
        for loaded in self.read_keys(credentials) {
            let span = loaded.span();
            match loaded.into_inner() {
                Ok(key) => keys.push(key),
                Err(e) => problems.push(Spanned::new(span, e.to_string())),
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let active = self.active_key().unwrap_or(0);
        let keys = KeySet::new(keys, active)
            .map_err(|e| vec![Spanned::new(self.keys.span(), e.to_string())])?;
        Ok(Params {
            keys,
            mode: self.mode,
            anti_replay: self.anti_replay(advert_interval),
        })
    }
}

fn de_key_id<'de, D: Deserializer<'de>>(d: D) -> Result<Spanned<u8>, D::Error> {
    let v = Spanned::<i64>::deserialize(d)?;
    match u8::try_from(*v.get_ref()) {
        Ok(id) if id >= 1 => Ok(Spanned::new(v.span(), id)),
        _ => Err(serde::de::Error::custom(format!(
            "auth_hmac key ids are 1..=255, got {}",
            v.get_ref()
        ))),
    }
}

fn de_key_id_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Spanned<u8>>, D::Error> {
    de_key_id(d).map(Some)
}

fn de_window<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Spanned<Duration>>, D::Error> {
    let v = Spanned::<String>::deserialize(d)?;
    let w = humantime::parse_duration(v.get_ref()).map_err(|e| {
        serde::de::Error::custom(format!(
            "`{}` is not a duration ({e}); expected e.g. \"5s\"",
            v.get_ref()
        ))
    })?;
    let secs = w.as_secs();
    if w.subsec_nanos() != 0 || secs < u64::from(WINDOW_MIN) || secs > u64::from(WINDOW_MAX) {
        return Err(serde::de::Error::custom(format!(
            "time_window must be whole seconds from {WINDOW_MIN}s to {WINDOW_MAX}s, got {}",
            v.get_ref()
        )));
    }
    Ok(Some(Spanned::new(v.span(), w)))
}
