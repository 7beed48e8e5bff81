//! The demo's lab: network namespaces joined by a bridge, processes run inside them and a
//! temporary directory, each owned by a guard whose `Drop` removes it, so that nothing is left
//! behind on success, on error, on a panic or when a signal cancels the run.
//!
//! Everything is created inside namespaces named `mvdemo<pid>-<role>`, with the `netlab` crate
//! (the tests' lab too): the bridge lives in a namespace of its own and veth pairs are created
//! directly between namespaces, so nothing is ever created in, or changed on, the namespace the
//! demo is started from. What is the demo's own: its names, the clean-up of earlier demos, and
//! processes waited on without blocking the runtime.

use std::net::Ipv4Addr;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use anyhow::Context;
use netlab::{ip, remove_netns};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{ChildStdin, ChildStdout};

use super::helpers::Reply;

/// The first part of every namespace and directory name of a demo; the pid follows.
pub(super) const PREFIX: &str = "mvdemo";

pub(super) use netlab::{namespaces_with_prefix, Netns, IFACE};

/// `mvdemo<pid>`: this run's namespaces are `mvdemo<pid>-<role>`.
pub(super) fn run_prefix() -> String {
    format!("{PREFIX}{}", std::process::id())
}

/// Whether this process runs as root (effective uid 0), read from /proc/self/status.
pub(super) fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// Checks that `ip netns` works here by adding and deleting a namespace.
pub(super) fn probe_netns() -> anyhow::Result<()> {
    Ok(netlab::probe(&format!("{}-probe", run_prefix()))?)
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The pid in a name made by [`run_prefix`] (`mvdemo1234-lan` -> 1234).
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let digits = rest.split(['-', '.']).next()?;
    digits.parse().ok()
}

