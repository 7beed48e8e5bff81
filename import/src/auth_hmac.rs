//! keepalived 2.4's `auth_hmac { ... }` in a `vrrp_instance`, carried over to
//! `[vrrp.auth_hmac]` (keepalived.conf(5): `key ID VALUE`, `active_key`, `anti_replay`,
//! `time_window`, `mode`).
//!
//! No key ever reaches the output. `key N file:PATH` becomes `key_file = "PATH"` (both read the
//! same syntax: `hex:` and digits, or the bytes); `file:${_ENV CREDENTIALS_DIRECTORY}/NAME`
//! becomes `credential = "NAME"` (see [`mark_credentials`]). An inline `key N VALUE` becomes `key_file =
//! "/etc/maas-vip/INSTANCE-hmac-N.key"` with a note to write VALUE there with mode 0600:
//! `import` only prints, it writes no file, and the note does not repeat the value (the notes
//! head the output as comments). The state file goes in the unit's `StateDirectory=`.

use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;
use vrrp::auth_hmac::config::{AntiReplayKind, AuthHmacConfig, KeyConfig};
use vrrp::auth_hmac::Mode;

use super::keepalived::Node;
use super::{q, Notes, Written};

/// How keepalived.conf names a systemd credential (keepalived.conf(5), `auth_hmac`).
const CREDENTIALS_ENV: &str = "${_ENV CREDENTIALS_DIRECTORY}/";
/// What [`mark_credentials`] makes of it: one word for the tokenizer, which takes braces for
/// blocks and spaces for separators.
const CREDENTIALS: &str = "$CREDENTIALS_DIRECTORY/";

/// Rewrites `file:${_ENV CREDENTIALS_DIRECTORY}/` as `file:$CREDENTIALS_DIRECTORY/` before the
/// file is tokenized (lines are kept, so line numbers still hold).
pub(super) fn mark_credentials(src: &str) -> std::borrow::Cow<'_, str> {
    let from = format!("file:{CREDENTIALS_ENV}");
    if src.contains(&from) {
        std::borrow::Cow::Owned(src.replace(&from, &format!("file:{CREDENTIALS}")))
    } else {
        std::borrow::Cow::Borrowed(src)
    }
}

/// Reads the `auth_hmac` block of instance `instance` into `vrrp`'s own table, noting `mode`
/// in `written` when given; `None` (with a note) when keepalived would run the instance
/// without it, as it does when `active_key` is missing or undefined.
pub(super) fn parse(
    file: &str,
    node: &Node,
    instance: &str,
    written: &mut Written,
    notes: &mut Notes,
) -> Option<AuthHmacConfig> {
    let mut keys: Vec<KeyConfig> = Vec::new();
    let mut active_key = 0;
    let mut mode = None;
    let mut anti_replay = AntiReplayKind::Time;
    let mut time_window = None;
    for c in node.children.iter().flatten() {
        let arg = c.args.first().map(String::as_str).unwrap_or("");
        match c.key.as_str() {
            "key" => key(file, c, instance, &mut keys, notes),
            "active_key" => match arg.parse::<u8>() {
                Ok(id) if id >= 1 => active_key = id,
                _ => notes.at(
                    file,
                    c.line,
                    "auth_hmac active_key must be 1..=255: ignored",
                ),
            },
            "mode" => match [Mode::Enforce, Mode::Permissive, Mode::ReceiveOnly]
                .into_iter()
                .find(|m| m.as_str() == arg)
            {
                Some(m) => mode = Some(m),
                None => notes.at(
                    file,
                    c.line,
                    format!("auth_hmac mode `{arg}` ignored: enforce (the default) applies"),
                ),
            },
            "anti_replay" => match arg {
                "time" => anti_replay = AntiReplayKind::Time,
                "monotonic" => anti_replay = AntiReplayKind::Monotonic,
                _ => notes.at(
                    file,
                    c.line,
                    format!("auth_hmac anti_replay `{arg}` ignored: time (the default) applies"),
                ),
            },
            "time_window" => match arg.parse::<u32>() {
                Ok(w) if (1..=300).contains(&w) => time_window = Some(w),
                _ => notes.at(
                    file,
                    c.line,
                    format!("auth_hmac time_window `{arg}` ignored: 1 to 300 seconds"),
                ),
            },
            k => notes.at(
                file,
                c.line,
                format!("auth_hmac keyword `{k}` is not supported: not carried over"),
            ),
        }
    }
    if anti_replay == AntiReplayKind::Monotonic && time_window.take().is_some() {
        notes.at(
            file,
            node.line,
            "auth_hmac time_window dropped: it applies to anti_replay time only",
        );
    }
    if !keys.iter().any(|k| *k.id.get_ref() == active_key) {
        let why = if active_key == 0 {
            "no active_key".to_string()
        } else {
            format!("active_key {active_key} is not one of its keys")
        };
        notes.at(
            file,
            node.line,
            format!(
                "auth_hmac not carried over: {why}, so keepalived runs this instance without it; \
                 add `active_key` and import again"
            ),
        );
        return None;
    }
    if mode.is_some() {
        written.set("auth_hmac.mode");
    }
    let state_file = PathBuf::from(format!("/var/lib/maas-vip/{instance}.hmac"));
    Some(AuthHmacConfig {
        keys: Spanned::new(0..0, keys),
        active_key: Some(Spanned::new(0..0, active_key)),
        mode: mode.unwrap_or_default(),
        anti_replay,
        time_window: time_window.map(|w| Spanned::new(0..0, Duration::from_secs(u64::from(w)))),
        state_file: Some(Spanned::new(0..0, state_file)),
    })
}

