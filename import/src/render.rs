//! Rendering: the blocks being imported, `config`'s own types, as maas-vip.toml text with the
//! notes at the top. A key the source file did not set is left out, so config's default
//! applies when the file is read back.

use std::path::Path;

use healthcheck::{CheckKind, CheckOverride, HttpMethod};
use lb::{Balance, Mode, OnDown};
use vrrp::config::{InitialState, V3ChecksumKey};
use vrrp::packet::Version;

use super::{auth_hmac, dur, one_line, q, q_list, Built, Frontend, Vrrp, ADMIN};

pub(super) fn render(
    keepalived: Option<(&Path, &str)>,
    haproxy: Option<(&Path, &str)>,
    built: &Built,
) -> String {
    let Built {
        vrrps,
        frontends,
        admin,
        notes,
    } = built;
    let mut out = String::new();
    let from: Vec<String> = [keepalived, haproxy]
        .iter()
        .flatten()
        .map(|(p, _)| one_line(&p.display().to_string()))
        .collect();
    out.push_str(&format!(
        "# maas-vip.toml written by `maas-vip import` from {}.\n",
        from.join(" and ")
    ));
    out.push_str("# Review it, then validate it with: maas-vip check -c FILE\n");
    if notes.is_empty() {
        out.push_str("#\n# Everything was carried over.\n");
    } else {
        out.push_str(&format!(
            "#\n# Not carried over, or changed on the way ({}):\n",
            notes.len()
        ));
        for n in notes {
            out.push_str(&format!("#   {n}\n"));
        }
    }
    if vrrps.is_empty() && frontends.is_empty() {
        out.push_str("#\n# Nothing could be imported: no vrrp_instance and no frontend.\n");
    }
    for v in vrrps {
        render_vrrp(&mut out, v);
    }
    for f in frontends {
        render_frontend(&mut out, f);
    }
    let default = ADMIN.port();
    if !admin.enabled {
        out.push_str("\n[admin]\n");
        out.push_str(&format!(
            "enabled = false                       # port {default} is a frontend's\n"
        ));
    } else if *admin.bind.get_ref() != ADMIN {
        out.push_str("\n[admin]\n");
        out.push_str(&format!(
            "bind = {}             # {default} is a frontend's\n",
            q(&admin.bind.get_ref().to_string())
        ));
    }
    out
}

fn render_vrrp(out: &mut String, v: &Vrrp) {
    let c = &v.cfg;
    let written = |key| v.written.has(key);
    out.push_str("\n[[vrrp]]\n");
    out.push_str(&format!("name = {}\n", q(c.name.get_ref())));
    out.push_str(&format!("interface = {}\n", q(c.interface.get_ref())));
    out.push_str(&format!("virtual_router_id = {}\n", c.virtual_router_id));
    if written("priority") {
        out.push_str(&format!("priority = {}\n", c.priority.get_ref()));
    }
    out.push_str(&format!(
        "state = {}\n",
        q(match c.state {
            InitialState::Master => "MASTER",
            InitialState::Backup => "BACKUP",
        })
    ));
    out.push_str(&format!(
        "advert_interval = {}\n",
        dur(*c.advert_interval.get_ref())
    ));
    if *c.version.get_ref() != Version::V2 {
        out.push_str(&format!("version = {}\n", v.version()));
    }
    if !c.preempt {
        out.push_str("preempt = false                       # keepalived's nopreempt\n");
    }
    if written("preempt_delay") {
        out.push_str(&format!("preempt_delay = {}\n", dur(c.preempt_delay)));
    }
    if *c.v3_checksum.get_ref() == V3ChecksumKey::Rfc9568 {
        out.push_str("v3_checksum = \"rfc9568\"               # keepalived's v3_checksum_as_v2\n");
    }
    if let Some(p) = &c.auth_pass {
        out.push_str(&format!("auth_pass = {}\n", q(p.get_ref())));
    }
    let vips: Vec<String> = c
        .virtual_ipaddresses
        .get_ref()
        .iter()
        .map(|a| a.to_string())
        .collect();
    out.push_str(&format!("virtual_ipaddresses = {}\n", q_list(&vips)));
    if !c.unicast_peers.is_empty() {
        let peers: Vec<String> = c.unicast_peers.iter().map(|p| p.to_string()).collect();
        out.push_str(&format!("unicast_peers = {}\n", q_list(&peers)));
    }
    if written("garp_master_delay") {
        out.push_str(&format!(
            "garp_master_delay = {}\n",
            dur(c.garp_master_delay)
        ));
    }
    if written("garp_master_repeat") {
        out.push_str(&format!("garp_master_repeat = {}\n", c.garp_master_repeat));
    }
    // 0s, config's default, is none.
    if !c.garp_master_refresh.is_zero() {
        out.push_str(&format!(
            "garp_master_refresh = {}\n",
            dur(c.garp_master_refresh)
        ));
    }
    if written("garp_master_refresh_repeat") {
        out.push_str(&format!(
            "garp_master_refresh_repeat = {}\n",
            c.garp_master_refresh_repeat
        ));
    }
    if let Some((u, _)) = &v.script_user {
        out.push_str(
            "# keepalived's script_user. Under maas-vip.service (no CAP_SETUID/CAP_SETGID) every\n\
             # track script and notify would fail with EPERM: they run as the daemon's user.\n\
             # Uncomment only with CAP_SETUID CAP_SETGID added to the unit (systemctl edit).\n",
        );
        out.push_str(&format!("# script_user = {}\n", one_line(&q(u))));
    }
    if let Some(t) = &c.track_backends {
        out.push_str(
            "# Replaces the HAProxy check script: proxy and VRRP share one process here, and the\n\
             # priority drops by the weight while this frontend can reach no region.\n",
        );
        out.push_str(&format!(
            "track_backends = {{ frontend = {}, weight = {} }}\n",
            q(t.frontend.get_ref()),
            t.weight
        ));
    }
    for (key, argv) in c.notify_programs() {
        out.push_str(&format!("{key} = {}\n", q_list(argv.get_ref())));
    }
    if let Some(h) = &c.auth_hmac {
        auth_hmac::render(out, h, &v.written);
    }
    for (i, t) in c.track_script.iter().enumerate() {
        out.push('\n');
        if let Some(comment) = v.track_script_comments.get(i).and_then(Option::as_ref) {
            out.push_str(&format!("# {comment}\n"));
        }
        out.push_str("[[vrrp.track_script]]\n");
        out.push_str(&format!("name = {}\n", q(t.name.get_ref())));
        out.push_str(&format!("command = {}\n", q_list(t.command.get_ref())));
        out.push_str(&format!("interval = {}\n", dur(t.interval)));
        out.push_str(&format!("timeout = {}\n", dur(t.timeout)));
        out.push_str(&format!("weight = {}\n", t.weight));
        out.push_str(&format!("rise = {}\n", t.rise));
        out.push_str(&format!("fall = {}\n", t.fall));
    }
}

