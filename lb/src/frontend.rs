//! A running frontend's data: its settings and server pool (swappable on reload), counters and
//! connection limit. What the tcp and http modes read; serving it is the `serve` module.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use healthcheck::ServerState;
use tokio::sync::Semaphore;
use tracing::{info, warn};

use crate::balance::{Algorithm, Pool};
use crate::config::{Balance, FrontendConfig, Mode, OnDown};

/// The values of a frontend's config that the proxy reads per connection.
#[derive(Debug, Clone)]
pub struct Settings {
    pub mode: Mode,
    /// Connect attempts after the first.
    pub retries: u32,
    /// Whether retries go to another server.
    pub redispatch: bool,
    /// Per attempt: how long a connect to a server may take. Also the most spent waiting out a
    /// local shortage (descriptors, buffers, ports) before giving up.
    pub timeout_connect: Duration,
    /// Client inactivity timeout.
    pub timeout_client: Duration,
    /// Server inactivity timeout.
    pub timeout_server: Duration,
    /// Tunnel inactivity timeout.
    pub timeout_tunnel: Duration,
    /// http mode: close server connections after each response.
    pub http_server_close: bool,
    /// http mode: add X-Forwarded-For / X-Forwarded-Proto.
    pub forwardfor: bool,
    /// http mode: redirect target of `GET /`.
    pub redirect_root: Option<String>,
    /// What a server going down does to its established connections.
    pub on_down: OnDown,
}

impl From<&FrontendConfig> for Settings {
    fn from(cfg: &FrontendConfig) -> Settings {
        Settings {
            mode: cfg.mode,
            retries: cfg.retries,
            redispatch: cfg.redispatch,
            timeout_connect: cfg.timeout_connect,
            timeout_client: cfg.timeout_client,
            timeout_server: cfg.timeout_server,
            timeout_tunnel: cfg.timeout_tunnel,
            http_server_close: cfg.http_server_close,
            forwardfor: cfg.forwardfor,
            redirect_root: cfg.redirect_root.as_ref().map(|r| r.get_ref().clone()),
            on_down: cfg.on_down,
        }
    }
}

/// One config generation of a frontend, as a connection reads it when it starts and keeps it
/// to its end; a reload stores a new one ([`Frontend::update`]).
#[derive(Debug)]
pub struct FrontendSnapshot {
    pub settings: Settings,
    /// The servers with their weights and the balance algorithm that picks among them.
    pub servers: Pool,
    /// http mode: the idle keep-alive connections to each server, indexed as
    /// `servers.members()`. New with each generation: a reload starts with no idle connection.
    pub idle_conns: Box<[Arc<crate::upstream::ServerPool>]>,
}

/// Frontend-wide counters.
#[derive(Debug, Default)]
pub struct FrontendCounters {
    /// Connections being handled now.
    pub current: AtomicU64,
    /// Connections accepted.
    pub total: AtomicU64,
    /// Connections closed at once because no server was available.
    pub no_server: AtomicU64,
    /// Connections given up after every connect attempt failed.
    pub connect_failed: AtomicU64,
    /// Connections given up because this host ran out of descriptors, buffers or local ports.
    pub local_shortage: AtomicU64,
    /// Attempts after the first of a connection or request (a stale pooled connection going
    /// again is not one); counted by `Attempts::pick`.
    pub retries: AtomicU64,
    /// Retries sent to another server.
    pub redispatches: AtomicU64,
    /// tcp mode: bytes relayed from clients to servers, added as each connection ends (http mode
    /// counts bytes per server only).
    pub bytes_in: AtomicU64,
    /// tcp mode: bytes relayed from servers to clients, added as each connection ends.
    pub bytes_out: AtomicU64,
    /// http mode: requests received.
    pub requests: AtomicU64,
    /// http mode: responses by status class: 1xx, 2xx, 3xx, 4xx, 5xx, other.
    pub responses: [AtomicU64; 6],
}

