//! The maas-vip daemon as a library: everything `maas-vip run` does once its config is loaded.
//!
//! It owns the wiring of the other crates ([`run`]: the proxy's listeners and worker threads,
//! the health checks, the VRRP instances, the `[[announce]]` blocks, the admin endpoint),
//! live reload (servers, listeners, instances and blocks matched by name, see `wiring`), the
//! shutdown order, the admin endpoint with `/status` and `/metrics`, the typed [`Status`] that
//! `/status` serves and `maas-vip status` reads, and the systemd notices and watchdog. The
//! config schema and its loading are the `config` crate's; the command line is `bin/`'s.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! let (file, _warnings) = daemon::ConfigFile::load("/etc/maas-vip/maas-vip.toml".as_ref())
//!     .map_err(|report| anyhow::anyhow!("{report}"))?;
//! let handle = daemon::run(file, daemon::Listeners::new(), daemon::Signals::unix()?).await?;
//! println!("{} frontend(s)", handle.status().frontends.len());
//! handle.wait().await
//! # }
//! ```

mod admin;
mod announce;
pub mod status;
mod systemd;
mod wiring;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::info;

pub use status::Status;

/// A loaded config and the file it came from (a reload reads the file again).
#[derive(Debug, Clone)]
pub struct ConfigFile {
    /// The path as given to [`ConfigFile::load`] (`maas-vip run --config`), not made absolute:
    /// a reload reads this path again.
    pub path: PathBuf,
    /// The config parsed and validated from that file when it was loaded, its auth_hmac key
    /// files checked.
    pub config: config::Config,
}

impl ConfigFile {
    /// Loads and validates `path` as the daemon reads it (key files included), as a reload
    /// does: the config and its warnings, or the report of its errors.
    pub fn load(path: &Path) -> Result<(ConfigFile, config::Report), config::Report> {
        let (config, report) = config::read_keys(config::load(path), config::KeyReader::Daemon)?;
        let file = ConfigFile {
            path: path.to_path_buf(),
            config,
        };
        Ok((file, report))
    }
}

/// Listening sockets bound by the caller and handed to the daemon, each for the address the
/// config names and the socket has (`local_addr`): a test binds `127.0.0.1:0` and writes the
/// port it got into the config. Every address the config names without a socket here the
/// daemon binds itself at start, as `maas-vip run` does for all of them (one SO_REUSEPORT
/// socket per proxy worker; `[::]:port` dual-stack unless an IPv4 address is bound on the
/// same port; a port it cannot have is a startup error). A handed-in frontend socket is served
/// by one worker.
#[derive(Debug, Default)]
pub struct Listeners {
    frontends: Vec<std::net::TcpListener>,
    admin: Option<std::net::TcpListener>,
}

impl Listeners {
    /// None: the daemon binds every address itself.
    pub fn new() -> Listeners {
        Listeners::default()
    }

    /// A socket for the frontend bind address it is bound to.
    pub fn frontend(mut self, listener: std::net::TcpListener) -> Listeners {
        self.frontends.push(listener);
        self
    }

    /// The socket of the admin endpoint (`[admin] bind` names its address).
    pub fn admin(mut self, listener: std::net::TcpListener) -> Listeners {
        self.admin = Some(listener);
        self
    }
}

/// What a signal source asks of the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Re-read the config file and apply it (SIGHUP).
    Reload,
    /// Stop cleanly (SIGTERM, SIGINT).
    Stop,
}

/// Where reload and stop requests come from besides the [`Handle`]. Once every sender is gone
/// the daemon runs on, stopped through its handle.
#[derive(Debug)]
pub struct Signals {
    rx: mpsc::Receiver<Signal>,
}

impl Signals {
    /// A source fed through the returned sender.
    pub fn channel() -> (mpsc::Sender<Signal>, Signals) {
        let (tx, rx) = mpsc::channel(4);
        (tx, Signals { rx })
    }