/// Removes the namespaces and directories of earlier demos whose process is gone (killed with
/// SIGKILL, which no handler can catch). Returns how many namespaces went.
pub(super) fn remove_leftovers() -> usize {
    let mut removed = 0;
    if let Ok(out) = ip(&["netns", "list"]) {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Some(name) = line.split_whitespace().next() else {
                continue;
            };
            if owner_pid(name).is_some_and(|p| !pid_alive(p)) {
                remove_netns(name);
                removed += 1;
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if owner_pid(&name).is_some_and(|p| !pid_alive(p)) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    removed
}

/// A bridge in a namespace of its own (`<prefix>-lan`) and one namespace per machine
/// (`<prefix>-<name>`), each joined to the bridge by a veth pair.
#[derive(Debug)]
pub(super) struct Lan {
    /// One namespace per machine, in the order given, its `eth0` on the bridge (dropped
    /// before the bridge).
    pub(super) machines: Vec<Netns>,
    /// The bridge's namespace, kept for its `Drop`.
    _bridge: Netns,
}

impl Lan {
    /// Builds the LAN: `machines` are (name, address) on a /24. On an error, what was built so
    /// far is removed by the guards.
    pub(super) fn build(
        prefix: &str,
        machines: &[(&'static str, Ipv4Addr)],
    ) -> anyhow::Result<Lan> {
        let netlab::Lan { hosts, bridge } = netlab::Lan::build(
            format!("{prefix}-lan"),
            machines
                .iter()
                .map(|(name, addr)| (format!("{prefix}-{name}"), (*addr).into())),
        )?;
        Ok(Lan {
            machines: hosts,
            _bridge: bridge,
        })
    }
}

/// A private directory under the system's temporary directory, removed on drop.
#[derive(Debug)]
pub(super) struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `<tmp>/<name>` (mode 0700), replacing a leftover of the same name.
    pub(super) fn create(name: &str) -> anyhow::Result<TempDir> {
        let path = std::env::temp_dir().join(name);
        let _ = std::fs::remove_dir_all(&path);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        Ok(TempDir { path })
    }

    /// Its path.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A program run in a namespace (`ip netns exec` execs it, so the child's pid is the
/// program's), in a process group of its own so that a Ctrl-C on the terminal reaches the demo
/// only, which then stops everything in order. Killed and reaped on drop; waited on without
/// blocking the runtime.
#[derive(Debug)]
pub(super) struct Proc(netlab::Proc);

impl Proc {
    /// Starts `exe args...` in `ns`; stderr (and stdout unless `piped`) go to `log`.
    pub(super) fn spawn(
        ns: &Netns,
        exe: &Path,
        args: &[&str],
        log: PathBuf,
        piped: bool,
    ) -> anyhow::Result<Proc> {
        let mut c = ns.command(exe);
        c.args(args).env("RUST_LOG", "info").process_group(0);
        Ok(Proc(netlab::Proc::start(c, log, piped).with_context(
            || format!("starting {} in {}", exe.display(), ns.name()),
        )?))
    }

    /// Sends a signal by name ("TERM", ...); nothing if it has exited.
    pub(super) fn signal(&self, sig: &str) {
        self.0.signal(sig);
    }

    /// SIGKILL and reap (bounded).
    pub(super) async fn kill9(&mut self) {
        self.0.kill();
        self.wait_exit(Duration::from_secs(2)).await;
    }

    /// Waits up to `limit` for it to exit.
    pub(super) async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + limit;
        loop {
            if let Some(st) = self.0.try_wait() {
                return Some(st);
            }
            if Instant::now() >= end {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The last `n` lines of its log.
    pub(super) fn log_tail(&self, n: usize) -> String {
        self.0.log_tail(n)
    }

    /// Where its output goes.
    pub(super) fn log(&self) -> &Path {
        self.0.log()
    }
}

/// A `maas-vip demo client` running in a namespace: each URL written to it is fetched there
/// (several at once if sent before the answers come) and answered with one JSON line.
#[derive(Debug)]
pub(super) struct Fetcher {
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    proc: Proc,
    next_id: u64,
}

/// Longer than the helper's own limit on a request, so that its answer always comes first.
const FETCH_LIMIT: Duration = Duration::from_secs(15);

impl Fetcher {
    /// Starts the client helper in `ns`.
    pub(super) fn spawn(ns: &Netns, exe: &Path, log: PathBuf) -> anyhow::Result<Fetcher> {
        let mut proc = Proc::spawn(ns, exe, &["demo", "client"], log, true)?;
        let (stdin, stdout) = proc.0.take_stdio().context("client helper pipes")?;
        let stdin = ChildStdin::from_std(stdin)?;
        let stdout = ChildStdout::from_std(stdout)?;
        Ok(Fetcher {
            stdin,
            lines: BufReader::new(stdout).lines(),
            proc,
            next_id: 1,
        })
    }

    /// Starts a GET of `url` from inside the namespace; its [`Reply`] comes from
    /// [`Fetcher::recv`] with the id returned.
    pub(super) async fn send(&mut self, url: &str) -> anyhow::Result<u64> {
        let id = self.next_id;
        self.next_id += 1;
        self.stdin
            .write_all(format!("{id} {url}\n").as_bytes())
            .await?;
        self.stdin.flush().await?;
        Ok(id)
    }

    /// The next answer to come, whichever request it is for. Cancel-safe (a line is read
    /// whole or not at all).
    pub(super) async fn recv(&mut self) -> anyhow::Result<Reply> {
        let line = tokio::time::timeout(FETCH_LIMIT, self.lines.next_line())
            .await
            .with_context(|| format!("the client helper did not answer within {FETCH_LIMIT:?}"))??
            .with_context(|| format!("the client helper exited: {}", self.proc.log_tail(5)))?;
        serde_json::from_str(&line).with_context(|| format!("client helper said {line:?}"))
    }

    /// GET `url` from inside the namespace and wait for its answer (none other may be pending).
    pub(super) async fn get(&mut self, url: &str) -> anyhow::Result<Reply> {
        let id = self.send(url).await?;
        loop {
            let r = self.recv().await?;
            if r.id == id {
                return Ok(r);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pid_reads_the_prefix() {
        assert_eq!(owner_pid("mvdemo1234-lan"), Some(1234));
        assert_eq!(owner_pid("mvdemo77-region-1"), Some(77));
        assert_eq!(owner_pid("mvdemo-x"), None);
        assert_eq!(owner_pid("mv1234-0-h0"), None, "the tests' namespaces");
        assert_eq!(owner_pid("other"), None);
    }
}
