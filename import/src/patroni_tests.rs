//! Patroni's HAProxy pattern (issue 15): the primary found by an HTTP check of Patroni's REST
//! API, sessions cut when it is marked down.

use super::*;
use config::parse;

const PATRONI: &str = include_str!("../../tests/fixtures/import/patroni-haproxy.cfg");

#[test]
fn patroni_pattern_imports_to_an_options_check_on_8008_with_shutdown_sessions() {
    let out = import(None, Some((Path::new("haproxy.cfg"), PATRONI))).expect("imports");
    let (c, _) = parse(Path::new("imported.toml"), out.toml.clone())
        .unwrap_or_else(|r| panic!("rejected:\n{r}\n{}", out.toml));
    let f = &c.frontend[0];
    assert_eq!(f.name.get_ref(), "primary");
    assert_eq!(f.mode, lb::Mode::Tcp);
    assert_eq!(f.on_down, lb::OnDown::ShutdownSessions, "{}", out.toml);
    assert_eq!(f.check.kind, healthcheck::CheckKind::Http);
    assert_eq!(f.check.method, healthcheck::HttpMethod::Options);
    assert_eq!(f.check.path, "/primary");
    assert_eq!(f.check.expect_status, Some(200));
    assert_eq!(f.check.interval, Duration::from_secs(3));
    assert_eq!((f.check.rise, f.check.fall), (2, 3));
    assert_eq!(f.timeout_server, Duration::from_secs(30 * 60));
    assert_eq!(f.server.len(), 3);
    for s in &f.server {
        assert!(s.check);
        assert_eq!(s.check_override.port, Some(8008), "{}", s.name.get_ref());
    }
    assert!(
        out.toml
            .contains("method = \"OPTIONS\", path = \"/primary\""),
        "{}",
        out.toml
    );
}

#[test]
fn shutdown_sessions_on_some_servers_applies_to_all_with_a_note() {
    let cfg = PATRONI.replace(
        "default-server inter 3s fall 3 rise 2 on-marked-down shutdown-sessions",
        "default-server inter 3s fall 3 rise 2",
    );
    let cfg = cfg.replace(
        "server pg1 10.0.0.21:5432 maxconn 100 check port 8008",
        "server pg1 10.0.0.21:5432 check port 8008 on-marked-down shutdown-sessions",
    );
    let out = import(None, Some((Path::new("haproxy.cfg"), &cfg))).expect("imports");
    assert!(
        out.toml.contains("on_down = \"shutdown_sessions\""),
        "{}",
        out.toml
    );
    assert!(
        out.notes
            .iter()
            .any(|n| n.contains("is on 1 of the 3 servers")),
        "{:?}",
        out.notes
    );
    let plain = PATRONI.replace(" on-marked-down shutdown-sessions", "");
    let out = import(None, Some((Path::new("haproxy.cfg"), &plain))).expect("imports");
    assert!(!out.toml.contains("on_down"), "{}", out.toml);
}

#[test]
fn balance_first_carries_over() {
    let cfg = PATRONI.replace(
        "    option httpchk OPTIONS /primary\n",
        "    balance first\n    option httpchk OPTIONS /primary\n",
    );
    let out = import(None, Some((Path::new("haproxy.cfg"), &cfg))).expect("imports");
    let (c, _) = parse(Path::new("imported.toml"), out.toml.clone())
        .unwrap_or_else(|r| panic!("rejected:\n{r}\n{}", out.toml));
    assert_eq!(c.frontend[0].balance, lb::Balance::First, "{}", out.toml);
    assert!(
        !out.notes.iter().any(|n| n.contains("balance")),
        "{:?}",
        out.notes
    );
}
