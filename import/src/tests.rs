use super::*;
use config::{parse, Config};

const GUIDE_KEEPALIVED: &str = include_str!("../../tests/fixtures/import/guide-keepalived.conf");
const GUIDE_HAPROXY: &str = include_str!("../../tests/fixtures/import/guide-haproxy.cfg");
const LISTEN: &str = include_str!("../../tests/fixtures/import/listen.cfg");
const HTTPCHK: &str = include_str!("../../tests/fixtures/import/httpchk.cfg");
const VARIANTS_KEEPALIVED: &str =
    include_str!("../../tests/fixtures/import/variants-keepalived.conf");
const VARIANTS_HAPROXY: &str = include_str!("../../tests/fixtures/import/variants-haproxy.cfg");
const TLS_HAPROXY: &str = include_str!("../../tests/fixtures/import/tls-haproxy.cfg");

fn imp(k: Option<&str>, h: Option<&str>) -> Result<Imported, ImportError> {
    import(
        k.map(|t| (Path::new("keepalived.conf"), t)),
        h.map(|t| (Path::new("haproxy.cfg"), t)),
    )
}

/// Imports and feeds the result to the project's own validation, which must accept it.
fn valid(k: Option<&str>, h: Option<&str>) -> (Config, Imported) {
    let out = imp(k, h).expect("imports");
    match parse(Path::new("imported.toml"), out.toml.clone()) {
        Ok((c, _warnings)) => (c, out),
        Err(report) => panic!(
            "import output rejected:\n{report}\n--- output ---\n{}",
            out.toml
        ),
    }
}

fn has_note(out: &Imported, needle: &str) {
    assert!(
        out.notes.iter().any(|n| n.contains(needle)),
        "no note contains {needle:?}; notes:\n{}",
        out.notes.join("\n")
    );
    // Every note is in the TOML too, as a comment.
    for n in &out.notes {
        assert!(
            out.toml.contains(&format!("#   {n}\n")),
            "note missing from output: {n}"
        );
    }
}

