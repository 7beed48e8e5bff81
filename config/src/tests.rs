use super::*;

fn report(text: &str) -> String {
    match parse(Path::new("maas-vip.toml"), text.to_string()) {
        Ok((_, r)) => format!("OK\n{r}"),
        Err(r) => r.to_string(),
    }
}

const GOOD: &str = r#"
[[vrrp]]
name = "maas_region"
interface = "lo"
virtual_router_id = 51
priority = 150
auth_pass = "s3cret"
virtual_ipaddresses = ["10.0.0.100/24"]

[[vrrp.track_script]]
name = "chk_named"
command = ["pidof", "named"]

[[frontend]]
name = "maas"
bind = ["0.0.0.0:8080"]

[[frontend.server]]
name = "maas-api-1"
address = "10.0.0.11:5240"

[[frontend.server]]
name = "maas-api-2"
address = "10.0.0.12:5240"
weight = 2
"#;

#[test]
fn good_config_parses_with_defaults() {
    let (c, r) = parse(Path::new("x.toml"), GOOD.to_string()).expect("valid");
    assert!(!r.has_errors());
    assert_eq!(c.vrrp.len(), 1);
    assert_eq!(c.frontend[0].server.len(), 2);
    assert_eq!(c.frontend[0].retries, 3);
    assert!(c.frontend[0].redispatch);
    assert_eq!(
        c.frontend[0].timeout_server,
        Duration::from_secs(900),
        "the region nginx's proxy_read_timeout"
    );
    assert_eq!(c.frontend[0].resolve_interval, Duration::from_secs(10));
    assert_eq!(c.vrrp[0].track_script[0].interval, Duration::from_secs(2));
    assert!(c.admin.enabled);
    assert_eq!(c.admin.bind.get_ref().to_string(), "127.0.0.1:5249");
}

#[test]
fn shipped_example_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/maas-vip.toml");
    match load(&path) {
        Ok((c, _)) => {
            assert_eq!(c.frontend[0].server.len(), 3);
            assert_eq!(c.vrrp.len(), 1);
        }
        Err(r) => panic!("conf/maas-vip.toml is invalid:\n{r}"),
    }
}

#[test]
fn shipped_example_tls_block_is_valid_once_uncommented() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/maas-vip.toml");
    let text = std::fs::read_to_string(&path).expect("conf/maas-vip.toml");
    let start = text
        .find("# [[frontend]]")
        .expect("the commented TLS frontend");
    let end = text[start..].find("\n#\n# MAAS 3.5").expect("its end") + start;
    let block: String = text[start..end]
        .lines()
        .map(|l| l.strip_prefix("# ").unwrap_or(l.trim_start_matches('#')))
        .collect::<Vec<_>>()
        .join("\n");
    let at = text.find("[admin]").expect("[admin]");
    let uncommented = format!("{}{block}\n\n{}", &text[..at], &text[at..]);
    let (c, _) = parse(&path, uncommented).expect("valid with the TLS frontend");
    let tls = c.frontend.iter().find(|f| f.name.get_ref() == "maas-tls");
    let tls = tls.expect("maas-tls");
    assert_eq!(tls.bind.get_ref()[0].port(), 443);
    assert_eq!(tls.mode, lb::Mode::Tcp);
    assert!(tls
        .server
        .iter()
        .all(|s| s.address.get_ref().ends_with(":5443")));
}

#[test]
fn unknown_key_names_line_and_column() {
    let text = GOOD.replace("priority = 150", "priority = 150\nprioirty = 100");
    assert_eq!(
        report(&text),
        "error: maas-vip.toml:7:1: unknown field `prioirty`, expected one of `name`, `interface`, \
`virtual_router_id`, `priority`, `state`, `advert_interval`, `version`, `preempt`, \
`preempt_delay`, `auth_pass`, `virtual_ipaddresses`, `unicast_peers`, `garp_master_delay`, \
`garp_master_repeat`, `garp_master_refresh`, `garp_master_refresh_repeat`, `track_backends`, \
`notify`, `notify_master`, `notify_backup`, `notify_fault`, `notify_stop`, `track_script`, \
`script_user`, `auth_hmac`, `v3_checksum`
     7 | prioirty = 100
       | ^^^^^^^^
"
    );
}

