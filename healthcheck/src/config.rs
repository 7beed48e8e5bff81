//! The `check = { ... }` table of a `[[frontend]]`.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::postgres::{Password, PgCheck, Require};

/// How a frontend's servers are probed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckConfig {
    /// "tcp": a connect within `timeout`; "http": a request for `path`; "postgres": a login
    /// as `user` and the server's role (see [`crate::postgres`]).
    #[serde(default)]
    pub kind: CheckKind,
    /// Method of the HTTP check: "GET" (default), "HEAD" or "OPTIONS" (Patroni's REST API
    /// answers `OPTIONS /primary` without writing a log line).
    #[serde(default)]
    pub method: HttpMethod,
    /// Path of the HTTP check. MAAS answers `/MAAS/api/2.0/version/` only when regiond and its
    /// database work.
    #[serde(default = "default_path", deserialize_with = "de_path")]
    pub path: String,
    /// Status that passes the HTTP check; none given: any 2xx or 3xx.
    #[serde(default, deserialize_with = "de_status")]
    pub expect_status: Option<u16>,
    /// Time between two checks of an up server (HAProxy's `inter`).
    #[serde(default = "two_secs", with = "humantime_serde")]
    pub interval: Duration,
    /// Time between checks while a server is changing state (HAProxy's `fastinter`);
    /// default: the interval's quarter, at least 100ms.
    #[serde(default, with = "humantime_serde")]
    pub fast_interval: Option<Duration>,
    /// Time between checks of a down server (HAProxy's `downinter`); default: the interval.
    #[serde(default, with = "humantime_serde")]
    pub down_interval: Option<Duration>,
    /// A check not finished by then fails.
    #[serde(default = "two_secs", with = "humantime_serde")]
    pub timeout: Duration,
    /// Consecutive successes that bring a down server back.
    #[serde(default = "two", deserialize_with = "de_count")]
    pub rise: u32,
    /// Consecutive failures that take an up server down.
    #[serde(default = "three", deserialize_with = "de_count")]
    pub fall: u32,
    /// Consecutive errors the proxy sees on a server (refused or failed connects, resets,
    /// timeouts, invalid responses) that take it down, checked or not (HAProxy's `observe
    /// layer4` with `error-limit`). Any exchange that goes well starts the count again.
    #[serde(default = "ten", deserialize_with = "de_count")]
    pub error_limit: u32,
    /// What `error_limit` errors in a row do.
    #[serde(default)]
    pub on_error: OnError,
    /// A server with `check = false` taken down by errors is put back in rotation after this
    /// (a checked one comes back after `rise` good checks). Its first error then takes it
    /// down again.
    #[serde(default = "ten_secs", with = "humantime_serde")]
    pub error_retry: Duration,
    /// Postgres check: the role it logs in as (required for `kind = "postgres"`).
    #[serde(default)]
    pub user: Option<String>,
    /// Postgres check: the database it connects to; default "postgres", which every cluster
    /// has.
    #[serde(default)]
    pub database: Option<String>,
    /// Postgres check: a file holding the check user's password alone (for md5 and
    /// SCRAM-SHA-256 logins); none: trust authentication. Read when the config is loaded,
    /// so a new password takes a reload.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Postgres check: the role that passes, "primary" (accepts writes, the default),
    /// "standby" or "any".
    #[serde(default)]
    pub require: Require,
    /// The password read from `password_file` (never printed: see [`Password`]).
    #[serde(skip)]
    pub password: Option<Password>,
}

/// Method of the HTTP check.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum HttpMethod {
    /// `GET`.
    #[default]
    #[serde(rename = "GET")]
    Get,
    /// `HEAD`.
    #[serde(rename = "HEAD")]
    Head,
    /// `OPTIONS`.
    #[serde(rename = "OPTIONS")]
    Options,
}

impl HttpMethod {
    /// The method as sent.
    pub fn as_str(self) -> &'static str {
        match self {
            HttpMethod::Get => "GET",
            HttpMethod::Head => "HEAD",
            HttpMethod::Options => "OPTIONS",
        }
    }
}

/// What consecutive proxy errors do to a server (HAProxy's `on-error`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Take it down at once (HAProxy's `mark-down`).
    #[default]
    MarkDown,
    /// Only check it at once, which every error does anyway (HAProxy's `fastinter`): a server
    /// is never taken down by errors alone, and one with `check = false` stays in rotation.
    Recheck,
}

impl OnError {
    /// The name used in the config and `/status`.
    pub fn as_str(self) -> &'static str {
        match self {
            OnError::MarkDown => "mark_down",
            OnError::Recheck => "recheck",
        }
    }
}

/// Kind of active check.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    /// A TCP connect.
    Tcp,
    /// An HTTP/1.1 request (GET unless `method` says otherwise).
    #[default]
    Http,
    /// A PostgreSQL login, then the server's role (primary or standby).
    Postgres,
}

