//! The demo's lab: network namespaces joined by a bridge, processes run inside them and a
//! temporary directory, each owned by a guard whose `Drop` removes it, so that nothing is left
//! behind on success, on error, on a panic or when a signal cancels the run.
//!
//! Everything is created inside namespaces named `mvdemo<pid>-<role>`: the bridge lives in a
//! namespace of its own and veth pairs are created directly between namespaces, so nothing is
//! ever created in, or changed on, the namespace the demo is started from. Shelling out to `ip`
//! is fine here: this is scaffolding for the try-out, not the VIP path (the daemon itself uses
//! netlink).

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

use super::helpers::Reply;

/// The first part of every namespace and directory name of a demo; the pid follows.
pub(super) const PREFIX: &str = "mvdemo";

/// The interface of each host, as on a real region host.
pub(super) const IFACE: &str = "eth0";

/// `mvdemo<pid>`: this run's namespaces are `mvdemo<pid>-<role>`.
pub(super) fn run_prefix() -> String {
    format!("{PREFIX}{}", std::process::id())
}

/// Runs `ip args...` in a process group of its own, so that a Ctrl-C on the terminal does not
/// kill it halfway: the demo sees the signal at its next step and cleans up.
fn ip(args: &[&str]) -> anyhow::Result<Output> {
    Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .process_group(0)
        .output()
        .with_context(|| format!("running `ip {}`", args.join(" ")))
}

