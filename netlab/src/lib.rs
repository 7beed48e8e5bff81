//! Network namespaces joined by a bridge, and processes run inside them, each owned by a guard
//! whose `Drop` removes it: the lab of `maas-vip demo` (bin/src/demo/lab.rs) and of the
//! integration tests (tests/src/netns.rs), which name things their own way and add what only
//! they need on top.
//!
//! A [`Lan`] is a bridge in a namespace of its own and one namespace per host, joined by veth
//! pairs created directly between those namespaces: nothing is ever created in, or changed on,
//! the namespace the caller runs in. Dropping a [`Netns`] kills whatever still runs in it before
//! deleting it. Shelling out to `ip` is fine here: this is scaffolding for a try-out and for
//! tests, not the VIP path (the daemon itself uses netlink). Every `ip` and `kill` runs in a
//! process group of its own, so that a Ctrl-C on the terminal does not kill it halfway.

use std::ffi::OsStr;
use std::fmt;
use std::fs::File;
use std::net::IpAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// The interface of each host of a [`Lan`], as on a real region host.
pub const IFACE: &str = "eth0";

/// A command of the lab that could not be run or failed.
#[derive(Debug)]
pub struct Error(String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

/// Runs `ip args...` to its end, its output whatever the status.
pub fn ip(args: &[&str]) -> Result<Output, Error> {
    Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .process_group(0)
        .output()
        .map_err(|e| Error(format!("running `ip {}`: {e}", args.join(" "))))
}

/// Runs `ip args...`; an error says what failed and why.
pub fn ip_ok(args: &[&str]) -> Result<(), Error> {
    let out = ip(args)?;
    if !out.status.success() {
        return Err(Error(format!(
            "`ip {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Checks that `ip netns` works here by adding and deleting the namespace `name`.
pub fn probe(name: &str) -> Result<(), Error> {
    ip_ok(&["netns", "add", name])?;
    ip_ok(&["netns", "del", name])
}

/// The namespaces whose name starts with `prefix`.
pub fn namespaces_with_prefix(prefix: &str) -> Vec<String> {
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

/// Pids of the processes in the namespace `name`.
pub fn netns_pids(name: &str) -> Vec<u32> {
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
pub fn send_signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .status();
}

/// Kills whatever runs in the namespace `name` and deletes it.
pub fn remove_netns(name: &str) {
    for pid in netns_pids(name) {
        send_signal(pid, "KILL");
    }
    let _ = ip(&["netns", "del", name]);
}

/// One network namespace with its loopback up; deleted on drop with whatever still runs in it.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates the namespace `name`.
    pub fn add(name: String) -> Result<Netns, Error> {
        ip_ok(&["netns", "add", &name])?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn in_ns<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut a = vec!["-n", self.name.as_str()];
        a.extend_from_slice(args);
        a
    }

    /// `ip -n NAME args...`.
    pub fn ip(&self, args: &[&str]) -> Result<(), Error> {
        ip_ok(&self.in_ns(args))
    }

    /// `ip -n NAME args...`, its output whatever the status.
    pub fn ip_output(&self, args: &[&str]) -> Result<Output, Error> {
        ip(&self.in_ns(args))
    }

    /// A command that runs `program` inside the namespace (`ip netns exec` execs it, so the
    /// child's pid is the program's).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Runs `program args...` inside the namespace to its end, in a process group of its own,
    /// its output captured.
    pub fn run(&self, program: &Path, args: &[&str]) -> Result<Output, Error> {
        self.command(program)
            .args(args)
            .stdin(Stdio::null())
            .process_group(0)
            .output()
            .map_err(|e| {
                Error(format!(
                    "running {} in {}: {e}",
                    program.display(),
                    self.name
                ))
            })
    }

    /// A veth pair: `local` here, `peer` in `other` (neither is set up).
    pub fn veth(&self, local: &str, other: &Netns, peer: &str) -> Result<(), Error> {
        self.ip(&[
            "link",
            "add",
            local,
            "type",
            "veth",
            "peer",
            "name",
            peer,
            "netns",
            other.name(),
        ])
    }

    /// Pids of the processes in the namespace.
    pub fn pids(&self) -> Vec<u32> {
        netns_pids(&self.name)
    }

    /// The addresses of `family` ("inet" or "inet6") on `dev`, as "addr/len".
    pub fn addrs(&self, dev: &str, family: &str) -> Vec<String> {
        let flag = if family == "inet" { "-4" } else { "-6" };
        let Ok(out) = self.ip_output(&[flag, "-o", "addr", "show", "dev", dev]) else {
            return Vec::new();
        };
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                w.find(|x| *x == family)?;
                w.next().map(str::to_string)
            })
            .collect()
    }

    /// Whether `dev` carries `addr` (any prefix length), IPv4 or IPv6.
    pub fn has_addr(&self, dev: &str, addr: impl Into<IpAddr>) -> bool {
        let addr = addr.into();
        let want = format!("{addr}/");
        let family = if addr.is_ipv4() { "inet" } else { "inet6" };
        self.addrs(dev, family).iter().any(|a| a.starts_with(&want))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        remove_netns(&self.name);
    }
}

/// A bridge `br0` in a namespace of its own and one namespace per host, each host's [`IFACE`]
/// joined to the bridge port `p<i>` by a veth pair.
#[derive(Debug)]
pub struct Lan {
    /// One namespace per host, in the order given (dropped before the bridge).
    pub hosts: Vec<Netns>,
    /// The bridge's namespace.
    pub bridge: Netns,
}

impl Lan {
    /// Builds the LAN: the bridge in the namespace `bridge`, the `hosts` as (namespace name,
    /// address on a /24). On an error, what was built so far is removed by the guards.
    pub fn build(
        bridge: String,
        hosts: impl IntoIterator<Item = (String, IpAddr)>,
    ) -> Result<Lan, Error> {
        let bridge = Netns::add(bridge)?;
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
            hosts: Vec::new(),
            bridge,
        };
        for (i, (name, addr)) in hosts.into_iter().enumerate() {
            let ns = Netns::add(name)?;
            let port = Lan::port(i);
            lan.bridge.veth(&port, &ns, IFACE)?;
            lan.bridge
                .ip(&["link", "set", &port, "master", "br0", "up"])?;
            ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", IFACE])?;
            ns.ip(&["link", "set", IFACE, "up"])?;
            lan.hosts.push(ns);
        }
        Ok(lan)
    }

    /// The bridge port of host `i`.
    pub fn port(i: usize) -> String {
        format!("p{i}")
    }
}

/// A program run in a namespace, its stderr (and its stdout unless piped) appended to a log
/// file; killed and reaped (bounded) on drop.
#[derive(Debug)]
pub struct Proc {
    child: Child,
    exited: Option<ExitStatus>,
    log: PathBuf,
}

impl Proc {
    /// Starts `command` (made by [`Netns::command`], its arguments, environment and process
    /// group set by the caller) with its output appended to `log`; with `piped`, its stdin and
    /// stdout are pipes ([`Proc::take_stdio`]), otherwise stdin is /dev/null.
    pub fn start(mut command: Command, log: PathBuf, piped: bool) -> Result<Proc, Error> {
        let open = || {
            File::options()
                .create(true)
                .append(true)
                .open(&log)
                .map_err(|e| Error(format!("opening {}: {e}", log.display())))
        };
        if piped {
            command.stdin(Stdio::piped()).stdout(Stdio::piped());
        } else {
            command.stdin(Stdio::null()).stdout(open()?);
        }
        command.stderr(open()?);
        let child = command
            .spawn()
            .map_err(|e| Error(format!("starting {command:?}: {e}")))?;
        Ok(Proc {
            child,
            exited: None,
            log,
        })
    }

    /// The pipes of a [`Proc::start`]ed with `piped`, once.
    pub fn take_stdio(&mut self) -> Option<(ChildStdin, ChildStdout)> {
        Some((self.child.stdin.take()?, self.child.stdout.take()?))
    }

    /// Its pid (the program's: `ip netns exec` execs it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by name ("TERM", "INT", ...); nothing once it is known to have exited.
    pub fn signal(&self, sig: &str) {
        if self.exited.is_none() {
            send_signal(self.pid(), sig);
        }
    }

    /// Sends SIGKILL, without waiting.
    pub fn kill(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
        }
    }

    /// SIGKILL and reap, waiting `limit` at most for it to go.
    pub fn kill9(&mut self, limit: Duration) {
        self.kill();
        self.wait_exit(limit);
    }

    /// Its exit status if it has exited (reaping it), without waiting.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited
    }

    /// Waits up to `limit` for it to exit, polling every 5 ms.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + limit;
        loop {
            if let Some(st) = self.try_wait() {
                return Some(st);
            }
            if Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        self.try_wait().is_none()
    }

    /// Where its output goes.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Everything it has written to its log so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = self.output();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9(Duration::from_secs(1));
    }
}
