//! Least privilege (issue 7, item 5, the parts outside VRRP namespaces): the real daemon runs as
//! `nobody` with only CAP_NET_ADMIN, CAP_NET_RAW and CAP_NET_BIND_SERVICE (set by `setpriv`),
//! binds a port below 1024 on loopback and serves; without CAP_NET_BIND_SERVICE it cannot, and
//! says so. `maas-vip check` warns when a file holding `auth_pass` is world-readable, and
//! refuses an admin endpoint on a non-loopback address without a token.
//!
//! The `setpriv` tests need root (to become `nobody` with chosen capabilities): they are
//! `#[ignore]`d, run as root with `--include-ignored` (see the README), and fail, saying why,
//! where they cannot run. The `check` tests need no root.

use std::fs::File;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use maas_vip_tests::*;

/// CAP_NET_BIND_SERVICE (10), CAP_NET_ADMIN (12), CAP_NET_RAW (13).
const DAEMON_CAPS: u64 = (1 << 10) | (1 << 12) | (1 << 13);
const CAP_LIST: &str = "net_admin,net_raw,net_bind_service";

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Call first in a `setpriv` test (`#[ignore]`d: it needs root): panics, saying why, unless
/// this process is root and setpriv runs.
fn require_root(test: &str) {
    assert!(
        is_root(),
        "{test}: needs root, not root here (it is #[ignore]d: run it as root with --include-ignored)"
    );
    netns::require_tool(test, "setpriv");
}

/// A free privileged port on 127.0.0.1 (tried from 81 up).
fn free_low_port() -> u16 {
    (81..1024)
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port below 1024 on 127.0.0.1")
}

/// `maas-vip run` as nobody:nogroup with exactly `caps` (inheritable, ambient and bounding
/// sets, so that they survive the exec and nothing else can be regained).
fn run_as_nobody(config: &Path, caps: &str, log: &Path) -> Child {
    let mut setpriv = Command::new("setpriv");
    setpriv.args(["--reuid=65534", "--regid=65534", "--clear-groups"]);
    run_with_caps(setpriv, config, caps, log)
}

/// `maas-vip run` through `setpriv` with exactly `caps`, as the user `setpriv` has been told
/// (root by default: what the unit does, it has no `User=`).
fn run_with_caps(mut setpriv: Command, config: &Path, caps: &str, log: &Path) -> Child {
    let set = format!("-all,{}", plus(caps));
    setpriv
        .args([
            &format!("--inh-caps={set}"),
            &format!("--ambient-caps={set}"),
            &format!("--bounding-set={set}"),
            "--",
        ])
        .arg(maas_vip_bin())
        .args(["run", "-c"])
        .arg(config)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(log).expect("log file"))
        .spawn()
        .expect("run setpriv")
}

