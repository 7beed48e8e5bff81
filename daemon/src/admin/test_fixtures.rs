//! The one-frontend setup that the admin API's tests and the metrics tests both start from.

use std::net::SocketAddr;
use std::sync::Arc;

use healthcheck::{CheckConfig, CheckedFrontend, Server, ServerState};

/// Frontend `maas` as the health checks and the proxy each see it.
pub(super) struct OneFrontend {
    /// `r1` at 10.0.0.11:5240, then the second server at 10.0.0.12:5240; neither disabled.
    pub(super) states: Vec<Arc<ServerState>>,
    /// Both servers checked, with the default check config.
    pub(super) checked: CheckedFrontend,
    /// An `http` mode proxy frontend over the same states.
    pub(super) proxy: Arc<lb::Frontend>,
}

/// Frontend `maas` with servers `r1` and `second` (a name that the caller's tests need to
/// come through: one with a space for the admin paths, one with `"` and `\` for the metrics
/// labels).
pub(super) fn one_frontend(second: &str) -> OneFrontend {
    let states = vec![
        Arc::new(ServerState::new("r1", addr("10.0.0.11:5240"), false)),
        Arc::new(ServerState::new(second, addr("10.0.0.12:5240"), false)),
    ];
    let checked = CheckedFrontend::new(
        "maas",
        CheckConfig::default(),
        states
            .iter()
            .map(|s| Server::new(s.clone(), true))
            .collect(),
    );
    let proxy = lb_frontend("maas", &states);
    OneFrontend {
        states,
        checked,
        proxy,
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

/// An `http` mode proxy frontend `name` over `servers`, built from config text as the daemon
/// builds it.
fn lb_frontend(name: &str, servers: &[Arc<ServerState>]) -> Arc<lb::Frontend> {
    let mut text = format!("name = {name:?}\nmode = \"http\"\n");
    for s in servers {
        text.push_str(&format!(
            "[[server]]\nname = {:?}\naddress = \"{}\"\n",
            s.name,
            s.target()
        ));
    }
    let cfg: lb::FrontendConfig = toml::from_str(&text).expect("test frontend config");
    Arc::new(lb::Frontend::new(&cfg, servers.to_vec()))
}