impl CheckKind {
    /// The name used in the config and `/status`.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckKind::Tcp => "tcp",
            CheckKind::Http => "http",
            CheckKind::Postgres => "postgres",
        }
    }
}

impl Default for CheckConfig {
    fn default() -> Self {
        CheckConfig {
            kind: CheckKind::Http,
            method: HttpMethod::Get,
            path: default_path(),
            expect_status: None,
            interval: two_secs(),
            fast_interval: None,
            down_interval: None,
            timeout: two_secs(),
            rise: two(),
            fall: three(),
            error_limit: ten(),
            on_error: OnError::MarkDown,
            error_retry: ten_secs(),
            user: None,
            database: None,
            password_file: None,
            require: Require::Primary,
            password: None,
        }
    }
}

impl CheckConfig {
    /// Interval used while a server is between states.
    pub fn fast_interval(&self) -> Duration {
        self.fast_interval
            .unwrap_or_else(|| (self.interval / 4).max(Duration::from_millis(100)))
    }

    /// Interval used while a server is down.
    pub fn down_interval(&self) -> Duration {
        self.down_interval.unwrap_or(self.interval)
    }

    /// Consecutive proxy errors that take a server down; `None` when they never do
    /// (`on_error = "recheck"`).
    pub fn ejection_limit(&self) -> Option<u32> {
        match self.on_error {
            OnError::MarkDown => Some(self.error_limit),
            OnError::Recheck => None,
        }
    }

    /// Checks that relate several values; every problem, as text naming the key.
    pub fn validate(&self) -> Vec<String> {
        let mut out = durations_at_least_10ms(&[
            ("interval", Some(self.interval)),
            ("timeout", Some(self.timeout)),
            ("fast_interval", self.fast_interval),
            ("down_interval", self.down_interval),
            ("error_retry", Some(self.error_retry)),
        ]);
        if self.kind == CheckKind::Postgres {
            match &self.user {
                None => out.push(
                    "check kind \"postgres\" needs `user` (the role the check logs in as)"
                        .to_string(),
                ),
                Some(u) => {
                    if let Err(e) = PgCheck::new(u, self.database()) {
                        out.push(e.to_string());
                    }
                }
            }
        } else {
            let pg_keys = [
                ("user", self.user.is_some()),
                ("database", self.database.is_some()),
                ("password_file", self.password_file.is_some()),
                ("require", self.require != Require::Primary),
            ];
            for (key, _) in pg_keys.iter().filter(|(_, given)| *given) {
                out.push(format!(
                    "check `{key}` is for kind = \"postgres\" only (this check is \"{}\")",
                    self.kind.as_str()
                ));
            }
        }
        if self.kind != CheckKind::Http && self.method != HttpMethod::Get {
            out.push("check `method` is for kind = \"http\" only".to_string());
        }
        out
    }

    /// Database of the postgres check.
    pub fn database(&self) -> &str {
        self.database.as_deref().unwrap_or("postgres")
    }

    /// Reads `password_file` into `password` (a postgres check's secret). Nothing to do
    /// without one.
    pub fn load_password(&mut self) -> Result<(), crate::postgres::PasswordFileError> {
        self.password = match &self.password_file {
            Some(p) if self.kind == CheckKind::Postgres => Some(Password::from_file(p)?),
            _ => None,
        };
        Ok(())
    }

    /// The postgres check this config describes; `None` for other kinds or when `user` is
    /// missing or unusable (which [`CheckConfig::validate`] reports).
    pub fn postgres(&self) -> Option<PgCheck> {
        if self.kind != CheckKind::Postgres {
            return None;
        }
        let c = PgCheck::new(self.user.as_deref()?, self.database())
            .ok()?
            .with_require(self.require);
        Some(match &self.password {
            Some(p) => c.with_password(p.clone()),
            None => c,
        })
    }
}

/// A problem for each duration given that is below 10ms.
fn durations_at_least_10ms(keys: &[(&str, Option<Duration>)]) -> Vec<String> {
    keys.iter()
        .filter(|(_, d)| d.is_some_and(|d| d < Duration::from_millis(10)))
        .map(|(key, _)| format!("check `{key}` must be at least 10ms"))
        .collect()
}

fn two_secs() -> Duration {
    Duration::from_secs(2)
}
fn two() -> u32 {
    2
}
fn three() -> u32 {
    3
}
fn ten() -> u32 {
    10
}
fn ten_secs() -> Duration {
    Duration::from_secs(10)
}
fn default_path() -> String {
    "/MAAS/api/2.0/version/".to_string()
}

fn de_path<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let p = String::deserialize(d)?;
    if !p.starts_with('/')
        || p.bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err(serde::de::Error::custom(format!(
            "check path must start with `/` and hold no spaces, got `{p}`"
        )));
    }
    Ok(p)
}

fn de_status<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    let v = i64::deserialize(d)?;
    match u16::try_from(v) {
        Ok(s) if (100..=599).contains(&s) => Ok(Some(s)),
        _ => Err(serde::de::Error::custom(format!(
            "expect_status must be an HTTP status 100..=599, got {v}"
        ))),
    }
}