#[test]
fn import_guide_setup_validates() {
    let (c, out) = valid(Some(GUIDE_KEEPALIVED), Some(GUIDE_HAPROXY));
    assert_eq!(c.vrrp.len(), 1);
    let v = &c.vrrp[0];
    assert_eq!(v.name.get_ref(), "maas_region");
    assert_eq!(v.interface.get_ref(), "eth0");
    assert_eq!(v.virtual_router_id, 51);
    assert_eq!(*v.priority.get_ref(), 150);
    assert_eq!(v.state, vrrp::InitialState::Master);
    assert_eq!(*v.advert_interval.get_ref(), Duration::from_secs(1));
    assert_eq!(
        v.auth_pass.as_ref().map(|p| p.get_ref().as_str()),
        Some("s3cret")
    );
    assert_eq!(
        v.virtual_ipaddresses.get_ref()[0].to_string(),
        "10.0.0.100/24"
    );
    assert!(v.preempt);
    let tb = v
        .track_backends
        .as_ref()
        .expect("chk_haproxy becomes track_backends");
    assert_eq!(tb.frontend.get_ref(), "maas");
    // 150 - 51 = 99: below keepalived's default 100 assumed for the peers (issue 13).
    assert_eq!(tb.weight, -51);
    // chk_haproxy is gone, chk_named is carried over as an argv that needs no CAP_KILL.
    assert_eq!(v.track_script.len(), 1);
    let ts = &v.track_script[0];
    assert_eq!(ts.name.get_ref(), "chk_named");
    assert_eq!(ts.command.get_ref(), &["pidof", "named"]);
    assert_eq!(ts.interval, Duration::from_secs(2));
    assert_eq!(ts.timeout, Duration::from_secs(2));
    assert_eq!((ts.weight, ts.rise, ts.fall), (0, 1, 1));

    assert_eq!(c.frontend.len(), 1);
    let f = &c.frontend[0];
    assert_eq!(f.name.get_ref(), "maas");
    assert_eq!(
        f.bind.get_ref(),
        &["0.0.0.0:80".parse::<SocketAddr>().expect("addr")]
    );
    assert_eq!(f.mode, lb::Mode::Http);
    assert_eq!(f.balance, lb::Balance::Source);
    assert_eq!(f.retries, 3);
    assert!(f.redispatch);
    assert!(f.http_server_close);
    assert!(!f.forwardfor, "the guide has no option forwardfor");
    assert_eq!(f.timeout_connect, Duration::from_secs(5));
    assert_eq!(f.timeout_client, Duration::from_secs(50));
    assert_eq!(f.timeout_server, Duration::from_secs(90));
    assert_eq!(f.check.kind, healthcheck::CheckKind::Tcp);
    assert_eq!(
        (f.check.interval, f.check.rise, f.check.fall),
        (Duration::from_secs(2), 2, 3)
    );
    let servers: Vec<(String, String)> = f
        .server
        .iter()
        .map(|s| (s.name.get_ref().clone(), s.address.get_ref().to_string()))
        .collect();
    assert_eq!(
        servers,
        [
            ("localhost", "127.0.0.1:5240"),
            ("maas-api-1", "10.0.0.11:5240"),
            ("maas-api-2", "10.0.0.12:5240"),
            ("maas-api-3", "10.0.0.13:5240"),
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    assert!(f
        .server
        .iter()
        .all(|s| s.check && s.weight == 1 && !s.backup));

    has_note(&out, "keepalived.conf:8: vrrp_script `chk_haproxy` (`killall -0 haproxy`) is dropped: maas-vip's own proxy makes it unnecessary");
    has_note(
        &out,
        "haproxy.cfg:34: HAProxy ignores `retries 3` in a frontend",
    );
    has_note(
        &out,
        "haproxy.cfg:35: HAProxy ignores `option redispatch` in a frontend",
    );
    has_note(&out, "haproxy.cfg:42: `hash-type consistent`: maas-vip's balance source is always a consistent hash");
    has_note(
        &out,
        "haproxy.cfg:43: server `localhost`: `localhost:5240` written as 127.0.0.1:5240",
    );
    has_note(
        &out,
        "haproxy.cfg:3: global `log /dev/log local0` not carried over",
    );
    has_note(&out, "haproxy.cfg:6: global `stats socket");
    has_note(&out, "haproxy.cfg:17: `log global` not carried over");
    has_note(&out, "haproxy.cfg:19: `option httplog` not carried over");
    has_note(&out, "haproxy.cfg:30: `errorfile 504");
    has_note(&out, "keepalived.conf:5: global_defs `router_id`");
    // Each global line is noted: 12 lines.
    let global = out
        .notes
        .iter()
        .filter(|n| n.contains(": global `"))
        .count();
    assert_eq!(global, 12, "{:#?}", out.notes);
    assert!(out
        .toml
        .contains("track_backends = { frontend = \"maas\", weight = -51 }"));
    has_note(
        &out,
        "keepalived.conf:13: vrrp_script `chk_named`: `killall -0 named` becomes `pidof named`",
    );
    has_note(
        &out,
        "keepalived.conf:18: vrrp_instance `maas_region`: track_backends weight -51: priority \
         150 - 51 = 99 is below keepalived's default priority 100",
    );
    has_note(
        &out,
        "keepalived.conf:18: track_script `chk_named` keeps weight 0: failing puts the instance \
         in FAULT",
    );
}

#[test]
fn import_guide_output_is_stable() {
    let out = imp(Some(GUIDE_KEEPALIVED), Some(GUIDE_HAPROXY)).expect("imports");
    let body: String = out
        .toml
        .lines()
        .skip_while(|l| l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        body,
        r#"
[[vrrp]]
name = "maas_region"
interface = "eth0"
virtual_router_id = 51
priority = 150
state = "MASTER"
advert_interval = "1s"
auth_pass = "s3cret"
virtual_ipaddresses = ["10.0.0.100/24"]
# Replaces the HAProxy check script: proxy and VRRP share one process here, and the
# priority drops by the weight while this frontend can reach no region.
track_backends = { frontend = "maas", weight = -51 }

[[vrrp.track_script]]
name = "chk_named"
command = ["pidof", "named"]
interval = "2s"
timeout = "2s"
weight = 0
rise = 1
fall = 1

[[frontend]]
name = "maas"
bind = ["0.0.0.0:80"]
mode = "http"
balance = "source"
retries = 3
redispatch = true
timeout_connect = "5s"
timeout_client = "50s"
timeout_server = "90s"
http_server_close = true
forwardfor = false
# A TCP check only proves the region's nginx is up; kind = "http" with
# path = "/MAAS/api/2.0/version/" also proves regiond and PostgreSQL.
check = { kind = "tcp", interval = "2s", timeout = "2s", rise = 2, fall = 3 }

[[frontend.server]]
name = "localhost"
address = "127.0.0.1:5240"

[[frontend.server]]
name = "maas-api-1"
address = "10.0.0.11:5240"

[[frontend.server]]
name = "maas-api-2"
address = "10.0.0.12:5240"

[[frontend.server]]
name = "maas-api-3"
address = "10.0.0.13:5240"
"#
    );
}

#[test]
fn import_listen_section_with_weights_backup_disabled() {
    let (c, out) = valid(None, Some(LISTEN));
    assert!(c.vrrp.is_empty());
    let f = &c.frontend[0];
    assert_eq!(f.name.get_ref(), "maas");
    let binds: Vec<String> = f.bind.get_ref().iter().map(|b| b.to_string()).collect();
    assert_eq!(binds, ["0.0.0.0:80", "10.0.0.100:8080", "10.0.0.100:8081"]);
    assert_eq!(f.mode, lb::Mode::Tcp);
    assert_eq!(f.balance, lb::Balance::Roundrobin);
    assert_eq!((f.retries, f.redispatch, f.maxconn), (2, true, 4000));
    assert_eq!(f.timeout_connect, Duration::from_secs(3));
    assert_eq!(f.timeout_client, Duration::from_secs(60));
    assert_eq!(f.timeout_server, Duration::from_secs(120));
    assert_eq!(f.timeout_tunnel, Duration::from_secs(3600));
    // default-server inter 1s rise 2 fall 2.
    assert_eq!(f.check.kind, healthcheck::CheckKind::Tcp);
    assert_eq!(
        (f.check.interval, f.check.timeout),
        (Duration::from_secs(1), Duration::from_secs(1))
    );
    assert_eq!((f.check.rise, f.check.fall), (2, 2));
    let s: Vec<(u32, bool, bool, bool)> = f
        .server
        .iter()
        .map(|s| (s.weight, s.check, s.backup, s.disabled))
        .collect();
    assert_eq!(
        s,
        [
            (3, true, false, false),
            (1, true, true, false),
            (1, false, false, true),
            (0, true, false, false)
        ]
    );
    // r2's own port, inter and fall become its check_override.
    let o = &f.server[1].check_override;
    assert_eq!(o.port, Some(5241));
    assert_eq!(o.interval, Some(Duration::from_secs(5)));
    assert_eq!(o.timeout, Some(Duration::from_secs(5)));
    assert_eq!((o.rise, o.fall), (None, Some(4)));
    assert_eq!(
        f.server[0].check_override,
        healthcheck::CheckOverride::default()
    );
    assert!(out.toml.contains(
        "check_override = { port = 5241, interval = \"5s\", timeout = \"5s\", fall = 4 }"
    ));
    assert!(out.toml.contains("mode = \"tcp\""));
    assert!(!out.toml.contains("http_server_close"));
}

#[test]
fn import_httpchk_and_units() {
    let (c, out) = valid(None, Some(HTTPCHK));
    let f = &c.frontend[0];
    assert_eq!(f.mode, lb::Mode::Http);
    assert!(f.forwardfor);
    assert!(!f.http_server_close);
    assert_eq!(f.maxconn, 20000);
    assert_eq!(f.timeout_connect, Duration::from_millis(500));
    assert_eq!(f.timeout_server, Duration::from_secs(90));
    assert_eq!(f.check.kind, healthcheck::CheckKind::Http);
    assert_eq!(f.check.path, "/MAAS/api/2.0/version/");
    assert_eq!(f.check.expect_status, Some(200));
    assert_eq!(
        f.redirect_root.as_ref().map(|r| r.get_ref().as_str()),
        Some("/MAAS/")
    );
    assert_eq!(f.check.interval, Duration::from_secs(3));
    assert_eq!(f.check.fast_interval, Some(Duration::from_secs(1)));
    assert_eq!(f.check.down_interval, Some(Duration::from_secs(5)));
    assert_eq!(f.check.timeout, Duration::from_millis(1500));
    assert_eq!((f.check.rise, f.check.fall), (3, 2));
    // The host-named server cannot be carried over.
    assert_eq!(f.server.len(), 2);
    has_note(
        &out,
        "haproxy.cfg:12: `acl is_api path_beg /MAAS/api` is not supported",
    );
    has_note(
        &out,
        "haproxy.cfg:13: `use_backend maas if is_api`: conditional backend choice",
    );
    has_note(&out, "haproxy.cfg:14: `http-request set-header");
    has_note(&out, "haproxy.cfg:15: `http-request redirect location /MAAS/ code 301 if { path / }`: the status code");
    has_note(
        &out,
        "haproxy.cfg:16: `redirect prefix /x if { path /y }` is not supported",
    );
    has_note(&out, "haproxy.cfg:21: `option httpchk GET /MAAS/api/2.0/version/ HTTP/1.1`: version and headers `HTTP/1.1`");
    has_note(
        &out,
        "haproxy.cfg:26: server `maas-api-2` options `maxconn 100` not carried over",
    );
    has_note(&out, "haproxy.cfg:27: server `maas-api-3` not carried over: `maas-api-3.example.com` is a host name");
    has_note(
        &out,
        "haproxy.cfg:29: backend `unused` is used by no frontend",
    );
}

#[test]
fn import_variants_validate_with_notes() {
    let (c, out) = valid(Some(VARIANTS_KEEPALIVED), Some(VARIANTS_HAPROXY));
    let v = &c.vrrp[0];
    assert_eq!(
        c.vrrp.len(),
        1,
        "the instance without virtual_router_id is left out"
    );
    assert_eq!(v.interface.get_ref(), "ens3");
    assert_eq!(v.state, vrrp::InitialState::Backup);
    assert!(!v.preempt);
    assert_eq!(v.preempt_delay, Duration::from_secs(30));
    assert_eq!(v.garp_master_delay, Duration::from_secs(2));
    assert_eq!(v.garp_master_repeat, 8);
    assert_eq!(
        v.unicast_peers,
        [
            "10.0.0.12".parse::<Ipv4Addr>().expect("ip"),
            "10.0.0.13".parse().expect("ip")
        ]
    );
    assert_eq!(
        v.auth_pass.as_ref().map(|p| p.get_ref().as_str()),
        Some("averylon")
    );
    let vips: Vec<String> = v
        .virtual_ipaddresses
        .get_ref()
        .iter()
        .map(|v| v.to_string())
        .collect();
    assert_eq!(vips, ["10.0.0.100/32", "10.0.0.101/32"]);
    let tb = v
        .track_backends
        .as_ref()
        .expect("pidof haproxy becomes track_backends");
    assert_eq!((tb.frontend.get_ref().as_str(), tb.weight), ("maas", -30));
    // keepalived's notify arguments are maas-vip's: carried over as they are.
    assert_eq!(
        v.notify.as_ref().map(|n| n.get_ref().clone()),
        Some(vec!["/usr/local/bin/notify.sh".to_string()])
    );
    assert_eq!(
        v.notify_master.as_ref().map(|n| n.get_ref().clone()),
        Some(vec!["/usr/local/bin/master.sh".to_string()])
    );
    let names: Vec<&str> = v
        .track_script
        .iter()
        .map(|t| t.name.get_ref().as_str())
        .collect();
    assert_eq!(names, ["chk_regiond", "chk_postgres"]);
    let regiond = &v.track_script[0];
    assert_eq!(regiond.command.get_ref()[..2], ["/bin/sh", "-c"]);
    assert_eq!(
        (regiond.weight, regiond.timeout, regiond.interval),
        (-40, Duration::from_secs(3), Duration::from_secs(5))
    );
    let pg = &v.track_script[1];
    assert_eq!(
        pg.command.get_ref(),
        &["/usr/local/bin/check-pg", "--port", "5432"]
    );
    assert_eq!(
        (pg.interval, pg.timeout, pg.fall),
        (Duration::from_millis(500), Duration::from_millis(500), 4)
    );
    has_note(
        &out,
        "keepalived.conf:15: vrrp_script `chk_regiond` needs a shell",
    );
    has_note(&out, "keepalived.conf:46: auth_pass longer than 8 bytes");
    has_note(
        &out,
        "keepalived.conf:49: virtual_ipaddress options `dev ens3 label ens3:vip`",
    );
    has_note(
        &out,
        "keepalived.conf:51: virtual_ipaddress fd00::100/64 is not carried over",
    );
    has_note(
        &out,
        "keepalived.conf:57: track_script `chk_missing` names no vrrp_script",
    );
    assert!(
        !out.notes.iter().any(|n| n.contains("notify")),
        "{:#?}",
        out.notes
    );
    has_note(
        &out,
        "keepalived.conf:61: vrrp_instance keyword `smtp_alert`",
    );
    has_note(
        &out,
        "keepalived.conf:39: `unicast_src_ip` is not carried over",
    );
    has_note(
        &out,
        "keepalived.conf:64: `include /etc/keepalived/conf.d/*.conf` is not followed",
    );
    has_note(&out, "keepalived.conf:66: vrrp_instance `broken` is not carried over: it needs a virtual_router_id");
    has_note(
        &out,
        "keepalived.conf:4: global_defs `enable_script_security`",
    );

    // HAProxy side: the TLS bind becomes a passthrough frontend of its own, the overlapping
    // frontend is left out.
    assert_eq!(c.frontend.len(), 2);
    let tls = &c.frontend[1];
    assert_eq!(
        (tls.name.get_ref().as_str(), tls.mode),
        ("maas-tls", lb::Mode::Tcp)
    );
    let f = &c.frontend[0];
    assert_eq!(
        f.retries, 4,
        "retries written in the frontend are carried as meant"
    );
    assert!(f.redispatch);
    assert_eq!(f.balance, lb::Balance::Source);
    assert_eq!(f.mode, lb::Mode::Tcp);
    assert_eq!(f.server.len(), 1);
    has_note(&out, "haproxy.cfg:2: global `maxconn 50000`");
    has_note(
        &out,
        "haproxy.cfg:11: `bind *:443 ssl crt /etc/ssl/maas.pem` terminates TLS, which maas-vip \
         does not: carried over as frontend `maas-tls`, mode tcp, passing TLS through to each \
         region's port 5443",
    );
    has_note(
        &out,
        "bind 0.0.0.0:80 of `other` overlaps 0.0.0.0:80 of `maas`",
    );
    has_note(
        &out,
        "frontend `other` is not carried over: none of its binds remains",
    );
    has_note(
        &out,
        "haproxy.cfg:22: `hash-type map-based` not carried over",
    );
    has_note(
        &out,
        "haproxy.cfg:24: server `r2` not carried over: `10.0.0.12` has no port",
    );
    has_note(
        &out,
        "haproxy.cfg:25: server `r3` not carried over: it talks TLS (`ssl verify none`)",
    );
    has_note(&out, "haproxy.cfg:27: section `userlist` (1 line(s))");
    has_note(&out, "`maas` sets no mode: HAProxy's default tcp written");
}

#[test]
fn import_either_file_alone() {
    // keepalived alone: no frontend to follow, so no track_backends.
    let (c, out) = valid(Some(GUIDE_KEEPALIVED), None);
    assert_eq!(c.vrrp.len(), 1);
    assert!(c.frontend.is_empty());
    assert!(c.vrrp[0].track_backends.is_none());
    has_note(&out, "no frontend was imported, so no track_backends");
    // haproxy alone.
    let (c, _) = valid(None, Some(GUIDE_HAPROXY));
    assert!(c.vrrp.is_empty());
    assert_eq!(c.frontend.len(), 1);
    assert!(matches!(imp(None, None), Err(ImportError::NothingToImport)));
}

#[test]
fn import_bind_and_timeout_forms() {
    let cfg = "defaults\n mode http\n timeout client 2m\n timeout connect 100\n \
               timeout server 1h\n timeout tunnel 1d\n\
               frontend a\n bind :8080\n bind :::8081\n bind 127.0.0.2:8082\n bind 80-81\n \
               bind unix@/run/x.sock\n default_backend b\n\
               backend b\n option http-keep-alive\n no option redispatch\n server s1 [fd00::11]:5240\n";
    let (c, out) = valid(None, Some(cfg));
    let f = &c.frontend[0];
    let binds: Vec<String> = f.bind.get_ref().iter().map(|b| b.to_string()).collect();
    assert_eq!(binds, ["0.0.0.0:8080", "[::]:8081", "127.0.0.2:8082"]);
    assert_eq!(f.timeout_client, Duration::from_secs(120));
    assert_eq!(f.timeout_connect, Duration::from_millis(100));
    assert_eq!(f.timeout_server, Duration::from_secs(3600));
    assert_eq!(f.timeout_tunnel, Duration::from_secs(86_400));
    assert!(!f.redispatch);
    assert!(!f.http_server_close);
    assert!(!f.server[0].check);
    assert_eq!(f.server[0].address.get_ref().to_string(), "[fd00::11]:5240");
    has_note(&out, "haproxy.cfg:11: bind `80-81` not carried over");
    has_note(
        &out,
        "haproxy.cfg:12: bind `unix@/run/x.sock` not carried over",
    );
    assert!(out.toml.contains("timeout_tunnel = \"24h\""));
}

#[test]
fn import_admin_port_moves_when_a_frontend_takes_it() {
    let cfg = "frontend a\n mode tcp\n bind *:5249\n default_backend b\nbackend b\n server s 10.0.0.1:1\n";
    let (c, out) = valid(None, Some(cfg));
    assert_eq!(c.admin.bind.get_ref().to_string(), "127.0.0.1:5250");
    has_note(&out, "[admin] moved to 127.0.0.1:5250");
}

#[test]
fn import_only_backup_servers_become_active() {
    let cfg = "listen a\n mode tcp\n bind :80\n server s 10.0.0.1:1 backup\n";
    let (c, out) = valid(None, Some(cfg));
    assert!(!c.frontend[0].server[0].backup);
    has_note(&out, "has only backup servers");
}

#[test]
fn import_positive_script_weight_and_named_script() {
    let k = "vrrp_script chk_haproxy {\n script \"killall -0 haproxy\"\n weight 10\n}\n\
             vrrp_script unused { script \"true\" }\n\
             vrrp_instance VI_1 { interface eth1; virtual_router_id 7; priority 255\n \
             advert_int 0.5; virtual_ipaddress { 192.168.1.1 }\n track_script { chk_haproxy }\n}\n";
    let (c, out) = valid(Some(k), Some(GUIDE_HAPROXY));
    let v = &c.vrrp[0];
    assert_eq!(v.track_backends.as_ref().map(|t| t.weight), Some(-10));
    assert_eq!(*v.advert_interval.get_ref(), Duration::from_secs(1));
    assert_eq!(*v.priority.get_ref(), 255);
    has_note(&out, "raised the priority by 10 while HAProxy ran");
    has_note(&out, "advert_int 0.5s is not whole seconds");
    has_note(
        &out,
        "keepalived.conf:5: vrrp_script `unused` is tracked by no instance",
    );
}

#[test]
fn import_errors_name_file_and_line() {
    let cases: [(Option<&str>, Option<&str>, &str); 7] = [
        (
            Some("vrrp_instance a {\n  interface \"eth0\n}\n"),
            None,
            "keepalived.conf:2: unterminated quoted string",
        ),
        (
            Some("vrrp_instance a {\n interface eth0\n"),
            None,
            "keepalived.conf:1: the block of `vrrp_instance` is never closed",
        ),
        (
            Some("a\n}\n"),
            None,
            "keepalived.conf:2: `}` without a matching `{`",
        ),
        (
            Some("{\n"),
            None,
            "keepalived.conf:1: `{` without a keyword before it",
        ),
        (
            None,
            Some("  bind :80\n"),
            "haproxy.cfg:1: `bind` outside of any section",
        ),
        (
            None,
            Some("global\n  log \"x\n"),
            "haproxy.cfg:2: unterminated double-quoted string",
        ),
        (
            None,
            Some("frontend\n"),
            "haproxy.cfg:1: `frontend` needs a name",
        ),
    ];
    for (k, h, want) in cases {
        let e = imp(k, h).expect_err(want);
        assert_eq!(e.to_string(), want);
    }
    let deep = "a {\n".repeat(100);
    let e = imp(Some(&deep), None).expect_err("too deep");
    assert!(e.to_string().contains("nested deeper than"), "{e}");
}

#[test]
fn split_command_marks_what_needs_a_shell() {
    let s = |c: &str| keepalived::split_command(c);
    assert_eq!(
        s("killall -0 haproxy"),
        (vec!["killall".into(), "-0".into(), "haproxy".into()], false)
    );
    assert_eq!(
        s("/bin/check 'a b' \"c d\""),
        (vec!["/bin/check".into(), "a b".into(), "c d".into()], false)
    );
    assert!(s("pidof named || exit 1").1);
    assert!(s("test -f /x && true").1);
    assert!(s("check > /dev/null").1);
    assert!(s("echo \"$HOME\"").1);
    assert!(s("FOO=1 check").1);
    assert!(s("ls /etc/*.conf").1);
    assert!(s("unterminated 'quote").1);
    // An explicit shell is already an argv.
    assert!(!s("/bin/sh -c 'pidof a | wc -l'").1);
}

#[test]
fn times_parse_and_print() {
    assert_eq!(haproxy_time("5000"), Some(Duration::from_secs(5)));
    assert_eq!(haproxy_time("90s"), Some(Duration::from_secs(90)));
    assert_eq!(haproxy_time("2m"), Some(Duration::from_secs(120)));
    assert_eq!(haproxy_time("1h"), Some(Duration::from_secs(3600)));
    assert_eq!(haproxy_time("1d"), Some(Duration::from_secs(86_400)));
    assert_eq!(haproxy_time("250us"), Some(Duration::from_micros(250)));
    assert_eq!(haproxy_time("30d"), None, "above HAProxy's 2^31 ms");
    assert_eq!(haproxy_time("1x"), None);
    assert_eq!(haproxy_time(""), None);
    assert_eq!(haproxy_time("99999999999999999999"), None);
    assert_eq!(keepalived_secs("2"), Some(Duration::from_secs(2)));
    assert_eq!(keepalived_secs("0.25"), Some(Duration::from_millis(250)));
    assert_eq!(keepalived_secs("-1"), None);
    assert_eq!(keepalived_secs("."), None);
    assert_eq!(dur(Duration::from_millis(1500)), "\"1500ms\"");
    assert_eq!(dur(Duration::from_secs(90)), "\"90s\"");
    assert_eq!(dur(Duration::from_secs(120)), "\"2m\"");
    assert_eq!(dur(Duration::from_secs(7200)), "\"2h\"");
    assert_eq!(dur(Duration::from_micros(10)), "\"10us\"");
}

#[test]
fn names_are_escaped() {
    // keepalived strings have no escapes; HAProxy's double-quoted ones do.
    let k = "vrrp_instance \"we\\ird\tname\" {\n interface eth0\n virtual_router_id 9\n \
             virtual_ipaddress {\n 10.1.1.1\n }\n}\n";
    let h = "listen \"a\\\"b#c\"\n mode tcp\n bind :80\n server 's 1' 10.0.0.1:80\n";
    let (c, _) = valid(Some(k), Some(h));
    assert_eq!(c.vrrp[0].name.get_ref(), "we\\ird\tname");
    assert_eq!(c.frontend[0].name.get_ref(), "a\"b#c");
    assert_eq!(c.frontend[0].server[0].name.get_ref(), "s 1");
}

/// A small deterministic fuzzer: mutated fixtures must give an error or a valid config,
/// never a panic. (The reliability issue runs cargo-fuzz on `import` as well.)
#[test]
fn import_mutations_never_panic_and_stay_valid() {
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let alphabet: &[u8] = b" \t\n{}#!;\"'\\:*,./-0123456789abcdefghijklmnopqrstuvwxyzPASSMASTER";
    let sources = [
        (GUIDE_KEEPALIVED, true),
        (VARIANTS_KEEPALIVED, true),
        (GUIDE_HAPROXY, false),
        (LISTEN, false),
        (HTTPCHK, false),
        (VARIANTS_HAPROXY, false),
    ];
    let mut accepted = 0;
    for round in 0..600 {
        let (src, is_keepalived) = sources[round % sources.len()];
        let mut bytes = src.as_bytes().to_vec();
        for _ in 0..(1 + next() % 6) {
            let at = (next() as usize) % (bytes.len() + 1);
            match next() % 4 {
                0 if at < bytes.len() => {
                    bytes.remove(at);
                }
                1 => bytes.insert(at, alphabet[(next() as usize) % alphabet.len()]),
                2 if at < bytes.len() => bytes[at] = alphabet[(next() as usize) % alphabet.len()],
                _ => {
                    // Duplicate a line: repeated sections and keys.
                    let text = String::from_utf8_lossy(&bytes).into_owned();
                    let lines: Vec<&str> = text.lines().collect();
                    if !lines.is_empty() {
                        let l = (next() as usize) % lines.len();
                        let mut v: Vec<&str> = lines.clone();
                        v.insert(l, lines[l]);
                        bytes = v.join("\n").into_bytes();
                    }
                }
            }
        }
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let (k, h) = if is_keepalived {
            (Some(text.as_str()), Some(GUIDE_HAPROXY))
        } else {
            (Some(GUIDE_KEEPALIVED), Some(text.as_str()))
        };
        if let Ok(out) = imp(k, h) {
            accepted += 1;
            if let Err(report) = parse(Path::new("imported.toml"), out.toml.clone()) {
                panic!("round {round}: output rejected:\n{report}\n--- input ---\n{text}\n--- output ---\n{}", out.toml);
            }
        }
    }
    assert!(
        accepted > 300,
        "most mutations should still import: {accepted}"
    );
}

#[test]
fn import_edge_cases_stay_valid() {
    // Old `listen NAME ADDR:PORT` syntax, an empty server name, a VIP listed twice with two
    // prefixes, a script whose program is an empty word.
    let h = "listen maas 0.0.0.0:8000\n mode tcp\n server \"\" 10.0.0.1:80\n \
             server ok 10.0.0.2:80\n";
    let k = "vrrp_script e {\n script \"'' x\"\n}\n\
             vrrp_instance v {\n interface eth0\n virtual_router_id 1\n \
             virtual_ipaddress {\n 10.0.0.1/24\n 10.0.0.1/32\n }\n track_script {\n e\n }\n}\n";
    let (c, out) = valid(Some(k), Some(h));
    assert_eq!(c.frontend[0].bind.get_ref()[0].to_string(), "0.0.0.0:8000");
    assert_eq!(c.frontend[0].server.len(), 1);
    assert_eq!(c.vrrp[0].virtual_ipaddresses.get_ref().len(), 1);
    assert!(c.vrrp[0].track_script.is_empty());
    has_note(&out, "haproxy.cfg:3: `server` needs a name and an address");
    has_note(&out, "keepalived.conf:9: virtual_ipaddress 10.0.0.1/32: 10.0.0.1 is already listed as 10.0.0.1/24");
    has_note(
        &out,
        "keepalived.conf:1: vrrp_script `e`: `'' x` names no program",
    );
}

/// Random configs built from both programs' own words and edge values: whatever comes out
/// must be an error or a config `check` accepts.
#[test]
fn import_random_keyword_soup_stays_valid() {
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    let k_words: &[&str] = &[
        "vrrp_instance",
        "vrrp_script",
        "global_defs",
        "track_script",
        "virtual_ipaddress",
        "unicast_peer",
        "authentication",
        "auth_type",
        "auth_pass",
        "PASS",
        "AH",
        "state",
        "MASTER",
        "BACKUP",
        "interface",
        "eth0",
        "lo",
        "virtual_router_id",
        "priority",
        "advert_int",
        "version",
        "nopreempt",
        "preempt_delay",
        "garp_master_delay",
        "garp_master_repeat",
        "vrrp_version",
        "vrrp_garp_master_delay",
        "script",
        "interval",
        "timeout",
        "weight",
        "rise",
        "fall",
        "notify",
        "chk",
        "chk_haproxy",
        "\"killall -0 haproxy\"",
        "\"pidof named\"",
        "\"a | b\"",
        "\"\"",
        "0",
        "1",
        "2",
        "3",
        "0.5",
        "255",
        "256",
        "-1",
        "-50",
        "1000",
        "10.0.0.1",
        "10.0.0.1/24",
        "10.0.0.2/33",
        "0.0.0.0",
        "224.0.0.18",
        "::1",
        "{",
        "}",
        "{",
        "}",
        ";",
        "\n",
        "\n",
        "\n",
        "#",
        "!",
        "averyveryverylongpassword",
    ];
    let h_words: &[&str] = &[
        "\nglobal",
        "\ndefaults",
        "\nfrontend",
        "\nbackend",
        "\nlisten",
        "\n bind",
        "\n mode",
        "\n balance",
        "\n hash-type",
        "\n retries",
        "\n option",
        "\n no option",
        "\n timeout",
        "\n maxconn",
        "\n server",
        "\n default-server",
        "\n default_backend",
        "\n use_backend",
        "\n http-check",
        "\n log",
        "http",
        "tcp",
        "roundrobin",
        "source",
        "consistent",
        "redispatch",
        "http-server-close",
        "forwardfor",
        "httpchk",
        "tcp-check",
        "connect",
        "client",
        "server",
        "tunnel",
        "check",
        "expect",
        "status",
        "200",
        "0",
        "1",
        "3",
        "101",
        "1000001",
        "5s",
        "0ms",
        "1d",
        "30d",
        "maas",
        "b",
        "s1",
        "s1",
        "*:80",
        ":80",
        ":5249",
        "127.0.0.1:5249",
        "[::]:80",
        ":::80",
        "10.0.0.1:5240",
        "localhost:5240",
        "host:1",
        "10.0.0.1",
        "0.0.0.0:1",
        "10.0.0.1:0",
        "weight",
        "257",
        "backup",
        "disabled",
        "inter",
        "5ms",
        "rise",
        "fall",
        "port",
        "65536",
        "ssl",
        "GET",
        "/MAAS/",
        "x y",
        "if",
        "#",
        "\n redirect",
        "\n http-request redirect",
        "location",
        "code",
        "301",
        "{ path / }",
        "path",
        "/",
        "{",
        "}",
        "https://x",
        "/a b",
    ];
    let (mut accepted, mut with_blocks) = (0, 0);
    for round in 0..3000 {
        // Braces balanced outside comments, so most inputs get past the parser.
        let mut k = String::new();
        let (mut depth, mut comment) = (0usize, false);
        for _ in 0..next(160) {
            let w = k_words[next(k_words.len())];
            match w {
                "}" if !comment && depth == 0 => continue,
                "}" if !comment => depth -= 1,
                "{" if !comment => depth += 1,
                "#" | "!" => comment = true,
                "\n" => comment = false,
                _ => {}
            }
            k.push_str(w);
            k.push(' ');
        }
        k.push('\n');
        k.push_str(&"}\n".repeat(depth));
        let mut h = String::from("frontend maas\n");
        for _ in 0..next(160) {
            h.push_str(h_words[next(h_words.len())]);
            h.push(' ');
        }
        if let Ok(out) = imp(Some(&k), Some(&h)) {
            accepted += 1;
            if out.toml.contains("[[vrrp]]") || out.toml.contains("[[frontend]]") {
                with_blocks += 1;
            }
            if let Err(report) = parse(Path::new("imported.toml"), out.toml.clone()) {
                panic!(
                    "round {round}: output rejected:\n{report}\n--- keepalived ---\n{k}\n\
                     --- haproxy ---\n{h}\n--- output ---\n{}",
                    out.toml
                );
            }
        }
    }
    assert!(accepted > 1000, "{accepted}");
    assert!(with_blocks > 50, "{with_blocks}");
}

#[test]
fn keepalived_escapes_and_continued_lines() {
    let k = "vrrp_instance v {\n interface eth0 ! the LAN\n virtual_router_id \\\n 5\n \
             authentication {\n auth_pass p\\#1\\!x # comment\n }\n \
             virtual_ipaddress {\n 10.0.0.5/24\n }\n}\n";
    let (c, _) = valid(Some(k), None);
    let v = &c.vrrp[0];
    assert_eq!(v.interface.get_ref(), "eth0");
    assert_eq!(v.virtual_router_id, 5);
    assert_eq!(
        v.auth_pass.as_ref().map(|p| p.get_ref().as_str()),
        Some("p#1!x")
    );
}

#[test]
fn keepalived_definitions_are_expanded() {
    let k =
        "$IF=ens4\n$VIP=10.9.9.9/24\nvrrp_instance v {\n interface $IF\n virtual_router_id 3\n \
             virtual_ipaddress {\n ${VIP}\n }\n notify \"/x $UNKNOWN\"\n}\n";
    let (c, out) = valid(Some(k), None);
    assert_eq!(c.vrrp[0].interface.get_ref(), "ens4");
    assert_eq!(
        c.vrrp[0].virtual_ipaddresses.get_ref()[0].to_string(),
        "10.9.9.9/24"
    );
    has_note(&out, "keepalived.conf:1: definition `$IF` expanded");
    assert!(
        out.toml.contains("$UNKNOWN"),
        "unknown names are left as written"
    );
    // Expansion is bounded.
    let bomb = format!(
        "$A={}\n{}",
        "x".repeat(10_000),
        "$A$A$A$A$A$A$A$A$A$A\n".repeat(20)
    );
    let e = imp(Some(&bomb), None).expect_err("too big");
    assert!(e.to_string().contains("beyond 1 MiB"), "{e}");
}

#[test]
fn import_script_user() {
    let conf = "global_defs {\n    script_user nobody nogroup\n}\n\
                vrrp_instance maas_region {\n    interface eth0\n    virtual_router_id 51\n    \
                virtual_ipaddress {\n        10.0.0.100/24\n    }\n}\n";
    let (c, out) = valid(Some(conf), None);
    // Under the unit (no CAP_SETUID/CAP_SETGID) it could only fail: written commented out.
    assert!(c.vrrp[0].script_user.is_none());
    assert!(
        out.toml.contains("\n# script_user = \"nobody\"\n"),
        "{}",
        out.toml
    );
    has_note(
        &out,
        "keepalived.conf:2: global_defs `script_user nobody` is written commented out: \
         maas-vip's unit grants no CAP_SETUID/CAP_SETGID",
    );
    has_note(
        &out,
        "keepalived.conf:2: global_defs `script_user nobody nogroup`: the group is not carried",
    );
}

#[test]
fn killall_zero_becomes_pidof() {
    let k = |script: &str| {
        format!(
            "vrrp_script chk {{\n script \"{script}\"\n}}\n\
             vrrp_instance v {{\n interface eth0\n virtual_router_id 51\n \
             virtual_ipaddress {{\n 10.0.0.100/24\n }}\n track_script {{\n chk\n }}\n}}\n"
        )
    };
    for script in [
        "killall -0 named",
        "/usr/bin/killall -0 named",
        "killall -q -0 named",
        "killall -0 named || exit 1",
        "killall -0 named 2>/dev/null || exit",
    ] {
        let (c, out) = valid(Some(&k(script)), None);
        assert_eq!(
            c.vrrp[0].track_script[0].command.get_ref(),
            &["pidof", "named"],
            "{script}"
        );
        has_note(
            &out,
            &format!("keepalived.conf:1: vrrp_script `chk`: `{script}` becomes `pidof named`"),
        );
    }
    // Anything else is left alone: a pattern, another signal, `|| exit 0` (always good).
    for script in [
        "killall -0 -r 'nam.*'",
        "killall -HUP named",
        "killall -0 named || exit 0",
    ] {
        let (c, _) = valid(Some(&k(script)), None);
        assert_ne!(
            c.vrrp[0].track_script[0].command.get_ref()[0],
            "pidof",
            "{script}"
        );
    }
}

#[test]
fn weights_fail_over_against_the_peers() {
    let conf = |prio: u8| {
        format!(
            "vrrp_script chk_haproxy {{\n script \"killall -0 haproxy\"\n}}\n\
             vrrp_script chk_x {{\n script \"/bin/x\"\n weight -20\n}}\n\
             vrrp_instance maas_region {{\n interface eth0\n virtual_router_id 51\n \
             priority {prio}\n virtual_ipaddress {{\n 10.0.0.100/24\n }}\n \
             track_script {{\n chk_haproxy\n chk_x\n }}\n}}\n"
        )
    };
    let peer = |prio: u8| (Path::new("peer.conf"), conf(prio));
    let weights = |mine: u8, peers: &[(&Path, String)]| {
        let peers: Vec<(&Path, &str)> = peers.iter().map(|(p, t)| (*p, t.as_str())).collect();
        let out = import_with(
            Some((Path::new("keepalived.conf"), &conf(mine))),
            Some((Path::new("haproxy.cfg"), GUIDE_HAPROXY)),
            &peers,
            &|_| None,
        )
        .expect("imports");
        let (c, _) = parse(Path::new("out.toml"), out.toml.clone())
            .unwrap_or_else(|r| panic!("{r}\n{}", out.toml));
        let v = &c.vrrp[0];
        (
            v.track_backends.as_ref().map(|t| t.weight),
            v.track_script[0].weight,
            out,
        )
    };
    // No peer file: keepalived's 100. 150 - 51 = 99 < 100; the script's -20 would stay at 130.
    let (tb, ts, out) = weights(150, &[]);
    assert_eq!((tb, ts), (Some(-51), -51));
    has_note(
        &out,
        "track_script `chk_x` weight -20 -> -51: priority 150 - 20 = 130",
    );
    // Peers at 120 and 50: below 50.
    let (tb, ts, out) = weights(150, &[peer(120), peer(50)]);
    assert_eq!((tb, ts), (Some(-101), -101));
    has_note(&out, "is below the lowest peer priority (50, peer.conf)");
    // The lowest host already is below its peers: the script weight as written.
    let (tb, ts, _) = weights(50, &[peer(150), peer(100)]);
    assert_eq!((tb, ts), (Some(-1), -20));
    // Priority 1: the weight cannot take it lower than 1.
    let (tb, _, _) = weights(1, &[]);
    assert_eq!(tb, Some(-1));
}

#[test]
fn import_tls_guide_passes_tls_through_to_the_regions() {
    let (c, out) = valid(Some(GUIDE_KEEPALIVED), Some(TLS_HAPROXY));
    assert_eq!(c.frontend.len(), 1);
    let f = &c.frontend[0];
    assert_eq!(f.name.get_ref(), "maas");
    assert_eq!(
        f.bind.get_ref(),
        &["0.0.0.0:443".parse::<SocketAddr>().expect("addr")]
    );
    // TLS passes through: tcp, a TCP check (an HTTP one cannot speak to a TLS port), the
    // regions' MAAS TLS port, the guide's balance source kept.
    assert_eq!(f.mode, lb::Mode::Tcp);
    assert_eq!(f.balance, lb::Balance::Source);
    assert_eq!(f.check.kind, healthcheck::CheckKind::Tcp);
    let ports: Vec<u16> = f
        .server
        .iter()
        .map(|s| s.target().map(|t| t.port()).expect("server address"))
        .collect();
    assert_eq!(ports, [5443, 5443, 5443]);
    // track_backends follows it: the only frontend.
    let tb = c.vrrp[0].track_backends.as_ref().expect("track_backends");
    assert_eq!(tb.frontend.get_ref(), "maas");
    has_note(
        &out,
        "haproxy.cfg:21: `bind *:443 ssl crt /etc/ssl/private/mysite.com.pem` terminates TLS, \
         which maas-vip does not: carried over as frontend `maas`, mode tcp",
    );
    has_note(
        &out,
        "haproxy.cfg:22: `reqadd X-Forwarded-Proto: https` told the regions that clients came by \
         HTTPS",
    );
    // Its modern form means the same.
    let modern = TLS_HAPROXY.replace(
        "reqadd X-Forwarded-Proto:\\ https",
        "http-request set-header X-Forwarded-Proto https",
    );
    assert_ne!(modern, TLS_HAPROXY);
    let (_, out) = valid(None, Some(&modern));
    has_note(
        &out,
        "haproxy.cfg:22: `http-request set-header X-Forwarded-Proto https` told the regions",
    );
    // Another reqadd is not carried over, and says why.
    let other = TLS_HAPROXY.replace("X-Forwarded-Proto:\\ https", "X-Foo:\\ bar");
    let (_, out) = valid(None, Some(&other));
    has_note(
        &out,
        "haproxy.cfg:22: `reqadd X-Foo: bar` is not carried over",
    );
}

#[test]
fn localhost_under_source_becomes_this_hosts_region_address() {
    let h = |ip: Option<IpAddr>| {
        let out = import_with(
            None,
            Some((Path::new("haproxy.cfg"), GUIDE_HAPROXY)),
            &[],
            &move |_| ip,
        )
        .expect("imports");
        let (c, _) = parse(Path::new("out.toml"), out.toml.clone())
            .unwrap_or_else(|r| panic!("{r}\n{}", out.toml));
        let servers: Vec<(String, String)> = c.frontend[0]
            .server
            .iter()
            .map(|s| (s.name.get_ref().clone(), s.address.get_ref().to_string()))
            .collect();
        (servers, out)
    };
    // This host is 10.0.0.14: localhost is written as that.
    let (servers, out) = h(Some("10.0.0.14".parse().expect("ip")));
    assert_eq!(servers[0], ("localhost".into(), "10.0.0.14:5240".into()));
    has_note(
        &out,
        "haproxy.cfg:32: server `localhost` (127.0.0.1:5240) written as 10.0.0.14:5240, this \
         host's address toward the other regions",
    );
    // This host is 10.0.0.11, listed already as maas-api-1: localhost goes.
    let (servers, out) = h(Some("10.0.0.11".parse().expect("ip")));
    assert_eq!(servers.len(), 3);
    assert_eq!(servers[0].0, "maas-api-1");
    has_note(&out, "server `localhost` (127.0.0.1:5240) is left out");
    // Unknown: kept, with the warning.
    let (servers, out) = h(None);
    assert_eq!(servers[0], ("localhost".into(), "127.0.0.1:5240".into()));
    has_note(
        &out,
        "server `localhost` stays 127.0.0.1:5240: balance source hashes the address",
    );
    // roundrobin: 127.0.0.1 is fine (no hash), nothing looked up.
    let rr = GUIDE_HAPROXY.replace("balance source", "balance roundrobin");
    let out = import_with(None, Some((Path::new("haproxy.cfg"), &rr)), &[], &|_| {
        panic!("not looked up")
    })
    .expect("imports");
    assert!(out.toml.contains("address = \"127.0.0.1:5240\""));
}

#[test]
fn notify_needing_a_shell_still_gets_keepalived_arguments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("n.log");
    let k = format!(
        "vrrp_instance v {{\n interface eth0\n virtual_router_id 51\n \
         virtual_ipaddress {{\n 10.0.0.100/24\n }}\n notify \"echo >> {}\"\n}}\n",
        log.display()
    );
    let (c, out) = valid(Some(&k), None);
    has_note(&out, "keepalived.conf:7: `notify` needs a shell");
    let mut argv = c.vrrp[0].notify.as_ref().expect("notify").get_ref().clone();
    assert_eq!(argv[..2], ["/bin/sh", "-c"]);
    // What the daemon appends (vrrp's notify arguments), run for real.
    argv.extend(["INSTANCE", "v", "MASTER", "150"].map(String::from));
    let st = std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .status()
        .expect("sh");
    assert!(st.success());
    assert_eq!(
        std::fs::read_to_string(&log).expect("log"),
        "INSTANCE v MASTER 150\n"
    );
}
