//! `maas-vip demo` end to end: it runs, reports a master, a takeover time and the failed and
//! delayed requests, and leaves no namespace, process or temporary directory behind, also when
//! interrupted with SIGINT.
//!
//! Needs root and `ip netns`, so the tests are `#[ignore]`d: run them as root with
//! `--include-ignored` (see the README); they fail, saying why, where they cannot run.
//! The tests of this file run one at a time.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use maas_vip_tests::maas_vip_bin;
use maas_vip_tests::netns::require;

static SERIAL: Mutex<()> = Mutex::new(());

fn bin() -> PathBuf {
    let b = maas_vip_bin();
    assert!(
        b.exists(),
        "{} not built: run `cargo test --workspace` or `cargo build -p maas-vip` first",
        b.display()
    );
    b
}

fn netns_list() -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

fn netns_pids(name: &str) -> Vec<u32> {
    let out = Command::new("ip")
        .args(["netns", "pids", name])
        .output()
        .expect("ip netns pids");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Whether `pid` runs (exists and is not a zombie).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next().map(|st| st != "Z"))
        })
        .unwrap_or(false)
}

/// A `maas-vip demo` run: its stdout line by line, its stderr, and every pid seen in its
/// namespaces while it ran.
struct Demo {
    child: Child,
    prefix: String,
    lines: Receiver<String>,
    stdout: Vec<String>,
    stderr: Arc<Mutex<String>>,
    pids: Arc<Mutex<BTreeSet<u32>>>,
    stop: Arc<AtomicBool>,
    poller: Option<JoinHandle<()>>,
}