fn de_count<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = i64::deserialize(d)?;
    match u32::try_from(v) {
        Ok(v) if (1..=1000).contains(&v) => Ok(v),
        _ => Err(serde::de::Error::custom(format!(
            "expected a count from 1 to 1000, got {v}"
        ))),
    }
}

/// Per-server changes to its frontend's check, as HAProxy's `server ... port inter fastinter
/// downinter rise fall`: a region whose checks should go to another port, or that should be
/// probed more gently. Every key is optional; what is absent comes from the frontend's `check`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckOverride {
    /// Probe this port instead of the server's (HAProxy's `port`).
    #[serde(default)]
    pub port: Option<u16>,
    /// See [`CheckConfig::interval`].
    #[serde(default, with = "humantime_serde")]
    pub interval: Option<Duration>,
    /// See [`CheckConfig::fast_interval`].
    #[serde(default, with = "humantime_serde")]
    pub fast_interval: Option<Duration>,
    /// See [`CheckConfig::down_interval`].
    #[serde(default, with = "humantime_serde")]
    pub down_interval: Option<Duration>,
    /// See [`CheckConfig::timeout`].
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// See [`CheckConfig::rise`].
    #[serde(default, deserialize_with = "de_opt_count")]
    pub rise: Option<u32>,
    /// See [`CheckConfig::fall`].
    #[serde(default, deserialize_with = "de_opt_count")]
    pub fall: Option<u32>,
    /// See [`CheckConfig::error_limit`].
    #[serde(default, deserialize_with = "de_opt_count")]
    pub error_limit: Option<u32>,
    /// See [`CheckConfig::on_error`].
    #[serde(default)]
    pub on_error: Option<OnError>,
    /// See [`CheckConfig::error_retry`].
    #[serde(default, with = "humantime_serde")]
    pub error_retry: Option<Duration>,
}

impl CheckOverride {
    /// The frontend's check with this server's changes applied.
    pub fn apply(&self, base: &CheckConfig) -> CheckConfig {
        let mut c = base.clone();
        if let Some(v) = self.interval {
            c.interval = v;
        }
        if self.fast_interval.is_some() {
            c.fast_interval = self.fast_interval;
        }
        if self.down_interval.is_some() {
            c.down_interval = self.down_interval;
        }
        if let Some(v) = self.timeout {
            c.timeout = v;
        }
        if let Some(v) = self.rise {
            c.rise = v;
        }
        if let Some(v) = self.fall {
            c.fall = v;
        }
        if let Some(v) = self.error_limit {
            c.error_limit = v;
        }
        if let Some(v) = self.on_error {
            c.on_error = v;
        }
        if let Some(v) = self.error_retry {
            c.error_retry = v;
        }
        c
    }

    /// Same checks as [`CheckConfig::validate`], on the values given here.
    pub fn validate(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.port == Some(0) {
            out.push("check `port` must not be 0".to_string());
        }
        out.extend(durations_at_least_10ms(&[
            ("interval", self.interval),
            ("timeout", self.timeout),
            ("fast_interval", self.fast_interval),
            ("down_interval", self.down_interval),
            ("error_retry", self.error_retry),
        ]));
        out
    }
}

fn de_opt_count<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    de_count(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_haproxy() {
        let c: CheckConfig = toml::from_str("").expect("empty table is valid");
        assert_eq!(c, CheckConfig::default());
        assert_eq!(c.fast_interval(), Duration::from_millis(500));
        assert_eq!(c.down_interval(), Duration::from_secs(2));
        let c: CheckConfig = toml::from_str("interval = \"200ms\"").expect("valid");
        assert_eq!(c.fast_interval(), Duration::from_millis(100));
    }

    #[test]
    fn override_applies_only_given_keys() {
        let base: CheckConfig =
            toml::from_str("kind = \"tcp\"\ninterval = \"1s\"\nrise = 2\nfall = 3").expect("valid");
        let o: CheckOverride =
            toml::from_str("port = 5241\ninterval = \"5s\"\nfall = 1").expect("valid");
        let c = o.apply(&base);
        assert_eq!(c.kind, CheckKind::Tcp);
        assert_eq!(c.interval, Duration::from_secs(5));
        assert_eq!(c.rise, 2);
        assert_eq!(c.fall, 1);
        assert!(o.validate().is_empty());
        assert_eq!(CheckOverride::default().apply(&base), base);
    }

    #[test]
    fn override_rejects_bad_values() {
        let e = toml::from_str::<CheckOverride>("rise = 0").expect_err("rise 0 is invalid");
        assert!(e.to_string().contains("count from 1 to 1000"), "{e}");
        let e = toml::from_str::<CheckOverride>("path = \"/x\"").expect_err("unknown key");
        assert!(e.to_string().contains("unknown field"), "{e}");
        let o: CheckOverride = toml::from_str("port = 0\ntimeout = \"1ms\"").expect("parses");
        assert_eq!(o.validate().len(), 2);
    }
}