fn plus(caps: &str) -> String {
    caps.split(',')
        .filter(|c| !c.is_empty())
        .map(|c| format!("+{c}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A directory and config file that `nobody` can read.
fn readable_config(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let path = dir.path().join("maas-vip.toml");
    std::fs::write(&path, text).expect("write config");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    (dir, path)
}

fn status_field(pid: u32, key: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_owned()))
        .unwrap_or_default()
}

struct Killed(Child);

impl Killed {
    /// The child's exit status once it has exited; panics with `still_running` if it is still
    /// running after `limit`.
    fn exit_within(&mut self, limit: Duration, still_running: &str) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = self.0.try_wait().expect("wait") {
                return st;
            }
            assert!(Instant::now() < deadline, "{still_running}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: setpriv drops to nobody with chosen capabilities"]
async fn daemon_runs_as_nobody_with_three_capabilities_and_binds_a_low_port() {
    require_root("daemon_runs_as_nobody_with_three_capabilities_and_binds_a_low_port");
    let server = name_server("r1").await;
    let port = free_low_port();
    let (dir, path) = readable_config(&format!(
        "[[frontend]]\nname = \"maas\"\nbind = [\"127.0.0.1:{port}\"]\n\
         [[frontend.server]]\nname = \"r1\"\naddress = \"{server}\"\ncheck = false\n\
         [admin]\nenabled = false\n"
    ));
    let log = dir.path().join("stderr.log");
    let mut child = Killed(run_as_nobody(&path, CAP_LIST, &log));
    let pid = child.0.id();
    let front = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(15);
    let body = loop {
        if let Ok(b) = fetch(front).await {
            break b;
        }
        if let Some(st) = child.0.try_wait().expect("wait") {
            panic!(
                "maas-vip as nobody exited ({st}):\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "not serving on {front} in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(body, b"r1");

    // The process that serves is nobody, with exactly the three capabilities.
    let uid = status_field(pid, "Uid:");
    let cap = |k: &str| u64::from_str_radix(&status_field(pid, k), 16).expect("a capability mask");
    println!(
        "as nobody on 127.0.0.1:{port}: Uid {uid}; CapEff {:#x}, CapPrm {:#x}, CapBnd {:#x}, \
         CapAmb {:#x}; served {:?}",
        cap("CapEff:"),
        cap("CapPrm:"),
        cap("CapBnd:"),
        cap("CapAmb:"),
        String::from_utf8_lossy(&body)
    );
    assert!(uid.split_whitespace().all(|u| u == "65534"), "Uid {uid}");
    assert_eq!(cap("CapEff:"), DAEMON_CAPS);
    assert_eq!(cap("CapBnd:"), DAEMON_CAPS);
    assert_eq!(status_field(pid, "NoNewPrivs:"), "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root: setpriv drops to nobody with chosen capabilities"]
async fn without_net_bind_service_a_low_port_is_refused_with_a_clear_error() {
    require_root("without_net_bind_service_a_low_port_is_refused_with_a_clear_error");
    let port = free_low_port();
    let (dir, path) = readable_config(&format!(
        "[[frontend]]\nname = \"maas\"\nbind = [\"127.0.0.1:{port}\"]\n\
         [[frontend.server]]\nname = \"r1\"\naddress = \"127.0.0.1:9\"\ncheck = false\n\
         [admin]\nenabled = false\n"
    ));
    let log = dir.path().join("stderr.log");
    let mut child = Killed(run_as_nobody(&path, "net_admin,net_raw", &log));
    let status = child.exit_within(
        Duration::from_secs(15),
        &format!("maas-vip without CAP_NET_BIND_SERVICE still running (it bound :{port}?)"),
    );
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    println!("without CAP_NET_BIND_SERVICE: {status}; log:\n{text}");
    assert_eq!(status.code(), Some(1), "runtime failure is exit code 1");
    assert!(
        text.contains(&format!("127.0.0.1:{port}")),
        "the error names the address"
    );
}

/// The `[[announce]]` VIP interface under the unit's capabilities (root without
/// CAP_DAC_OVERRIDE, as the unit runs it), in a namespace of its own: a TUN device needs
/// CAP_NET_ADMIN and /dev/net/tun read-write (the unit's `DeviceAllow=` and `BindPaths=` give
/// that under `PrivateDevices=yes`; the node is root's, mode 0600 on some hosts, 0666 on
/// Debian), nothing more; without CAP_NET_ADMIN the daemon fails at start and says what it
/// lacks.
#[test]
#[ignore = "needs root and network namespaces: setpriv to chosen capabilities, a TUN in a namespace"]
fn announce_interface_needs_only_net_admin_and_dev_net_tun() {
    require_root("announce_interface_needs_only_net_admin_and_dev_net_tun");
    netns::require("announce_interface_needs_only_net_admin_and_dev_net_tun");
    let ns = netns::Netns::new("tunpriv");
    ns.ip(&["link", "set", "lo", "up"]);
    let (dir, path) = readable_config(
        "[[frontend]]\nname = \"maas\"\nbind = [\"127.0.0.1:8080\"]\n\
         [[frontend.server]]\nname = \"r1\"\naddress = \"127.0.0.1:9\"\ncheck = false\n\
         [[announce]]\nname = \"bgp\"\nvirtual_ipaddresses = [\"10.95.0.100\"]\n\
         interface = \"mvtun0\"\ntrack_frontends = [\"maas\"]\nannounce_delay = \"0s\"\n\
         vtysh = \"/nonexistent/vtysh\"\n",
    );
    let log = dir.path().join("stderr.log");
    let link = || {
        let out = ns.ip_output(&["-o", "link", "show", "dev", "mvtun0"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let mut child = Killed(run_with_caps(ns.command("setpriv"), &path, CAP_LIST, &log));
    let announced = netns::wait_for(Duration::from_secs(15), || link().contains("LOWER_UP"));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        announced.is_some(),
        "no announced mvtun0 ({}):\n{text}",
        link()
    );
    let addrs = ns.ip_output(&["-o", "-4", "addr", "show", "dev", "mvtun0"]);
    assert!(String::from_utf8_lossy(&addrs.stdout).contains("10.95.0.100/32"));
    let _ = child.0.kill();
    let _ = child.0.wait();
    assert!(
        netns::wait_for(Duration::from_secs(5), || link().is_empty()).is_some(),
        "the interface goes with its owner"
    );

    let mut child = Killed(run_with_caps(
        ns.command("setpriv"),
        &path,
        "net_raw,net_bind_service",
        &log,
    ));
    let status = child.exit_within(
        Duration::from_secs(15),
        "still running without CAP_NET_ADMIN",
    );
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    println!("without CAP_NET_ADMIN: {status}; log:\n{text}");
    assert_eq!(status.code(), Some(1), "runtime failure is exit code 1");
    assert!(text.contains("needs CAP_NET_ADMIN"), "{text}");
}

fn check(path: &Path) -> Output {
    Command::new(maas_vip_bin())
        .args(["check", "-c"])
        .arg(path)
        .output()
        .expect("run maas-vip check")
}

/// `check` warns about a world-readable file that holds a VRRP password (and stays quiet when
/// only root and its group can read it). The file stays usable: exit code 0 either way.
#[test]
fn check_warns_when_a_file_with_auth_pass_is_world_readable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("maas-vip.toml");
    std::fs::write(
        &path,
        "[[vrrp]]\nname = \"maas_region\"\ninterface = \"lo\"\nvirtual_router_id = 51\n\
         auth_pass = \"s3cret\"\nvirtual_ipaddresses = [\"10.0.0.100/24\"]\n\
         [admin]\nenabled = false\n",
    )
    .expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let open = check(&path);
    let text =
        String::from_utf8_lossy(&open.stdout).to_string() + &String::from_utf8_lossy(&open.stderr);
    println!("mode 0644:\n{text}");
    assert_eq!(open.status.code(), Some(0), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("warning:") && l.contains("every user can read it")),
        "no warning about a world-readable auth_pass:\n{text}"
    );

    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let closed = check(&path);
    let text = String::from_utf8_lossy(&closed.stdout).to_string()
        + &String::from_utf8_lossy(&closed.stderr);
    assert_eq!(closed.status.code(), Some(0), "{text}");
    assert!(!text.contains("every user can read it"), "{text}");
}

/// The admin endpoint (it can drain and disable servers) refuses a non-loopback bind without a
/// token, and takes one with a token. No root needed.
#[test]
fn admin_on_a_non_loopback_address_needs_a_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("maas-vip.toml");
    let base = "[[frontend]]\nname = \"maas\"\nbind = [\"127.0.0.1:8080\"]\n\
                [[frontend.server]]\nname = \"r1\"\naddress = \"127.0.0.1:5240\"\n";
    std::fs::write(&path, format!("{base}[admin]\nbind = \"0.0.0.0:5249\"\n")).expect("write");
    let open = check(&path);
    let text =
        String::from_utf8_lossy(&open.stdout).to_string() + &String::from_utf8_lossy(&open.stderr);
    assert_eq!(open.status.code(), Some(2), "{text}");
    assert!(text.contains("not loopback"), "{text}");

    std::fs::write(
        &path,
        format!("{base}[admin]\nbind = \"0.0.0.0:5249\"\ntoken = \"0123456789abcdefXYZ\"\n"),
    )
    .expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let with_token = check(&path);
    assert_eq!(
        with_token.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&with_token.stdout)
    );
}