#[test]
fn priority_out_of_range() {
    let text = GOOD.replace("priority = 150", "priority = 300");
    assert_eq!(
        report(&text),
        "error: maas-vip.toml:6:12: priority must be 1..=254 (255 only for the address owner), got 300
     6 | priority = 300
       |            ^^^
"
    );
}

#[test]
fn bad_duration() {
    let text = GOOD.replace(
        "command = [\"pidof\", \"named\"]",
        "command = [\"pidof\", \"named\"]\ninterval = \"2 parsecs\"",
    );
    let r = report(&text);
    assert!(r.starts_with("error: maas-vip.toml:13:12: "), "{r}");
    assert!(r.contains("interval = \"2 parsecs\""), "{r}");
}

#[test]
fn every_problem_is_listed_not_just_the_first() {
    let text = GOOD
        .replace("priority = 150", "priority = 0")
        .replace("auth_pass = \"s3cret\"", "auth_pass = \"much-too-long\"")
        .replace("weight = 2", "weight = 1000\ncolour = \"blue\"")
        .replace("name = \"maas-api-2\"", "name = \"maas-api-1\"");
    let r = report(&text);
    let lines: Vec<&str> = r.lines().filter(|l| l.starts_with("error")).collect();
    assert_eq!(lines.len(), 5, "{r}");
    assert!(lines[0].contains(":6:12: priority must be"), "{r}");
    assert!(
        lines[1].contains(":7:13: auth_pass must be 1 to 8 bytes"),
        "{r}"
    );
    assert!(
        lines[2].contains(":23:8: server name `maas-api-1` is used twice"),
        "{r}"
    );
    assert!(
        lines[3].contains(":25:10: weight must be 0..=256, got 1000"),
        "{r}"
    );
    assert!(lines[4].contains(":26:1: unknown field `colour`"), "{r}");
}

#[test]
fn cross_block_checks() {
    let text = format!(
        "{GOOD}\n[[frontend]]\nname = \"maas\"\nbind = [\"127.0.0.1:8080\"]\n[[frontend.server]]\nname = \"a\"\naddress = \"10.0.0.1:1\"\n"
    );
    let r = report(&text);
    assert!(r.contains("frontend name `maas` is used twice"), "{r}");
    assert!(
        r.contains("bind 127.0.0.1:8080 overlaps 0.0.0.0:8080"),
        "{r}"
    );
}

#[test]
fn missing_required_key_and_empty_frontend() {
    let text = "[[vrrp]]\nname = \"x\"\ninterface = \"lo\"\nvirtual_ipaddresses = [\"10.0.0.1\"]\n\n[[frontend]]\nname = \"f\"\n";
    let r = report(text);
    assert!(r.contains("missing field `virtual_router_id`"), "{r}");
    assert!(
        r.contains("frontend `f` needs at least one [[frontend.server]]"),
        "{r}"
    );
}

#[test]
fn v2_interval_must_be_whole_seconds_and_track_backends_must_exist() {
    let text = GOOD.replace(
        "priority = 150",
        "priority = 150\nadvert_interval = \"500ms\"\ntrack_backends = { frontend = \"nope\" }",
    );
    let r = report(&text);
    assert!(
        r.contains(":7:19: `advert_interval` is 500ms: VRRPv2 needs whole seconds"),
        "{r}"
    );
    assert!(r.contains("track_backends names frontend `nope`"), "{r}");
}

#[test]
fn syntax_error_is_located() {
    let r = report("[[frontend]\nname = \"x\"\n");
    assert!(r.starts_with("error: maas-vip.toml:1:"), "{r}");
}

#[test]
fn host_facts_are_warnings() {
    let text = GOOD.replace("interface = \"lo\"", "interface = \"nosuch0\"");
    let r = report(&text);
    assert!(
        r.starts_with("OK\nwarning: maas-vip.toml:4:13: interface `nosuch0` does not exist"),
        "{r}"
    );
}