    /// SIGHUP (reload), SIGTERM and SIGINT (stop) of this process, each logged. Call inside
    /// the runtime that runs the daemon.
    pub fn unix() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
        let (tx, signals) = Signals::channel();
        tokio::spawn(async move {
            loop {
                let s = tokio::select! {
                    _ = term.recv() => { info!("SIGTERM: stopping"); Signal::Stop }
                    _ = int.recv() => { info!("SIGINT: stopping"); Signal::Stop }
                    _ = hup.recv() => { info!("SIGHUP: reloading the config"); Signal::Reload }
                };
                if tx.send(s).await.is_err() {
                    return;
                }
            }
        });
        Ok(signals)
    }
}

/// How a reload ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    /// The new config runs; what changed.
    Applied(String),
    /// The previous config still runs; why the new one was refused.
    Rejected(String),
}

/// What the daemon is asked through its [`Handle`].
#[derive(Debug)]
enum Command {
    Reload(oneshot::Sender<Reload>),
    Stop,
}

/// The local addresses of the running listeners, updated at start and by every reload.
#[derive(Debug, Default)]
struct Addrs {
    /// Per frontend name, its listeners' addresses.
    frontends: BTreeMap<String, Vec<SocketAddr>>,
    /// The admin endpoint's, while it runs.
    admin: Option<SocketAddr>,
}

/// A running daemon. Dropping it stops the daemon as [`Handle::stop`] does, without waiting.
pub struct Handle {
    commands: mpsc::Sender<Command>,
    task: JoinHandle<anyhow::Result<()>>,
    views: Arc<admin::Views>,
    addrs: Arc<Mutex<Addrs>>,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle").finish_non_exhaustive()
    }
}

impl Handle {
    /// What `GET /status` shows now.
    pub fn status(&self) -> Status {
        self.views.status()
    }

    /// Re-reads the config file and applies it, as SIGHUP does (logged, and told to systemd);
    /// answers once it is applied or rejected.
    pub async fn reload(&self) -> Reload {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Reload(tx)).await.is_err() {
            return Reload::Rejected("the daemon has stopped".into());
        }
        rx.await
            .unwrap_or_else(|_| Reload::Rejected("the daemon has stopped".into()))
    }

    /// The local addresses of frontend `name`'s listeners (none for an unknown name).
    pub fn frontend_addrs(&self, name: &str) -> Vec<SocketAddr> {
        self.addrs
            .lock()
            .map(|a| a.frontends.get(name).cloned().unwrap_or_default())
            .unwrap_or_default()
    }

    /// The admin endpoint's local address, while it runs.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.addrs.lock().ok().and_then(|a| a.admin)
    }

    /// Stops in the daemon's order (VIPs released first, connections given `shutdown_grace`)
    /// and waits for it: see [`Handle::wait`].
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.commands.send(Command::Stop).await;
        self.wait().await
    }

    /// Waits until the daemon has stopped: asked to (a [`Signal::Stop`]), or because a VRRP
    /// instance or an `[[announce]]` block ended on its own, whose failure is the error.
    pub async fn wait(self) -> anyhow::Result<()> {
        let Handle { commands, task, .. } = self;
        let r = task.await;
        drop(commands);
        r.map_err(|e| anyhow::anyhow!("the daemon task failed: {e}"))?
    }
}

/// Starts the daemon with `config`: binds what `listeners` does not hold, starts the proxy,
/// the health checks, VRRP, the announce blocks and the admin endpoint, tells systemd it is
/// ready, and returns once all of that runs. A port it cannot bind or a VIP interface it
/// cannot create is an error here. `signals` reload and stop it, as its [`Handle`] does.
pub async fn run(
    config: ConfigFile,
    listeners: Listeners,
    signals: Signals,
) -> anyhow::Result<Handle> {
    let addrs = Arc::new(Mutex::new(Addrs::default()));
    let daemon = wiring::Daemon::start(config, listeners, Arc::clone(&addrs)).await?;
    let views = daemon.views();
    let (commands, rx) = mpsc::channel(4);
    let task = tokio::spawn(wiring::serve(daemon, signals.rx, rx));
    Ok(Handle {
        commands,
        task,
        views,
        addrs,
    })
}