fn key(file: &str, c: &Node, instance: &str, keys: &mut Vec<KeyConfig>, notes: &mut Notes) {
    let Some(id) = c
        .args
        .first()
        .and_then(|a| a.parse::<u8>().ok())
        .filter(|i| *i >= 1)
    else {
        notes.at(
            file,
            c.line,
            "auth_hmac key id must be 1..=255: key not carried over",
        );
        return;
    };
    if c.args.len() < 2 {
        notes.at(
            file,
            c.line,
            format!("auth_hmac key {id} has no value: not carried over"),
        );
        return;
    }
    if keys.iter().any(|k| *k.id.get_ref() == id) {
        notes.at(
            file,
            c.line,
            format!("auth_hmac key {id} is given twice: the first is kept"),
        );
        return;
    }
    let value = &c.args[1];
    let mut k = KeyConfig {
        id: Spanned::new(0..0, id),
        key_file: None,
        credential: None,
    };
    match value.strip_prefix("file:") {
        Some(path) => match path.strip_prefix(CREDENTIALS) {
            Some(name) if !name.is_empty() && !name.contains('/') => {
                k.credential = Some(Spanned::new(0..0, name.to_string()));
            }
            _ => k.key_file = Some(Spanned::new(0..0, PathBuf::from(path))),
        },
        None => {
            let path = format!("/etc/maas-vip/{instance}-hmac-{id}.key");
            notes.at(
                file,
                c.line,
                format!(
                    "auth_hmac key {id} is inline in keepalived.conf and is not copied here: write \
                     its value (what follows `key {id}` on that line, `hex:` included) into {path} \
                     with mode 0600 (install -m 600 /dev/null {path}, then edit it), or use \
                     `key {id} file:{path}` in keepalived.conf as well"
                ),
            );
            k.key_file = Some(Spanned::new(0..0, PathBuf::from(path)));
        }
    }
    keys.push(k);
}

