//! Real PostgreSQL servers for integration tests: a primary and, if asked, a streaming standby,
//! from Debian's packages, each on a loopback port of its own in a temporary directory.
//!
//! PostgreSQL refuses to run as root, so under root every server program runs as the
//! `postgres` system user (the package creates it) through `setpriv`; under another user it
//! runs as that user. Each postmaster is a child of the thread that started it, with
//! `PR_SET_PDEATHSIG` = SIGKILL (`setpriv --pdeathsig`), so not even a test binary killed by
//! SIGKILL leaves a server behind: build a [`PgCluster`] on the test's own thread (a
//! `#[tokio::test]` body runs there), not in a task or `spawn_blocking`. [`PgCluster`]'s `Drop`
//! stops every server and removes the directory, on panic too. Every wait is bounded.
//!
//! Authentication: the superuser `postgres` may log in from 127.0.0.1 without a password
//! (set-up, writes, replication, `pg_rewind`); the check user [`CHECK_USER`] must use the
//! [`Auth`] method chosen, with the password in [`PgCluster::password_file`].

use std::fs;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::netns::wait_for;

/// The user the health check logs in as.
pub const CHECK_USER: &str = "maas_check";

/// The table [`PgCluster::write`] inserts into.
pub const WRITE_TABLE: &str = "maas_vip_writes";

/// Where Debian puts PostgreSQL 15's server programs.
pub const DEFAULT_BIN: &str = "/usr/lib/postgresql/15/bin";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// How the check user authenticates (`pg_hba.conf`, and how its password is stored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// `scram-sha-256`, the password stored as a SCRAM verifier (PostgreSQL 15's default).
    Scram,
    /// `md5`, the password stored as an MD5 hash (with a SCRAM verifier, `md5` lines would
    /// run SCRAM instead).
    Md5,
    /// `trust`: no password asked.
    Trust,
}

impl Auth {
    fn hba(self) -> &'static str {
        match self {
            Auth::Scram => "scram-sha-256",
            Auth::Md5 => "md5",
            Auth::Trust => "trust",
        }
    }
}

/// What to build.
#[derive(Debug, Clone)]
pub struct Options {
    /// The check user's authentication.
    pub auth: Auth,
    /// A streaming standby of the primary as well.
    pub standby: bool,
    /// Lines added to every server's `postgresql.conf`.
    pub extra_conf: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            auth: Auth::Scram,
            standby: false,
            extra_conf: Vec::new(),
        }
    }
}

/// The PostgreSQL server programs, and the user to run them as.
#[derive(Debug, Clone)]
pub struct PgBin {
    dir: PathBuf,
    /// `Some((uid, gid))` of `postgres` when running as root.
    run_as: Option<(u32, u32)>,
}

impl PgBin {
    /// A program of the server's package (`initdb`, `pg_ctl`, `psql`, ...).
    pub fn path(&self, program: &str) -> PathBuf {
        self.dir.join(program)
    }

    /// A command that runs `program` as the server's user, in `cwd`; with `pdeathsig`, one
    /// that is killed when the calling thread ends.
    fn as_server_user(&self, program: &str, cwd: &Path, pdeathsig: bool) -> Command {
        let mut c = Command::new("setpriv");
        if let Some((uid, gid)) = self.run_as {
            c.args([
                "--reuid",
                &uid.to_string(),
                "--regid",
                &gid.to_string(),
                "--clear-groups",
            ]);
        }
        if pdeathsig {
            c.args(["--pdeathsig", "KILL"]);
        }
        c.arg("--").arg(self.path(program));
        c.current_dir(cwd).env("HOME", cwd).env("LC_ALL", "C");
        c
    }

    /// A short-lived server program (`initdb`, `pg_ctl`, ...) as the server's user.
    fn server_cmd(&self, program: &str, cwd: &Path) -> Command {
        self.as_server_user(program, cwd, false)
    }
}

fn id(args: &[&str]) -> Result<u32, String> {
    let out = Command::new("id")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run id: {e}"))?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|_| {
            format!(
                "id {args:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )
        })
}