impl Demo {
    fn start() -> Demo {
        let mut child = Command::new(bin())
            .arg("demo")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting maas-vip demo");
        let prefix = format!("mvdemo{}-", child.id());
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().expect("stderr");
        let e = stderr.clone();
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            e.lock().unwrap_or_else(|p| p.into_inner()).push_str(&s);
        });
        let pids = Arc::new(Mutex::new(BTreeSet::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let poller = {
            let (pids, stop, prefix) = (pids.clone(), stop.clone(), prefix.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    for ns in netns_list().iter().filter(|n| n.starts_with(&prefix)) {
                        let found = netns_pids(ns);
                        pids.lock().unwrap_or_else(|p| p.into_inner()).extend(found);
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            })
        };
        Demo {
            child,
            prefix,
            lines,
            stdout: Vec::new(),
            stderr,
            pids,
            stop,
            poller: Some(poller),
        }
    }

    /// Reads stdout until a line contains `needle` (returned) or `limit` passes.
    fn wait_line(&mut self, needle: &str, limit: Duration) -> Option<String> {
        let end = Instant::now() + limit;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.stdout.push(l.clone());
                    if l.contains(needle) {
                        return Some(l);
                    }
                }
                Err(_) => return None,
            }
        }
    }

    /// Waits for the exit (bounded), then collects the rest of stdout.
    fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let end = Instant::now() + limit;
        let st = loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                break st;
            }
            if Instant::now() >= end {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "maas-vip demo still ran after {limit:?}; output so far:\n{}",
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        // stdout closes when the demo and its children are gone.
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.stdout.push(l);
        }
        self.stop.store(true, Ordering::SeqCst);
        if let Some(p) = self.poller.take() {
            let _ = p.join();
        }
        st
    }

    fn output(&self) -> String {
        format!(
            "---- stdout\n{}\n---- stderr\n{}",
            self.stdout.join("\n"),
            self.stderr.lock().unwrap_or_else(|p| p.into_inner())
        )
    }

    fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .args([format!("-{sig}"), self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(st.success());
    }

    /// Nothing of the run is left: no namespace with its prefix, none of the processes seen
    /// in its namespaces (at least `min_pids` of them seen), no temporary directory.
    fn assert_clean(&self, min_pids: usize) {
        let left: Vec<String> = netns_list()
            .into_iter()
            .filter(|n| n.starts_with(&self.prefix))
            .collect();
        assert!(
            left.is_empty(),
            "namespaces left: {left:?}\n{}",
            self.output()
        );
        let pids = self.pids.lock().unwrap_or_else(|p| p.into_inner()).clone();
        assert!(
            pids.len() >= min_pids,
            "saw only {} processes in the namespaces: {pids:?}",
            pids.len()
        );
        let running: Vec<u32> = pids.iter().copied().filter(|p| alive(*p)).collect();
        assert!(running.is_empty(), "processes left: {running:?}");
        let dir = std::env::temp_dir().join(format!(
            "{}.maas-vip-demo",
            self.prefix.trim_end_matches('-')
        ));
        assert!(!dir.exists(), "{} left", dir.display());
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The number after `label` in `text`, up to the next space.
fn number_after(text: &str, label: &str) -> Option<f64> {
    let at = text.find(label)? + label.len();
    text[at..].split_whitespace().next()?.parse().ok()
}

#[test]
#[ignore = "needs root and network namespaces: the demo builds its lab of namespaces"]
fn demo_runs_and_leaves_nothing_behind() {
    require("demo_runs_and_leaves_nothing_behind");
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let started = Instant::now();
    let mut demo = Demo::start();
    let st = demo.wait_exit(Duration::from_secs(90));
    let took = started.elapsed();
    let out = demo.stdout.join("\n");
    eprintln!("{}", demo.output());
    assert_eq!(st.code(), Some(0), "{}", demo.output());
    assert!(took < Duration::from_secs(60), "took {took:?}");

    assert!(out.contains("Master: region-1"), "a master is named");
    let takeover = number_after(&out, "Takeover time: ").expect("a takeover time");
    // SIGKILL: Master_Down_Interval (3 x 1 s + skew 0.61 s for priority 100) after the last
    // advert, then the gratuitous ARP reaches the client.
    assert!(
        (2.0..8.0).contains(&takeover),
        "takeover {takeover} s out of the expected range"
    );
    let failed = number_after(&out, "Failed requests during the switch: ").expect("failed count");
    let line = out
        .lines()
        .find(|l| l.contains("Failed requests during the switch: "))
        .expect("failed line");
    let total = number_after(line, " of ").expect("total count");
    assert!(failed <= total && total > 0.0, "{line}");
    // The VIP left the dead master at once (release-vips, as ExecStopPost= runs it): the
    // requests of the takeover are delayed, not refused. One sent between the kill and the
    // release may still be refused.
    assert!(
        out.contains(
            "`maas-vip release-vips` ran on region-1: 10.123.0.100 is no longer on region-1"
        ),
        "release-vips emulated"
    );
    assert!(failed <= 1.0, "{line}");
    let delayed = number_after(&out, "Delayed requests during the switch: ").expect("delayed");
    assert!(
        delayed >= total / 2.0,
        "most requests of the takeover delayed: {delayed} of {total}"
    );
    assert!(out.contains("Master: region-2"), "region-2 takes over");
    assert!(out.contains("Master again: region-1"), "preemption");
    for r in ["region-1", "region-2", "region-3"] {
        assert!(
            out.contains(&format!("answered by {r}")),
            "{r} answered some of the 30 requests"
        );
        assert!(
            out.contains(&format!("maas-vip on {r} exited with status 0")),
            "{r} stopped cleanly"
        );
    }
    demo.assert_clean(10);
}

#[test]
#[ignore = "needs root and network namespaces: the demo builds its lab of namespaces"]
fn demo_interrupted_by_sigint_leaves_nothing_behind() {
    require("demo_interrupted_by_sigint_leaves_nothing_behind");
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut demo = Demo::start();
    // Interrupt once everything runs (the election is over).
    let seen = demo.wait_line("Master: ", Duration::from_secs(30));
    assert!(seen.is_some(), "no master named:\n{}", demo.output());
    // Let the poller see the processes of every namespace.
    std::thread::sleep(Duration::from_millis(500));
    demo.signal("INT");
    let st = demo.wait_exit(Duration::from_secs(20));
    assert_eq!(st.code(), Some(130), "{}", demo.output());
    let out = demo.stdout.join("\n");
    assert!(out.contains("SIGINT"), "{}", demo.output());
    assert!(
        !out.contains("Takeover time"),
        "interrupted before the failover"
    );
    demo.assert_clean(10);
}

#[test]
fn demo_without_root_says_why() {
    // As root, drop to nobody with setpriv (util-linux); otherwise run as we are.
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    let bin = bin();
    let out = if root {
        let o = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&bin)
            .arg("demo")
            .output();
        match o {
            Ok(o) if !String::from_utf8_lossy(&o.stderr).contains("setpriv:") => o,
            Ok(o) => panic!(
                "demo_without_root_says_why: setpriv cannot drop to nobody: {}",
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => panic!("demo_without_root_says_why: cannot run setpriv: {e}"),
        }
    } else {
        Command::new(&bin).arg("demo").output().expect("run demo")
    };
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("needs root"), "{err}");
    assert!(err.contains("sudo maas-vip demo"), "{err}");
}

#[test]
#[ignore = "needs root and network namespaces: the demo builds its lab of namespaces"]
fn demo_removes_what_a_killed_demo_left() {
    require("demo_removes_what_a_killed_demo_left");
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // SIGKILL cannot be caught: the namespaces and processes of `killed` stay behind...
    let mut killed = Demo::start();
    let seen = killed.wait_line("Master: ", Duration::from_secs(30));
    assert!(seen.is_some(), "no master named:\n{}", killed.output());
    std::thread::sleep(Duration::from_millis(500));
    killed.signal("KILL");
    killed.wait_exit(Duration::from_secs(10));
    let left = netns_list()
        .into_iter()
        .filter(|n| n.starts_with(&killed.prefix))
        .count();
    assert_eq!(left, 5, "the killed demo's namespaces are still there");

    // ...until the next demo starts: it removes them (and what runs in them) first.
    let mut next = Demo::start();
    let line = next.wait_line("removed", Duration::from_secs(20));
    assert!(
        line.as_deref()
            .is_some_and(|l| l.contains("namespace(s) left behind by an earlier demo")),
        "{line:?}\n{}",
        next.output()
    );
    next.signal("INT");
    let st = next.wait_exit(Duration::from_secs(20));
    assert_eq!(st.code(), Some(130), "{}", next.output());
    killed.assert_clean(10);
    next.assert_clean(0);
}

#[test]
#[ignore = "needs root and network namespaces: the demo builds its lab of namespaces"]
fn demo_bgp_spreads_withdraws_on_kill_and_leaves_nothing_behind() {
    require("demo_bgp_spreads_withdraws_on_kill_and_leaves_nothing_behind");
    if let Err(why) = maas_vip_tests::bgp::frr_available() {
        panic!("demo_bgp: needs FRR: {why}");
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("demo.log");
    let mut child = Command::new(bin())
        .args(["demo", "--bgp"])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).expect("log"))
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting maas-vip demo --bgp");
    let pid = child.id();
    let start = Instant::now();
    let st = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("demo --bgp did not end within 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = std::fs::read_to_string(&log).unwrap_or_default();
    eprintln!("{out}");
    assert_eq!(st.code(), Some(0), "{out}");
    for want in [
        "router has three next hops",
        "failed: 0",
        "Withdrawn at the router",
        "region-3 0; failed: 0",
        "advertised to 10.125.2.1",
        "every namespace, process and temporary file is gone",
    ] {
        assert!(out.contains(want), "{want:?} missing");
    }
    let left: Vec<String> = netns_list()
        .into_iter()
        .filter(|n| n.starts_with(&format!("mvdemo{pid}-")))
        .collect();
    assert!(left.is_empty(), "namespaces left: {left:?}");
}