/// Writes the `[vrrp.auth_hmac]` table (after the `[[vrrp]]` keys, before its track scripts);
/// `mode` only when `written` has it.
pub(super) fn render(out: &mut String, h: &AuthHmacConfig, written: &Written) {
    out.push_str("\n[vrrp.auth_hmac]\n");
    let keys: Vec<String> = h
        .keys
        .get_ref()
        .iter()
        .map(|k| {
            let id = k.id.get_ref();
            match (&k.key_file, &k.credential) {
                (Some(p), _) => {
                    format!(
                        "{{ id = {id}, key_file = {} }}",
                        q(&p.get_ref().display().to_string())
                    )
                }
                (None, Some(n)) => format!("{{ id = {id}, credential = {} }}", q(n.get_ref())),
                (None, None) => format!("{{ id = {id} }}"),
            }
        })
        .collect();
    out.push_str(&format!("keys = [{}]\n", keys.join(", ")));
    if let Some(a) = &h.active_key {
        out.push_str(&format!("active_key = {}\n", a.get_ref()));
    }
    if written.has("auth_hmac.mode") {
        out.push_str(&format!("mode = {}\n", q(h.mode.as_str())));
    }
    if h.anti_replay == AntiReplayKind::Monotonic {
        out.push_str("anti_replay = \"monotonic\"\n");
    }
    if let Some(w) = &h.time_window {
        out.push_str(&format!("time_window = \"{}s\"\n", w.get_ref().as_secs()));
    }
    if let Some(f) = &h.state_file {
        out.push_str(
            "# keepalived keeps no replay state across restarts; maas-vip keeps it here (the unit's\n\
             # StateDirectory=), so that a replay captured before a restart is refused after it.\n",
        );
        out.push_str(&format!(
            "state_file = {}\n",
            q(&f.get_ref().display().to_string())
        ));
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::import;
    use config::parse;

    const CONF: &str = r#"
vrrp_instance maas_region {
    state BACKUP
    interface eth0
    virtual_router_id 51
    priority 150
    advert_int 1
    authentication {
        auth_type PASS
        auth_pass s3cret
    }
    auth_hmac {
        key 1 hex:5ee0c0ffee00112233445566778899aabbccddeeff00112233445566778899aa
        key 2 file:/etc/keepalived/keys/vrrp2
        key 3 file:${_ENV CREDENTIALS_DIRECTORY}/vrrp_hmac_3
        active_key 2
        mode permissive
        time_window 10
        frobnicate 1
    }
    virtual_ipaddress {
        10.0.0.100/24
    }
}
"#;

    fn imported(conf: &str) -> super::super::Imported {
        import(Some((Path::new("keepalived.conf"), conf)), None).expect("imports")
    }

    #[test]
    fn auth_hmac_carries_over_without_its_keys() {
        let out = imported(CONF);
        let (c, _) = parse(Path::new("imported.toml"), out.toml.clone())
            .unwrap_or_else(|r| panic!("rejected:\n{r}\n{}", out.toml));
        let v = &c.vrrp[0];
        // keepalived drops the password beside auth_hmac; maas-vip refuses the pair.
        assert!(v.auth_pass.is_none(), "{}", out.toml);
        let h = v.auth_hmac.as_ref().expect("auth_hmac");
        assert_eq!(h.active_key(), Some(2));
        assert_eq!(h.mode, vrrp::auth_hmac::Mode::Permissive);
        assert!(out.toml.contains(
            "keys = [{ id = 1, key_file = \"/etc/maas-vip/maas_region-hmac-1.key\" }, \
             { id = 2, key_file = \"/etc/keepalived/keys/vrrp2\" }, \
             { id = 3, credential = \"vrrp_hmac_3\" }]\n"
        ));
        assert!(out.toml.contains("time_window = \"10s\"\n"), "{}", out.toml);
        assert!(out
            .toml
            .contains("state_file = \"/var/lib/maas-vip/maas_region.hmac\"\n"));
        // The inline key is in neither the config nor the notes.
        assert!(!out.toml.contains("5ee0c0ffee"), "{}", out.toml);
        assert!(!out.notes.iter().any(|n| n.contains("5ee0c0ffee")));
        let note = |needle: &str| {
            assert!(
                out.notes.iter().any(|n| n.contains(needle)),
                "no note with {needle:?}:\n{}",
                out.notes.join("\n")
            )
        };
        note("keepalived.conf:13: auth_hmac key 1 is inline in keepalived.conf and is not copied here: write its value");
        note("install -m 600 /dev/null /etc/maas-vip/maas_region-hmac-1.key");
        note("keepalived.conf:19: auth_hmac keyword `frobnicate` is not supported");
        note("auth_pass dropped: keepalived drops legacy authentication beside auth_hmac");
    }

    #[test]
    fn auth_hmac_that_keepalived_would_disable_is_not_carried_over() {
        for (active, why) in [
            ("", "no active_key"),
            ("active_key 7", "active_key 7 is not one of its keys"),
        ] {
            let conf = CONF
                .replace("        active_key 2\n", &format!("        {active}\n"))
                .replace("        auth_type PASS\n        auth_pass s3cret\n", "");
            let out = imported(&conf);
            assert!(!out.toml.contains("[vrrp.auth_hmac]"), "{}", out.toml);
            assert!(
                out.notes.iter().any(|n| n.contains(&format!(
                    "keepalived.conf:10: auth_hmac not carried over: {why}"
                ))),
                "{}",
                out.notes.join("\n")
            );
        }
    }

    #[test]
    fn monotonic_and_defaults() {
        let conf = CONF
            .replace(
                "        mode permissive\n",
                "        anti_replay monotonic\n",
            )
            .replace("        time_window 10\n", "");
        let out = imported(&conf);
        let (c, _) = parse(Path::new("imported.toml"), out.toml.clone())
            .unwrap_or_else(|r| panic!("rejected:\n{r}\n{}", out.toml));
        let h = c.vrrp[0].auth_hmac.as_ref().expect("auth_hmac");
        assert_eq!(h.mode, vrrp::auth_hmac::Mode::Enforce);
        assert!(out.toml.contains("anti_replay = \"monotonic\"\n"));
        assert!(!out.toml.contains("time_window"));
    }
}