impl FrontendCounters {
    /// Counts a response by its status class.
    pub fn count_status(&self, status: u16) {
        let class = match status {
            100..=599 => usize::from(status / 100) - 1,
            _ => 5,
        };
        self.responses[class].fetch_add(1, Ordering::Relaxed);
    }
}

/// A frontend: name, current snapshot, counters and connection limit.
#[derive(Debug)]
pub struct Frontend {
    /// Name from the config.
    pub name: Arc<str>,
    snapshot: ArcSwap<FrontendSnapshot>,
    pub counters: FrontendCounters,
    limit: Arc<Semaphore>,
    maxconn: AtomicU32,
}

impl Frontend {
    /// Builds a frontend from its config and the states of its servers, in config order.
    pub fn new(cfg: &FrontendConfig, servers: Vec<Arc<ServerState>>) -> Frontend {
        Frontend {
            name: Arc::from(cfg.name.get_ref().as_str()),
            snapshot: ArcSwap::from_pointee(snapshot(cfg, servers)),
            counters: FrontendCounters::default(),
            limit: Arc::new(Semaphore::new(cfg.maxconn as usize)),
            maxconn: AtomicU32::new(cfg.maxconn),
        }
    }

    /// The current generation; a connection keeps the one it started with to its end.
    pub fn snapshot(&self) -> Arc<FrontendSnapshot> {
        self.snapshot.load_full()
    }

    /// Replaces settings and servers; connections already running keep the snapshot they have.
    pub fn update(&self, cfg: &FrontendConfig, servers: Vec<Arc<ServerState>>) {
        self.snapshot.store(Arc::new(snapshot(cfg, servers)));
        let old = self.maxconn.swap(cfg.maxconn, Ordering::Relaxed);
        if cfg.maxconn > old {
            self.limit.add_permits((cfg.maxconn - old) as usize);
        } else if cfg.maxconn < old {
            // Only free permits can be withdrawn now; the limit tightens as connections end.
            self.limit.forget_permits((old - cfg.maxconn) as usize);
        }
    }

    /// Whether at least one server can take a new connection.
    pub fn any_available(&self) -> bool {
        self.snapshot
            .load()
            .servers
            .members()
            .iter()
            .any(|m| m.weight > 0 && m.state.is_available())
    }

    /// The connection limit (`maxconn`): a permit per connection being handled.
    pub(crate) fn limit(&self) -> Arc<Semaphore> {
        self.limit.clone()
    }

    /// Connections being handled now.
    pub fn in_flight(&self) -> usize {
        self.counters.current.load(Ordering::Relaxed) as usize
    }

    /// Waits up to `grace` for the connections in flight to finish. Returns whether they did.
    pub async fn drain(&self, grace: Duration) -> bool {
        if self.in_flight() == 0 {
            return true;
        }
        info!(frontend = %self.name, in_flight = self.in_flight(),
            grace_ms = grace.as_millis() as u64, "waiting for connections to finish");
        let deadline = tokio::time::Instant::now() + grace;
        while self.in_flight() > 0 {
            if tokio::time::Instant::now() >= deadline {
                warn!(frontend = %self.name, in_flight = self.in_flight(),
                    "grace period over, closing the remaining connections");
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }
}

fn snapshot(cfg: &FrontendConfig, servers: Vec<Arc<ServerState>>) -> FrontendSnapshot {
    let algorithm = match cfg.balance {
        Balance::Roundrobin => Algorithm::RoundRobin,
        Balance::Source => Algorithm::Source,
        Balance::First => Algorithm::First,
    };
    let idle_conns = servers.iter().map(|_| Default::default()).collect();
    let members = servers
        .into_iter()
        .zip(&cfg.server)
        .map(|(state, s)| (s.hash_key(), state, s.weight, s.backup))
        .collect();
    FrontendSnapshot {
        settings: Settings::from(cfg),
        servers: Pool::keyed(algorithm, members),
        idle_conns,
    }
}