#[test]
fn proxy_only_and_vrrp_only_configs() {
    let proxy_only = "[[frontend]]\nname = \"m\"\nbind = [\"127.0.0.1:8080\"]\n[[frontend.server]]\nname = \"a\"\naddress = \"10.0.0.1:5240\"\n";
    assert!(report(proxy_only).starts_with("OK"));
    let vrrp_only = "[[vrrp]]\nname = \"x\"\ninterface = \"lo\"\nvirtual_router_id = 1\nvirtual_ipaddresses = [\"10.0.0.1/32\"]\n[admin]\nenabled = false\n";
    assert!(report(vrrp_only).starts_with("OK"), "{}", report(vrrp_only));
}

#[test]
fn a_world_readable_file_with_a_secret_gets_a_warning() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("maas-vip-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("maas-vip.toml");
    std::fs::write(&path, GOOD).expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let (_, r) = load(&path).expect("valid");
    assert!(
        r.to_string()
            .contains("holds auth_pass and every user can read it (mode 644)"),
        "{r}"
    );
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let (_, r) = load(&path).expect("valid");
    assert!(!r.to_string().contains("every user can read it"), "{r}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unknown_script_user_is_a_warning() {
    let text = GOOD.replace(
        "priority = 150",
        "priority = 150\nscript_user = \"no-such-user-here\"",
    );
    let r = report(&text);
    assert!(r.starts_with("OK"), "{r}");
    assert!(
        r.contains(":7:15: script_user `no-such-user-here`: no such user"),
        "{r}"
    );
}

const IPV6: &str = r#"
[[frontend]]
name = "maas"
bind = ["[::]:80"]

[[frontend.server]]
name = "maas-api-1"
address = "[2001:db8::11]:5240"

[[frontend]]
name = "api6"
bind = ["[2001:db8::100]:8080", "0.0.0.0:8080"]
mode = "http"
check = { kind = "http", path = "/MAAS/api/2.0/version/" }

[[frontend.server]]
name = "maas-api-1"
address = "[2001:db8::11]:5240"

[[frontend.server]]
name = "maas-api-2"
address = "[fe80::12%2]:5240"
"#;

#[test]
fn ipv6_binds_and_servers_are_accepted() {
    let (c, r) = parse(Path::new("x.toml"), IPV6.to_string()).expect("valid");
    assert!(!r.has_errors(), "{r}");
    assert_eq!(c.frontend[0].bind.get_ref()[0].to_string(), "[::]:80");
    assert_eq!(
        c.frontend[1].server[0].address.get_ref().to_string(),
        "[2001:db8::11]:5240"
    );
}

#[test]
fn bad_ipv6_binds_and_servers_are_located() {
    let text = IPV6
        .replace(
            r#"bind = ["[::]:80"]"#,
            r#"bind = ["[::ffff:10.0.0.100]:80", "[fe80::1]:81", "[ff02::1]:82"]"#,
        )
        .replacen("[2001:db8::11]:5240", "[::ffff:10.0.0.11]:5240", 1)
        .replace("[fe80::12%2]:5240", "[fe80::12]:5240");
    let r = report(&text);
    for want in [
        "x.toml:4:8: bind [::ffff:10.0.0.100]:80 is an IPv4 address in IPv6 form: write 10.0.0.100:80",
        "x.toml:4:8: bind [fe80::1]:81 is link-local: give its interface index too",
        "x.toml:4:8: bind [ff02::1]:82 is a multicast address",
        "x.toml:8:11: server address [::ffff:10.0.0.11]:5240 is an IPv4 address in IPv6 form: write 10.0.0.11:5240",
        "x.toml:22:11: server address [fe80::12]:5240 is link-local",
    ] {
        assert!(r.contains(want.trim_start_matches("x.toml")), "{want}\n{r}");
    }
    // The v6 wildcard and a v6 address on one port overlap; an IPv4 bind beside them does not.
    let text = IPV6.replace(r#"bind = ["[::]:80"]"#, r#"bind = ["[::]:8080"]"#);
    let r = report(&text);
    assert!(
        r.contains("bind [2001:db8::100]:8080 overlaps [::]:8080 of frontend `maas`"),
        "{r}"
    );
    assert!(!r.contains("0.0.0.0:8080 overlaps"), "{r}");
}

#[test]
fn unbracketed_ipv6_bind_says_how_to_write_it() {
    for (bind, want) in [
        (":::80", r#"an IPv6 address goes in brackets, as "[::]:80""#),
        ("2001:db8::100:80", r#"as "[2001:db8::100]:80""#),
        ("*:80", r#"expected "address:port""#),
    ] {
        let text = IPV6.replace(r#""[::]:80""#, &format!("{bind:?}"));
        let r = report(&text);
        assert!(
            r.contains(&format!("bind address `{bind}` is not valid")) && r.contains(want),
            "{bind}: {r}"
        );
        assert!(r.contains(":4:"), "located on line 4: {r}");
    }
}

#[test]
fn announce_block_coexists_with_vrrp_for_other_vips() {
    let text = format!(
        r#"{GOOD}
[[announce]]
name = "bgp"
virtual_ipaddresses = ["10.0.1.100"]
track_frontends = ["maas"]
drain_delay = "3s"

[[announce.track_script]]
name = "chk_frr"
command = ["pidof", "bgpd"]
rise = 2
"#
    );
    let (c, r) = parse(Path::new("x.toml"), text).expect("valid");
    assert!(!r.has_errors(), "{r}");
    let a = &c.announce[0];
    assert_eq!(a.interface.get_ref(), announce::config::DEFAULT_INTERFACE);
    assert_eq!(a.drain_delay, Duration::from_secs(3));
    assert_eq!(a.announce_delay, Duration::from_secs(2));
    assert_eq!(a.track_script[0].rise, 2);
}

#[test]
fn announce_errors_are_located() {
    let text = format!(
        r#"{GOOD}
[[announce]]
name = "bgp"
virtual_ipaddresses = ["10.0.0.100/32"]
track_frontends = ["nonesuch"]
interface = "lo"

[[announce]]
name = "bgp"
virtual_ipaddresses = ["10.0.2.0/24"]
drain_delay = "soon"
typo = 1
"#
    );
    let got = report(&text);
    for want in [
        "maas-vip.toml:29:23: VIP 10.0.0.100 is also a virtual address of vrrp `maas_region`",
        "maas-vip.toml:30:20: track_frontends names frontend `nonesuch`",
        "maas-vip.toml:31:13: interface `lo` is the VRRP interface of `maas_region`",
        "maas-vip.toml:35:23: \"10.0.2.0/24\": only host prefixes are announced",
        "maas-vip.toml:36:15: invalid value: string \"soon\", expected a duration",
        "maas-vip.toml:37:1: unknown field `typo`",
    ] {
        assert!(got.contains(want), "{want:?} not in:\n{got}");
    }
}

const PG: &str = r#"
[[frontend]]
name = "db"
bind = ["127.0.0.1:5433"]
balance = "first"
on_down = "shutdown_sessions"
check = { kind = "postgres", user = "maas_check", password_file = "PWFILE", interval = "1s" }

[[frontend.server]]
name = "pg1"
address = "10.0.0.21:5432"
"#;

#[test]
fn postgres_check_parses_and_reads_its_password_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let pw = dir.path().join("check.password");
    std::fs::write(&pw, "Sekr1t-pg\n").expect("write");
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let text = PG.replace("PWFILE", &pw.display().to_string());
    let (c, r) = parse(Path::new("x.toml"), text.clone()).expect("valid");
    assert!(r.findings.is_empty(), "{r}");
    let f = &c.frontend[0];
    assert_eq!(f.balance, lb::Balance::First);
    assert_eq!(f.on_down, lb::OnDown::ShutdownSessions);
    let check = &f.check;
    assert_eq!(check.kind, healthcheck::CheckKind::Postgres);
    assert_eq!(check.database(), "postgres");
    assert_eq!(check.require, healthcheck::postgres::Require::Primary);
    let pg = check.postgres().expect("a postgres check");
    assert_eq!(pg.user(), "maas_check");
    assert!(!format!("{check:?} {pg:?}").contains("Sekr1t"), "redacted");

    // Readable by every user: a warning that names the file, never its content.
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = report(&text);
    assert!(
        out.starts_with("OK\nwarning: maas-vip.toml:3:8: password file"),
        "{out}"
    );
    assert!(out.contains("readable by every user (mode 0644)"), "{out}");
    assert!(!out.contains("Sekr1t"), "{out}");

    // Missing: a warning too (a fact of the host), and the check runs without a password.
    let out = report(&PG.replace("PWFILE", "/nonexistent/pw"));
    assert!(
        out.starts_with("OK\nwarning: maas-vip.toml:3:8: password file /nonexistent/pw"),
        "{out}"
    );
}

#[test]
fn postgres_check_errors_are_located() {
    let out = report(&PG.replace("password_file = \"PWFILE\", ", "require = \"master\", "));
    assert!(
        out.contains("maas-vip.toml:7:61: unknown variant `master`"),
        "{out}"
    );
    let out = report(&PG.replace("user = \"maas_check\", password_file = \"PWFILE\", ", ""));
    assert!(
        out.contains("maas-vip.toml:3:8: check kind \"postgres\" needs `user`"),
        "{out}"
    );
    let out = report(&PG.replace("kind = \"postgres\"", "kind = \"tcp\""));
    assert!(
        out.contains("check `user` is for kind = \"postgres\" only"),
        "{out}"
    );
    assert!(
        out.contains("check `password_file` is for kind = \"postgres\" only"),
        "{out}"
    );
    let out = report(&PG.replace("balance = \"first\"", "balance = \"leastconn\""));
    assert!(out.contains("maas-vip.toml:5:"), "{out}");
    let out = report(&PG.replace("on_down = \"shutdown_sessions\"", "on_down = \"cut\""));
    assert!(
        out.contains(
            "maas-vip.toml:6:11: unknown variant `cut`, expected `keep` or `shutdown_sessions`"
        ),
        "{out}"
    );
}

#[test]
fn shipped_postgres_example_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/maas-vip-postgres.toml");
    match parse(&path, std::fs::read_to_string(&path).expect("read")) {
        Ok((c, _warnings)) => {
            let f = &c.frontend[0];
            assert_eq!(f.check.kind, healthcheck::CheckKind::Postgres);
            assert_eq!(f.balance, lb::Balance::First);
            assert_eq!(f.on_down, lb::OnDown::ShutdownSessions);
        }
        Err(r) => panic!("conf/maas-vip-postgres.toml is invalid:\n{r}"),
    }
}

/// Every message of a report, errors and warnings, without the source excerpts.
fn messages(text: &str) -> Vec<String> {
    report(text)
        .lines()
        .filter(|l| l.starts_with("error") || l.starts_with("warning"))
        .map(str::to_string)
        .collect()
}

#[test]
fn one_bad_server_address_is_one_problem_and_the_next_server_is_still_checked() {
    let text = GOOD
        .replace("address = \"10.0.0.11:5240\"", "address = \"10.0.0.11\"")
        .replace("weight = 2", "wieght = 2");
    assert_eq!(
        messages(&text),
        [
            "error: maas-vip.toml:20:11: server address `10.0.0.11` needs a port (expected \
             `host:port`, `ip:port` or `[ipv6]:port`, e.g. \"maas-api-1.example:5240\")",
            "error: maas-vip.toml:25:1: unknown field `wieght`, expected one of `name`, \
             `address`, `hash_key`, `weight`, `check`, `backup`, `disabled`, `check_override`",
        ]
    );
}

#[test]
fn a_bad_required_value_is_not_also_a_missing_key() {
    // Wrong types in required keys of both servers, a typo in the first, an unparsable VIP
    // and a bad priority: each once, nothing about missing keys or an empty frontend.
    let text = GOOD
        .replace(
            "address = \"10.0.0.11:5240\"",
            "address = 5240\ncheck = \"yes\"",
        )
        .replace("name = \"maas-api-2\"", "name = 2")
        .replace("\"10.0.0.100/24\"", "\"10.0.0.300/24\"")
        .replace("priority = 150", "priority = 0");
    assert_eq!(
        messages(&text),
        [
            "error: maas-vip.toml:6:12: priority must be 1..=254 (255 only for the address \
             owner), got 0",
            "error: maas-vip.toml:8:23: `10.0.0.300/24` is not an IP address (expected e.g. \
             \"10.0.0.100/24\" or \"2001:db8::100/64\")",
            "error: maas-vip.toml:20:11: invalid type: integer `5240`, expected a string",
            "error: maas-vip.toml:21:9: invalid type: string \"yes\", expected a boolean",
            "error: maas-vip.toml:24:8: invalid type: integer `2`, expected a string",
        ],
        "{}",
        report(&text)
    );
}

#[test]
fn an_ipv6_vip_in_a_v2_instance_is_one_problem() {
    let text = GOOD.replace("\"10.0.0.100/24\"", "\"fd00::100/64\"");
    let m = messages(&text);
    assert_eq!(m.len(), 1, "{m:#?}");
    assert!(
        m[0].contains(":8:23: IPv6 virtual addresses need `version = 3`"),
        "{m:#?}"
    );
}

#[test]
fn host_names_are_addresses_and_bad_ones_are_located() {
    let text = GOOD
        .replace("\"10.0.0.11:5240\"", "\"maas-api-1.example:5240\"")
        .replace("\"10.0.0.12:5240\"", "\"localhost:5240\"");
    let (c, r) = parse(Path::new("x.toml"), text).expect("valid");
    assert!(r.findings.is_empty(), "{r}");
    assert_eq!(
        c.frontend[0].server[0].target(),
        Ok(healthcheck::Target::Name {
            host: "maas-api-1.example".into(),
            port: 5240
        })
    );
    for (bad, why) in [
        ("maas-api-1.example", "needs a port"),
        (
            "maas_api_1:5240",
            "is neither an IP address nor a host name",
        ),
        ("10.0.0.1:99999", "port `99999` must be 1..=65535"),
        ("[fd00::1]", "needs a port"),
    ] {
        let text = GOOD.replace("10.0.0.11:5240", bad);
        let m = messages(&text);
        assert_eq!(m.len(), 1, "{bad}: {m:#?}");
        assert!(
            m[0].starts_with("error: maas-vip.toml:20:11: "),
            "{bad}: {m:#?}"
        );
        assert!(m[0].contains(why), "{bad}: {m:#?}");
    }
}

#[test]
fn source_balance_over_loopback_servers_is_a_warning() {
    let text = GOOD
        .replace(
            "bind = [\"0.0.0.0:8080\"]",
            "bind = [\"0.0.0.0:8080\"]\nbalance = \"source\"",
        )
        .replace("\"10.0.0.11:5240\"", "\"localhost:5240\"")
        .replace(
            "\"10.0.0.12:5240\"",
            "\"127.0.1.1:5240\"\nhash_key = \"region-2\"",
        );
    let r = report(&text);
    assert!(r.starts_with("OK\n"), "{r}");
    let m = messages(&text);
    assert_eq!(m.len(), 2, "{r}");
    assert!(
        m[0].starts_with(
            "warning: maas-vip.toml:21:11: server `maas-api-1` at localhost:5240 \
                          is this host's loopback under balance = \"source\": a different \
                          region on each host, so clients change region after a takeover"
        ),
        "{r}"
    );
    assert!(
        m[1].starts_with("warning: maas-vip.toml:25:11: server `maas-api-2` at 127.0.1.1:5240"),
        "{r}"
    );
    // Two servers that hash alike: the second would get no client.
    let twice = GOOD
        .replace(
            "bind = [\"0.0.0.0:8080\"]",
            "bind = [\"0.0.0.0:8080\"]\nbalance = \"source\"",
        )
        .replace("\"10.0.0.12:5240\"", "\"10.0.0.11:5240\"");
    assert_eq!(
        messages(&twice),
        [
            "warning: maas-vip.toml:25:11: servers `maas-api-1` and `maas-api-2` hash alike \
          (`10.0.0.11:5240`) under balance = \"source\": `maas-api-2` gets no client; give one \
          a `hash_key`"
        ],
        "{}",
        report(&twice)
    );
    // Round robin does not care.
    let rr = text.replace("balance = \"source\"", "balance = \"roundrobin\"");
    assert_eq!(report(&rr), "OK\n");
}

#[test]
fn hash_key_and_resolve_interval_are_checked() {
    let text = GOOD
        .replace(
            "bind = [\"0.0.0.0:8080\"]",
            "bind = [\"0.0.0.0:8080\"]\nresolve_interval = \"10ms\"",
        )
        .replace("weight = 2", "weight = 2\nhash_key = \" \"");
    assert_eq!(
        messages(&text),
        [
            "error: maas-vip.toml:17:20: resolve_interval must be 100ms..=24h, got 10ms",
            "error: maas-vip.toml:27:12: `hash_key` must not be empty",
        ],
        "{}",
        report(&text)
    );
}

#[test]
fn overlap_rules() {
    let a = |s: &str| s.parse::<SocketAddr>().expect("address");
    // Frontend binds: same port and family, one address covering the other.
    assert!(binds_overlap(&a("0.0.0.0:80"), &a("10.0.0.1:80")));
    assert!(binds_overlap(&a("[2001:db8::1]:80"), &a("[::]:80")));
    assert!(!binds_overlap(&a("0.0.0.0:80"), &a("[::]:80")));
    assert!(!binds_overlap(&a("10.0.0.1:80"), &a("10.0.0.2:80")));
    assert!(!binds_overlap(&a("0.0.0.0:80"), &a("0.0.0.0:81")));
    // The admin endpoint: a frontend's wildcard of either family covers it, its own does not.
    let admin = DEFAULT_ADMIN_BIND;
    assert!(admin_overlaps(&admin, &a("0.0.0.0:5249")));
    assert!(admin_overlaps(&admin, &a("[::]:5249")));
    assert!(admin_overlaps(&admin, &a("127.0.0.1:5249")));
    assert!(!admin_overlaps(&admin, &a("10.0.0.1:5249")));
    assert!(!admin_overlaps(&a("0.0.0.0:5249"), &a("10.0.0.1:5249")));
    assert!(!admin_overlaps(&admin, &a("0.0.0.0:5250")));
}

#[test]
fn blank_blocks_hold_the_defaults_a_file_gets() {
    let text = "[[vrrp]]\nname = \"v\"\ninterface = \"eth0\"\nvirtual_router_id = 1\n\
                virtual_ipaddresses = [\"10.0.0.100/24\"]\n\
                [[frontend]]\nname = \"f\"\n[[frontend.server]]\nname = \"s\"\n\
                address = \"10.0.0.1:5240\"\n";
    let (c, _) = parse(Path::new("t.toml"), text.into()).expect("valid");
    let mut f = blank_frontend();
    f.name = Spanned::new(0..0, "f".into());
    let mut s = blank_server();
    s.name = Spanned::new(0..0, "s".into());
    s.address = Spanned::new(0..0, "10.0.0.1:5240".into());
    f.server.push(s);
    assert_eq!(c.frontend[0], f);
    let mut v = blank_vrrp();
    v.name = Spanned::new(0..0, "v".into());
    v.interface = Spanned::new(0..0, "eth0".into());
    v.virtual_ipaddresses = Spanned::new(
        0..0,
        vec![vrrp::Vip::parse("10.0.0.100/24").expect("a VIP")],
    );
    assert_eq!(*c.vrrp[0], v);
    assert!(ValidVrrp::try_from(blank_vrrp()).is_err());
}

#[test]
fn io_is_epoll_by_default_and_a_bad_value_names_its_line() {
    let (c, _) = parse(Path::new("x.toml"), GOOD.to_string()).expect("valid");
    assert_eq!(c.global.io, lb::Io::Epoll);
    let text = format!("io = \"io_uring\"\n{GOOD}");
    let (c, _) = parse(Path::new("x.toml"), text).expect("valid");
    assert_eq!(c.global.io, lb::Io::IoUring);
    let r = report(&format!("io = \"uring\"\n{GOOD}"));
    assert!(r.starts_with("error: maas-vip.toml:1:6: "), "{r}");
    assert!(r.contains("io_uring"), "names the values it takes: {r}");
}