fn render_frontend(out: &mut String, f: &Frontend) {
    let c = &f.cfg;
    let written = |key| f.written.has(key);
    let http = c.mode == Mode::Http;
    out.push_str("\n[[frontend]]\n");
    out.push_str(&format!("name = {}\n", q(c.name.get_ref())));
    let binds: Vec<String> = c.bind.get_ref().iter().map(|b| b.to_string()).collect();
    out.push_str(&format!("bind = {}\n", q_list(&binds)));
    out.push_str(&format!(
        "mode = {}\n",
        q(if http { "http" } else { "tcp" })
    ));
    out.push_str(&format!(
        "balance = {}\n",
        q(match c.balance {
            Balance::Roundrobin => "roundrobin",
            Balance::Source => "source",
            Balance::First => "first",
        })
    ));
    out.push_str(&format!("retries = {}\n", c.retries));
    out.push_str(&format!("redispatch = {}\n", c.redispatch));
    if written("maxconn") {
        out.push_str(&format!("maxconn = {}\n", c.maxconn));
    }
    for (key, d) in [
        ("timeout_connect", c.timeout_connect),
        ("timeout_client", c.timeout_client),
        ("timeout_server", c.timeout_server),
        ("timeout_tunnel", c.timeout_tunnel),
    ] {
        if written(key) {
            out.push_str(&format!("{key} = {}\n", dur(d)));
        }
    }
    if http {
        out.push_str(&format!("http_server_close = {}\n", c.http_server_close));
        out.push_str(&format!("forwardfor = {}\n", c.forwardfor));
        if let Some(r) = &c.redirect_root {
            out.push_str(&format!("redirect_root = {}\n", q(r.get_ref())));
        }
    }
    if c.on_down != OnDown::default() {
        out.push_str(&format!("on_down = {}\n", q(c.on_down.as_str())));
    }
    if written("check") {
        let k = &c.check;
        let http = k.kind == CheckKind::Http;
        let mut parts = vec![format!("kind = {}", q(k.kind.as_str()))];
        if http {
            if k.method != HttpMethod::Get {
                parts.push(format!("method = {}", q(k.method.as_str())));
            }
            if written("check.path") {
                parts.push(format!("path = {}", q(&k.path)));
            }
            if let Some(s) = k.expect_status {
                parts.push(format!("expect_status = {s}"));
            }
        }
        parts.push(format!("interval = {}", dur(k.interval)));
        if let Some(d) = k.fast_interval {
            parts.push(format!("fast_interval = {}", dur(d)));
        }
        if let Some(d) = k.down_interval {
            parts.push(format!("down_interval = {}", dur(d)));
        }
        parts.push(format!("timeout = {}", dur(k.timeout)));
        parts.push(format!("rise = {}", k.rise));
        parts.push(format!("fall = {}", k.fall));
        if !http {
            out.push_str(
                "# A TCP check only proves the region's nginx is up; kind = \"http\" with\n\
                 # path = \"/MAAS/api/2.0/version/\" also proves regiond and PostgreSQL.\n",
            );
        }
        out.push_str(&format!("check = {{ {} }}\n", parts.join(", ")));
    }
    for s in &c.server {
        out.push_str("\n[[frontend.server]]\n");
        out.push_str(&format!("name = {}\n", q(s.name.get_ref())));
        out.push_str(&format!("address = {}\n", q(s.address.get_ref())));
        if s.weight != 1 {
            out.push_str(&format!("weight = {}\n", s.weight));
        }
        if !s.check {
            out.push_str("check = false\n");
        }
        if s.backup {
            out.push_str("backup = true\n");
        }
        if s.disabled {
            out.push_str("disabled = true\n");
        }
        let o = &s.check_override;
        if s.check && *o != CheckOverride::default() {
            let mut parts = Vec::new();
            if let Some(p) = o.port {
                parts.push(format!("port = {p}"));
            }
            for (key, d) in [
                ("interval", o.interval),
                ("fast_interval", o.fast_interval),
                ("down_interval", o.down_interval),
                ("timeout", o.timeout),
            ] {
                if let Some(d) = d {
                    parts.push(format!("{key} = {}", dur(d)));
                }
            }
            if let Some(r) = o.rise {
                parts.push(format!("rise = {r}"));
            }
            if let Some(f) = o.fall {
                parts.push(format!("fall = {f}"));
            }
            out.push_str(&format!("check_override = {{ {} }}\n", parts.join(", ")));
        }
    }
}