fn ip_ok(args: &[&str]) -> anyhow::Result<()> {
    let out = ip(args)?;
    if !out.status.success() {
        bail!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
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
    let name = format!("{}-probe", run_prefix());
    ip_ok(&["netns", "add", &name])?;
    ip_ok(&["netns", "del", &name])
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

/// The namespaces whose name starts with `prefix`.
pub(super) fn namespaces_with_prefix(prefix: &str) -> Vec<String> {
    ip(&["netns", "list"])
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(|l| l.split_whitespace().next())
                .filter(|n| n.starts_with(prefix))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn netns_pids(name: &str) -> Vec<u32> {
    ip(&["netns", "pids", name])
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Sends `sig` ("TERM", "KILL", ...) to `pid` with kill(1).
pub(super) fn send_signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .status();
}

fn remove_netns(name: &str) {
    for pid in netns_pids(name) {
        send_signal(pid, "KILL");
    }
    let _ = ip(&["netns", "del", name]);
}

/// One network namespace with its loopback up; deleted on drop with whatever still runs in it.
#[derive(Debug)]
pub(super) struct Netns {
    name: String,
}

impl Netns {
    /// Creates the namespace `name`.
    pub(super) fn add(name: String) -> anyhow::Result<Netns> {
        ip_ok(&["netns", "add", &name])?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name.
    pub(super) fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NAME args...`.
    pub(super) fn ip(&self, args: &[&str]) -> anyhow::Result<()> {
        let mut a = vec!["-n", self.name.as_str()];
        a.extend_from_slice(args);
        ip_ok(&a)
    }

    /// Runs `exe args...` inside the namespace to its end (as systemd runs an `ExecStopPost=`
    /// command), its own process group, its output captured.
    pub(super) fn run(&self, exe: &Path, args: &[&str]) -> anyhow::Result<Output> {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .arg(exe)
            .args(args)
            .stdin(Stdio::null())
            .process_group(0)
            .output()
            .with_context(|| format!("running {} in {}", exe.display(), self.name))
    }

    /// Whether `dev` carries `addr` (any prefix length).
    pub(super) fn has_addr(&self, dev: &str, addr: Ipv4Addr) -> bool {
        let want = format!("{addr}/");
        ip(&["-n", &self.name, "-4", "-o", "addr", "show", "dev", dev])
            .map(|o| {
                String::from_utf8_lossy(&o.stdout).lines().any(|l| {
                    l.split_whitespace()
                        .skip_while(|w| *w != "inet")
                        .nth(1)
                        .is_some_and(|a| a.starts_with(&want))
                })
            })
            .unwrap_or(false)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        remove_netns(&self.name);
    }
}

/// A bridge in a namespace of its own and one namespace per machine, each joined to the bridge
/// by a veth pair.
#[derive(Debug)]
pub(super) struct Lan {
    /// One namespace per machine, in the order given, its `eth0` on the bridge (dropped
    /// before the bridge).
    pub(super) machines: Vec<Netns>,
    /// The bridge's namespace.
    pub(super) bridge: Netns,
}

impl Lan {
    /// Builds the LAN: `machines` are (name, address) on a /24. On an error, what was built so
    /// far is removed by the guards.
    pub(super) fn build(
        prefix: &str,
        machines: &[(&'static str, Ipv4Addr)],
    ) -> anyhow::Result<Lan> {
        let bridge = Netns::add(format!("{prefix}-lan"))?;
        bridge.ip(&["link", "add", "br0", "type", "bridge"])?;
        // Without multicast snooping every host sees every VRRP advert at once.
        bridge.ip(&[
            "link",
            "set",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ])?;
        bridge.ip(&["link", "set", "br0", "up"])?;
        let mut lan = Lan {
            machines: Vec::new(),
            bridge,
        };
        for (i, (name, addr)) in machines.iter().enumerate() {
            let ns = Netns::add(format!("{prefix}-{name}"))?;
            let port = format!("p{i}");
            lan.bridge.ip(&[
                "link", "add", &port, "type", "veth", "peer", "name", IFACE, "netns", &ns.name,
            ])?;
            lan.bridge
                .ip(&["link", "set", &port, "master", "br0", "up"])?;
            ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", IFACE])?;
            ns.ip(&["link", "set", IFACE, "up"])?;
            lan.machines.push(ns);
        }
        Ok(lan)
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
/// only, which then stops everything in order. Killed and reaped on drop.
#[derive(Debug)]
pub(super) struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    /// Starts `exe args...` in `ns`; stderr (and stdout unless `piped`) go to `log`.
    pub(super) fn spawn(
        ns: &Netns,
        exe: &Path,
        args: &[&str],
        log: PathBuf,
        piped: bool,
    ) -> anyhow::Result<Proc> {
        let out = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("opening {}", log.display()))?;
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns.name()])
            .arg(exe)
            .args(args)
            .env("RUST_LOG", "info")
            .process_group(0);
        if piped {
            c.stdin(Stdio::piped()).stdout(Stdio::piped());
        } else {
            c.stdin(Stdio::null()).stdout(out.try_clone()?);
        }
        c.stderr(out);
        let mut c = tokio::process::Command::from(c);
        c.kill_on_drop(true);
        let child = c
            .spawn()
            .with_context(|| format!("starting {} in {}", exe.display(), ns.name()))?;
        Ok(Proc { child, log })
    }

    /// Sends a signal by name ("TERM", ...); nothing if it has exited.
    pub(super) fn signal(&self, sig: &str) {
        if let Some(pid) = self.child.id() {
            send_signal(pid, sig);
        }
    }

    /// SIGKILL and reap (bounded).
    pub(super) async fn kill9(&mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.child.wait()).await;
    }

    /// Waits up to `limit` for it to exit.
    pub(super) async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        tokio::time::timeout(limit, self.child.wait())
            .await
            .ok()
            .and_then(Result::ok)
    }

    /// The last `n` lines of its log.
    pub(super) fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Where its output goes.
    pub(super) fn log(&self) -> &Path {
        &self.log
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.child.start_kill().is_ok() {
            // Reap it here (bounded) rather than leave a zombie to the runtime.
            let end = Instant::now() + Duration::from_secs(1);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
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
        let stdin = proc.child.stdin.take().context("client helper stdin")?;
        let stdout = proc.child.stdout.take().context("client helper stdout")?;
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
