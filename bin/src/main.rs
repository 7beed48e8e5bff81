//! `maas-vip`: one daemon per MAAS region host that owns the region VIP by VRRP and forwards
//! :80 to every region's :5240. See README.md and conf/maas-vip.toml.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

mod caps;
mod demo;
mod import_cmd;
mod release_cmd;
mod status_cmd;

const DEFAULT_CONFIG: &str = "/etc/maas-vip/maas-vip.toml";

/// High availability for MAAS region controllers: the virtual IP (VRRP, keepalived-compatible)
/// and the :80 -> :5240 proxy (like HAProxy), in one daemon with one config file.
#[derive(Debug, Parser)]
#[command(name = "maas-vip", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon: hold the VIP when elected, proxy to the regions, serve the admin endpoint.
    ///
    /// SIGHUP re-reads the config and applies it without dropping established connections (a bad
    /// config is rejected with the reason logged, and the running one kept). SIGTERM or SIGINT
    /// stop cleanly: the VIP is given up first (priority 0 advert), then listeners close and
    /// established connections get `shutdown_grace` to finish. Exit codes: 0 after a clean stop,
    /// 2 for a bad config, 1 for a runtime failure (e.g. a port it cannot bind).
    Run {
        /// Config file.
        #[arg(short, long, value_name = "PATH", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Print a maas-vip.toml equivalent to an existing keepalived.conf and/or haproxy.cfg.
    ///
    /// The config goes to stdout; everything that cannot be carried over is listed as comments
    /// at its top and as notes on stderr, with file and line. Review it, then `check` it.
    Import {
        /// keepalived.conf of this host.
        #[arg(long, value_name = "FILE")]
        keepalived: Option<PathBuf>,
        /// haproxy.cfg of this host.
        #[arg(long, value_name = "FILE")]
        haproxy: Option<PathBuf>,
        /// keepalived.conf of another host of the same virtual router (repeatable): read only
        /// for its priority, so that the weights written take this host below the lowest peer
        /// (keepalived's default 100 is assumed without).
        #[arg(long = "peer-keepalived", value_name = "FILE")]
        peer_keepalived: Vec<PathBuf>,
    },
    /// Show the state of a running daemon: frontends, servers, VRRP instances.
    ///
    /// Asks the admin endpoint named in the config (`[admin] bind`, with its token).
    /// Exit code 1 if it cannot be reached.
    Status {
        /// Config file (to find the admin endpoint).
        #[arg(short, long, value_name = "PATH", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Print the raw JSON of /status.
        #[arg(long)]
        json: bool,
    },
    /// Validate a config file and print every problem with its line and column.
    ///
    /// Exit code 0 if the file is usable (warnings about this host, such as a missing interface,
    /// are printed but do not fail it), 2 if not.
    Check {
        /// Config file.
        #[arg(short, long, value_name = "PATH", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Judge track scripts, notify and script_user against the capabilities of the shipped
        /// unit (`unit`: root with CAP_NET_ADMIN, CAP_NET_RAW, CAP_NET_BIND_SERVICE) or of this
        /// process (`own`: the daemon run by hand). Default: `own` when started by systemd
        /// (INVOCATION_ID set, as in the unit's ExecStartPre), `unit` otherwise.
        #[arg(long, value_name = "WHOSE")]
        caps: Option<caps::Which>,
    },
    /// A self-contained try-out on this machine (needs root): network namespaces, three region
    /// hosts with maas-vip, election, traffic, failover.
    Demo(demo::DemoArgs),
    /// Remove the virtual IPs a maas-vip that is no longer running left on this host.
    ///
    /// The unit runs it as `ExecStopPost=`, so that however maas-vip ended (kill -9 and crashes
    /// included) the VIP leaves this host at once: clients' SYNs are then retransmitted until
    /// the new master answers, instead of being refused. Only addresses maas-vip added are
    /// removed (it marks them, Linux 5.18+); on older kernels the VIPs of the config's
    /// `[[vrrp]]` blocks. Run beside a live daemon, it takes the VIP from it. Exit codes: 0
    /// done (also when there was nothing to remove), 1 failure.
    ReleaseVips {
        /// Config file (needed on kernels before 5.18 only).
        #[arg(short, long, value_name = "PATH", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
}

fn init_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            // clap exits 2 on usage errors; --help and --version are not errors.
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::ReleaseVips { config } => release_cmd::run(&config),
        Command::Import {
            keepalived,
            haproxy,
            peer_keepalived,
        } => import_cmd::run(keepalived.as_deref(), haproxy.as_deref(), &peer_keepalived),
        Command::Status { config, json } => match config::load(&config) {
            Ok((c, _)) if c.admin.enabled => status_cmd::status_command(
                *c.admin.bind.get_ref(),
                c.admin.token.as_ref().map(|t| t.get_ref().clone()),
                json,
            ),
            Ok(_) => {
                eprintln!(
                    "maas-vip status: the admin endpoint is off in {} ([admin] enabled = false)",
                    config.display()
                );
                ExitCode::from(2)
            }
            Err(report) => {
                eprint!("{report}");
                ExitCode::from(2)
            }
        },
        Command::Check { config, caps } => {
            let judged = caps::Judged::new(caps.unwrap_or_else(caps::Which::auto));
            let loaded = config::read_keys(config::load(&config), config::KeyReader::Check)
                .and_then(|(c, mut report)| {
                    report.add(caps::findings(&c, &judged));
                    if report.has_errors() {
                        Err(report)
                    } else {
                        Ok((c, report))
                    }
                });
            match loaded {
                Ok((c, report)) => {
                    print!("{report}");
                    let servers: usize = c.frontend.iter().map(|f| f.server.len()).sum();
                    let announce = match c.announce.len() {
                        0 => String::new(),
                        n => format!(", {n} announce block(s)"),
                    };
                    println!(
                        "{}: OK ({} vrrp instance(s), {} frontend(s), {} server(s){announce})",
                        config.display(),
                        c.vrrp.len(),
                        c.frontend.len(),
                        servers
                    );
                    ExitCode::SUCCESS
                }
                Err(report) => {
                    eprint!("{report}");
                    eprintln!(
                        "{}: {} error(s); not usable",
                        config.display(),
                        report.errors()
                    );
                    ExitCode::from(2)
                }
            }
        }
        Command::Run { config } => {
            init_tracing();
            let file = match daemon::ConfigFile::load(&config) {
                Ok((file, mut report)) => {
                    // What this process cannot do is logged; errors among it (script_user
                    // without CAP_SETUID) do not stop the start: `check` refuses them.
                    report.add(caps::findings(
                        &file.config,
                        &caps::Judged::new(caps::Which::Own),
                    ));
                    for line in report.to_string().lines() {
                        tracing::warn!("{line}");
                    }
                    file
                }
                Err(report) => {
                    eprint!("{report}");
                    eprintln!(
                        "{}: {} error(s); not starting",
                        config.display(),
                        report.errors()
                    );
                    return ExitCode::from(2);
                }
            };
            // The proxy runs on its own threads (`workers`); this runtime carries the health
            // checks, VRRP, the admin endpoint and signals.
            let built = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .thread_name("control")
                .enable_all()
                .build();
            let runtime = match built {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("maas-vip: cannot start the runtime: {e}");
                    return ExitCode::from(1);
                }
            };
            let result = runtime.block_on(async {
                let signals = daemon::Signals::unix()?;
                daemon::run(file, daemon::Listeners::new(), signals)
                    .await?
                    .wait()
                    .await
            });
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("maas-vip: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
    }
}