/// The server programs if they are installed (`$MAAS_VIP_PG_BIN`, else [`DEFAULT_BIN`]);
/// `Err` says why not.
pub fn available() -> Result<PgBin, String> {
    let dir = std::env::var_os("MAAS_VIP_PG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_BIN));
    for p in [
        "initdb",
        "postgres",
        "pg_ctl",
        "pg_basebackup",
        "pg_rewind",
        "psql",
    ] {
        if !dir.join(p).exists() {
            return Err(format!(
                "{} is missing (apt-get install postgresql)",
                dir.join(p).display()
            ));
        }
    }
    let run_as = if id(&["-u"])? == 0 {
        Some((id(&["-u", "postgres"])?, id(&["-g", "postgres"])?))
    } else {
        None
    };
    Ok(PgBin { dir, run_as })
}

/// Call first in a PostgreSQL test, which is `#[ignore = "needs PostgreSQL server binaries
/// (Debian package postgresql)"]` so that a plain `cargo test` reports it as ignored rather than
/// as passed (`.ci/run` installs the package and runs it with `--include-ignored`): the server
/// programs, or a panic saying why they are unusable here, so that the test run on a machine
/// without them fails instead of passing.
pub fn require(test: &str) -> PgBin {
    available().unwrap_or_else(|why| {
        panic!(
            "{test}: needs the PostgreSQL server programs (Debian package postgresql, or \
             $MAAS_VIP_PG_BIN), unusable here: {why}"
        )
    })
}

/// Runs `cmd` to its end or for `limit` at most (then kills it); its output, or why not.
fn run(mut cmd: Command, limit: Duration) -> Result<Output, String> {
    let what = format!("{cmd:?}");
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{what}: {e}"))?;
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(limit) {
        Ok(r) => r.map_err(|e| format!("{what}: {e}"))?,
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            return Err(format!("{what}: still running after {limit:?}, killed"));
        }
    };
    if !out.status.success() {
        return Err(format!(
            "{what}: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(out)
}

/// A port nothing listens on now (the server may still lose a race for it: [`PgServer::start`]
/// then tries another).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    l.local_addr().expect("bound").port()
}

/// SQL string literal.
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// One server: a data directory, a port, and the postmaster while it runs.
#[derive(Debug)]
pub struct PgServer {
    name: &'static str,
    data: PathBuf,
    root: PathBuf,
    port: u16,
    log: PathBuf,
    bin: PgBin,
    /// The port of the server it streams from, while it is a standby.
    upstream: Option<u16>,
    postmaster: Option<Child>,
}

impl PgServer {
    /// Its name (`a`, `b`).
    pub fn name(&self) -> &str {
        self.name
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Its data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// Everything it has logged.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the postmaster runs.
    pub fn running(&mut self) -> bool {
        match &mut self.postmaster {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Starts the postmaster and waits until it accepts connections (a standby: read-only
    /// ones), 60 s at most; moves to another port if its own was taken meanwhile.
    pub fn start(&mut self) {
        assert!(self.postmaster.is_none(), "{} already runs", self.name);
        for attempt in 0..5 {
            if attempt > 0 {
                self.port = free_port();
            }
            let log = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.log)
                .expect("server log");
            let mut c = self.bin.as_server_user("postgres", &self.root, true);
            c.arg("-D")
                .arg(&self.data)
                .args(["-p", &self.port.to_string()])
                .args(["-c", "listen_addresses=127.0.0.1"])
                .args(["-c", "unix_socket_directories="]);
            if let Some(up) = self.upstream {
                // On the command line, so that it wins over whatever pg_basebackup or
                // pg_rewind copied into postgresql.auto.conf.
                c.arg("-c").arg(format!(
                    "primary_conninfo=host=127.0.0.1 port={up} user=postgres application_name={}",
                    self.name
                ));
            }
            c.stdin(Stdio::null())
                .stdout(log.try_clone().expect("server log"))
                .stderr(log);
            self.postmaster = Some(c.spawn().expect("spawning postgres"));
            let pidfile = self.data.join("postmaster.pid");
            let ready = wait_for(Duration::from_secs(60), || {
                if !self.running() {
                    return true;
                }
                // Line 8 of postmaster.pid is the postmaster's status, which pg_ctl -w reads.
                fs::read_to_string(&pidfile).is_ok_and(|t| {
                    matches!(t.lines().nth(7).map(str::trim), Some("ready" | "standby"))
                })
            });
            if self.running() && ready.is_some() {
                return;
            }
            let log = self.log();
            self.kill();
            if !log.contains("could not bind") && !log.contains("Address already in use") {
                panic!("{} did not start within 60 s:\n{log}", self.name);
            }
        }
        panic!("{}: no free port in 5 tries:\n{}", self.name, self.log());
    }

    /// `pg_ctl stop -m MODE` (`fast`: clients cut, a shutdown checkpoint; `immediate`: as a
    /// crash), then reaps the postmaster.
    pub fn stop_mode(&mut self, mode: &str) {
        let Some(p) = self.postmaster.as_mut() else {
            return;
        };
        // Stopped already (after [`PgServer::begin_stop`]): nothing for pg_ctl to do.
        if let Ok(Some(_)) = p.try_wait() {
            self.postmaster = None;
            return;
        }
        let mut c = self.bin.server_cmd("pg_ctl", &self.root);
        c.arg("stop")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", mode, "-w", "-t", "30"]);
        let stopped = run(c, Duration::from_secs(40));
        if stopped.is_err() {
            self.kill();
        }
        if let Some(mut p) = self.postmaster.take() {
            let _ = p.wait();
        }
        if let Err(e) = stopped {
            panic!("stopping {}: {e}", self.name);
        }
    }

    /// `pg_ctl stop -m MODE -W`: asks for a shutdown and returns at once. In `smart` mode
    /// the server refuses new sessions (`the database system is shutting down`) and stops
    /// once the established ones end: a primary on its way out whose clients go on
    /// writing. [`PgServer::stop`] later finishes the job (or finds it done).
    pub fn begin_stop(&mut self, mode: &str) {
        let mut c = self.bin.server_cmd("pg_ctl", &self.root);
        c.arg("stop")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", mode, "-W"]);
        if let Err(e) = run(c, Duration::from_secs(20)) {
            panic!("asking {} to stop: {e}", self.name);
        }
    }

    /// A fast shutdown (`pg_ctl stop -m fast`).
    pub fn stop(&mut self) {
        self.stop_mode("fast");
    }

    /// SIGKILL to the postmaster (its backends exit when they see it gone).
    pub fn kill(&mut self) {
        if let Some(mut p) = self.postmaster.take() {
            let _ = p.kill();
            let _ = p.wait();
        }
    }

    /// `pg_ctl promote -w`: returns once the server runs as a primary.
    pub fn promote(&mut self) {
        let mut c = self.bin.server_cmd("pg_ctl", &self.root);
        c.arg("promote")
            .arg("-D")
            .arg(&self.data)
            .args(["-w", "-t", "30"]);
        if let Err(e) = run(c, Duration::from_secs(40)) {
            panic!("promoting {}: {e}\n{}", self.name, self.log());
        }
        self.upstream = None;
    }

    /// Runs `sql` as the superuser through psql; its unaligned output.
    pub fn psql(&self, sql: &str) -> Result<String, String> {
        psql_at(&self.bin, self.addr(), sql)
    }

    /// `pg_is_in_recovery()`, asked as the superuser.
    pub fn in_recovery(&self) -> Result<bool, String> {
        match self.psql("SELECT pg_is_in_recovery()")?.trim() {
            "t" => Ok(true),
            "f" => Ok(false),
            other => Err(format!("pg_is_in_recovery() said {other:?}")),
        }
    }
}

/// Runs `sql` through psql as the superuser at `addr` (a server, or a proxy in front of one),
/// within 20 s.
pub fn psql_at(bin: &PgBin, addr: SocketAddr, sql: &str) -> Result<String, String> {
    let mut c = Command::new(bin.path("psql"));
    c.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
        .args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()])
        .args(["-U", "postgres", "-d", "postgres", "-c", sql])
        .env("PGCONNECT_TIMEOUT", "5")
        .env("PGAPPNAME", "maas-vip-tests");
    run(c, Duration::from_secs(20)).map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
}

/// A primary, perhaps a standby, and the directory they live in; all gone on drop.
#[derive(Debug)]
pub struct PgCluster {
    root: PathBuf,
    bin: PgBin,
    servers: Vec<PgServer>,
    password: String,
    password_file: PathBuf,
}

impl PgCluster {
    /// `initdb` a primary (server `a`), its check user and [`WRITE_TABLE`]; with
    /// `opts.standby`, `pg_basebackup -R` a standby of it (server `b`) and wait until it
    /// streams.
    pub fn start(bin: &PgBin, opts: &Options) -> PgCluster {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let root = std::env::temp_dir().join(format!("maas-vip-pg-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir(&root).expect("cluster directory");
        fs::set_permissions(&root, fs::Permissions::from_mode(0o700)).expect("chmod");
        if let Some((uid, gid)) = bin.run_as {
            std::os::unix::fs::chown(&root, Some(uid), Some(gid)).expect("chown to postgres");
        }
        let password = format!("pw-{}-{n}-Zq8#x", std::process::id());
        let password_file = root.join("check.password");
        let mut cluster = PgCluster {
            root: root.clone(),
            bin: bin.clone(),
            servers: Vec::new(),
            password,
            password_file,
        };
        let mut f = fs::File::create(&cluster.password_file).expect("password file");
        writeln!(f, "{}", cluster.password).expect("password file");
        fs::set_permissions(&cluster.password_file, fs::Permissions::from_mode(0o600))
            .expect("chmod");

        let a = cluster.new_server("a");
        let mut c = bin.server_cmd("initdb", &root);
        c.arg("-D")
            .arg(&a.data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C"])
            .args(["--no-sync", "--no-instructions"]);
        if let Err(e) = run(c, Duration::from_secs(120)) {
            panic!("initdb: {e}");
        }
        let mut conf = [
            "shared_buffers = 16MB",
            "max_connections = 30",
            "fsync = off",
            "autovacuum = off",
            "wal_log_hints = on",
            "wal_keep_size = 64MB",
            "log_line_prefix = '%m [%p] %q%u@%d/%a '",
        ]
        .map(String::from)
        .to_vec();
        conf.extend(opts.extra_conf.iter().cloned());
        append(&a.data.join("postgresql.conf"), &conf.join("\n"));
        let hba = format!(
            "host all postgres 127.0.0.1/32 trust\n\
             host replication postgres 127.0.0.1/32 trust\n\
             host all {CHECK_USER} 127.0.0.1/32 {}\n",
            opts.auth.hba()
        );
        fs::write(a.data.join("pg_hba.conf"), hba).expect("pg_hba.conf");
        cluster.servers.push(a);
        cluster.servers[0].start();

        let encryption = match opts.auth {
            Auth::Md5 => "md5",
            _ => "scram-sha-256",
        };
        let sql = format!(
            "SET password_encryption = {}; CREATE ROLE {CHECK_USER} LOGIN PASSWORD {}; \
             CREATE TABLE {WRITE_TABLE} (id serial PRIMARY KEY, at timestamptz DEFAULT now(), note text);",
            literal(encryption),
            literal(&cluster.password)
        );
        if let Err(e) = cluster.servers[0].psql(&sql) {
            panic!("creating the check user: {e}");
        }

        if opts.standby {
            let mut b = cluster.new_server("b");
            let mut c = bin.server_cmd("pg_basebackup", &root);
            c.args([
                "-h",
                "127.0.0.1",
                "-p",
                &cluster.servers[0].port.to_string(),
            ])
            .args(["-U", "postgres", "-D"])
            .arg(&b.data)
            .args(["-R", "-X", "stream", "-c", "fast", "--no-sync"]);
            if let Err(e) = run(c, Duration::from_secs(120)) {
                panic!("pg_basebackup: {e}");
            }
            b.upstream = Some(cluster.servers[0].port);
            cluster.servers.push(b);
            cluster.servers[1].start();
            cluster.wait_streaming(1);
        }
        cluster
    }

    fn new_server(&self, name: &'static str) -> PgServer {
        PgServer {
            name,
            data: self.root.join(name),
            root: self.root.clone(),
            port: free_port(),
            log: self.root.join(format!("{name}.log")),
            bin: self.bin.clone(),
            upstream: None,
            postmaster: None,
        }
    }

    /// Server `i` (0 = `a`, the first primary; 1 = `b`, its first standby).
    pub fn server(&self, i: usize) -> &PgServer {
        &self.servers[i]
    }

    /// Server `i`, to stop, start or promote it.
    pub fn server_mut(&mut self, i: usize) -> &mut PgServer {
        &mut self.servers[i]
    }

    /// The programs.
    pub fn bin(&self) -> &PgBin {
        &self.bin
    }

    /// The check user's password.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// A file holding the check user's password and a newline, mode 0600.
    pub fn password_file(&self) -> &Path {
        &self.password_file
    }

    /// The directory everything lives in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Waits (30 s at most) until standby `i` streams from its upstream.
    pub fn wait_streaming(&self, i: usize) {
        let s = &self.servers[i];
        let up = s.upstream.expect("a standby");
        let upstream = self
            .servers
            .iter()
            .find(|u| u.port == up)
            .expect("upstream in the cluster");
        let sql = format!(
            "SELECT count(*) FROM pg_stat_replication WHERE application_name = {} AND state = 'streaming'",
            literal(s.name)
        );
        if wait_for(Duration::from_secs(30), || {
            upstream.psql(&sql).is_ok_and(|o| o.trim() == "1")
        })
        .is_none()
        {
            panic!(
                "{} does not stream from {} within 30 s:\n{}",
                s.name,
                upstream.name,
                s.log()
            );
        }
    }

    /// Makes server `old` (a former primary) a standby of `new`: stops it if it runs,
    /// `pg_rewind -R` from `new` (a no-op if their histories did not diverge), starts it and
    /// waits until it streams.
    pub fn rejoin_as_standby(&mut self, old: usize, new: usize) {
        self.servers[old].stop();
        // A promotion only requests its checkpoint; until it is done the new primary's
        // control file still names the old timeline, and pg_rewind would copy a state that
        // cannot recover ("requested timeline 3 does not contain minimum recovery point").
        if let Err(e) = self.servers[new].psql("CHECKPOINT") {
            panic!("CHECKPOINT on {}: {e}", self.servers[new].name);
        }
        let new_port = self.servers[new].port;
        let s = &self.servers[old];
        let mut c = self.bin.server_cmd("pg_rewind", &self.root);
        c.arg("--target-pgdata")
            .arg(&s.data)
            .arg(format!(
                "--source-server=host=127.0.0.1 port={new_port} user=postgres dbname=postgres"
            ))
            .args(["--write-recovery-conf", "--no-sync"]);
        if let Err(e) = run(c, Duration::from_secs(120)) {
            panic!("pg_rewind {}: {e}", s.name);
        }
        // pg_rewind -R writes it; without a rewind some versions do not.
        let signal = s.data.join("standby.signal");
        if !signal.exists() {
            fs::write(&signal, "").expect("standby.signal");
            if let Some((uid, gid)) = self.bin.run_as {
                std::os::unix::fs::chown(&signal, Some(uid), Some(gid)).expect("chown");
            }
        }
        let s = &mut self.servers[old];
        s.upstream = Some(new_port);
        s.start();
        self.wait_streaming(old);
    }

    /// Inserts a row through `addr` (a server, or a proxy in front of one) as the superuser:
    /// `Ok` only if a primary took the write.
    pub fn write(&self, addr: SocketAddr, note: &str) -> Result<(), String> {
        psql_at(
            &self.bin,
            addr,
            &format!(
                "INSERT INTO {WRITE_TABLE} (note) VALUES ({})",
                literal(note)
            ),
        )
        .map(drop)
    }
}

fn append(path: &Path, text: &str) {
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    writeln!(f, "\n# maas-vip tests\n{text}").expect("append");
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        for s in self.servers.iter_mut().rev() {
            if s.postmaster.is_some() {
                let mut c = s.bin.server_cmd("pg_ctl", &s.root);
                c.arg("stop")
                    .arg("-D")
                    .arg(&s.data)
                    .args(["-m", "immediate", "-w", "-t", "10"]);
                let _ = run(c, Duration::from_secs(15));
                s.kill();
            }
        }
        let _ = fs::remove_dir_all(&self.root);
    }
}
