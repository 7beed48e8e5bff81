//! Track scripts and notify programs: argv run directly (never through a shell), each in its
//! own process group so that a timeout kills everything it started, and always reaped.

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn, Instrument as _};

use crate::config::TrackScript;

/// How one run ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Exit status 0.
    Ok,
    /// Any other exit status or a signal.
    Failed(ExitStatus),
    /// Still running at the timeout: its process group was killed.
    TimedOut,
    /// Could not be started.
    SpawnError(std::io::Error),
}

impl Outcome {
    pub(crate) fn good(&self) -> bool {
        matches!(self, Outcome::Ok)
    }
}

/// A child in its own process group; dropping it unreaped kills the whole group.
struct GroupChild {
    child: Child,
    pgid: Option<u32>,
}

/// Resolves `script_user`: "uid", "uid:gid", or a name looked up in /etc/passwd (its primary
/// group). Read at each run, so a user added later is found without a reload.
pub fn resolve_user(spec: &str) -> std::io::Result<(u32, u32)> {
    let not_found = || {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("script_user `{spec}`: no such user in /etc/passwd"),
        )
    };
    if let Some((u, g)) = spec.split_once(':') {
        if let (Ok(u), Ok(g)) = (u.parse(), g.parse()) {
            return Ok((u, g));
        }
        return Err(not_found());
    }
    if let Ok(u) = spec.parse::<u32>() {
        return Ok((u, u));
    }
    let passwd = std::fs::read_to_string("/etc/passwd")?;
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 4 && f[0] == spec)
        .and_then(|f| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
        .ok_or_else(not_found)
}

impl GroupChild {
    fn spawn(argv: &[String], user: Option<&str>) -> std::io::Result<GroupChild> {
        let (prog, args) = argv
            .split_first()
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty argv"))?;
        let mut cmd = Command::new(prog);
        if let Some(user) = user {
            // std drops the supplementary groups when root changes uid (setgroups(0)).
            let (uid, gid) = resolve_user(user)?;
            cmd.uid(uid).gid(gid);
        }
        let child = cmd
            .args(args)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let pgid = child.id();
        Ok(GroupChild { child, pgid })
    }

    async fn wait(&mut self, timeout: Duration) -> Outcome {
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(Ok(st)) => {
                self.pgid = None;
                if st.success() {
                    Outcome::Ok
                } else {
                    Outcome::Failed(st)
                }
            }
            Ok(Err(e)) => Outcome::SpawnError(e),
            Err(_) => {
                self.kill_group();
                // Reap it now: no zombie.
                let _ = self.child.wait().await;
                self.pgid = None;
                Outcome::TimedOut
            }
        }
    }

    fn kill_group(&mut self) {
        if let Some(pgid) = self.pgid {
            if let Err(e) = crate::sys::kill_process_group(pgid, libc::SIGKILL) {
                debug!(pgid, error = %e, "killing the process group");
            }
        }
    }
}

impl Drop for GroupChild {
    fn drop(&mut self) {
        // Not reaped yet (we were cancelled): the leader is still ours, so its group id
        // cannot have been reused. tokio's kill_on_drop reaps the leader afterwards.
        self.kill_group();
    }
}

/// Runs `argv` once with a deadline.
pub(crate) async fn run_once(argv: &[String], timeout: Duration, user: Option<&str>) -> Outcome {
    match GroupChild::spawn(argv, user) {
        Ok(mut c) => c.wait(timeout).await,
        Err(e) => Outcome::SpawnError(e),
    }
}

/// Runs one track script every `interval` and reports `(index, good)` each time its
/// rise/fall-filtered verdict changes. The first run is at once. VRRP counts a script good
/// until it fails `fall` times (`spawn_script`); `start_good = false` counts it failing
/// until it passes `rise` times (an announcement waits for the first good verdict).
pub fn spawn_track_script(
    index: usize,
    ts: TrackScript,
    user: Option<String>,
    tx: mpsc::Sender<(usize, bool)>,
    start_good: bool,
) -> JoinHandle<()> {
    let span = tracing::info_span!("track_script", script = %ts.name.get_ref());
    tokio::spawn(
        async move {
            let argv = ts.command.get_ref().clone();
            let mut good = start_good;
            let mut streak: u32 = 0;
            let mut tick = tokio::time::interval(ts.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let out = run_once(&argv, ts.timeout, user.as_deref()).await;
                let ok = out.good();
                if ok == good {
                    streak = 0;
                    continue;
                }
                streak += 1;
                let need = if good { ts.fall } else { ts.rise };
                match &out {
                    Outcome::Ok => debug!(streak, need, "succeeded"),
                    Outcome::Failed(st) => debug!(streak, need, status = %st, "failed"),
                    Outcome::TimedOut => {
                        warn!(timeout = ?ts.timeout, "timed out: process group killed")
                    }
                    Outcome::SpawnError(e) => warn!(error = %e, "cannot run"),
                }
                if streak >= need {
                    good = ok;
                    streak = 0;
                    info!(
                        result = if good { "good" } else { "failing" },
                        "track script changed"
                    );
                    if tx.send((index, good)).await.is_err() {
                        return;
                    }
                }
            }
        }
        .instrument(span),
    )
}

/// [`spawn_track_script`] as VRRP uses it: good until it fails.
pub(crate) fn spawn_script(
    index: usize,
    ts: TrackScript,
    user: Option<String>,
    tx: mpsc::Sender<(usize, bool)>,
) -> JoinHandle<()> {
    spawn_track_script(index, ts, user, tx, true)
}

/// keepalived's arguments to `notify` (vrrp_notify.c): `INSTANCE <name> <state> <priority>`.
pub(crate) fn notify_args(instance: &str, state: &str, priority: u8) -> [String; 4] {
    [
        "INSTANCE".to_string(),
        instance.to_string(),
        state.to_string(),
        priority.to_string(),
    ]
}

/// Runs a notify program (its argv complete) in the background.
pub(crate) fn notify(argv: Vec<String>, user: Option<String>) -> JoinHandle<()> {
    tokio::spawn(async move {
        match run_once(&argv, Duration::from_secs(30), user.as_deref()).await {
            Outcome::Ok => debug!(?argv, "notify ran"),
            other => warn!(?argv, outcome = ?other, "notify failed"),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn exit_status_decides() {
        assert!(run_once(&argv(&["true"]), Duration::from_secs(5), None)
            .await
            .good());
        assert!(matches!(
            run_once(&argv(&["false"]), Duration::from_secs(5), None).await,
            Outcome::Failed(_)
        ));
        assert!(matches!(
            run_once(&argv(&["/nonexistent/prog"]), Duration::from_secs(5), None).await,
            Outcome::SpawnError(_)
        ));
    }

    #[tokio::test]
    async fn never_a_shell() {
        // A shell would expand `$HOME` and `;`; argv passes them verbatim.
        let dir = tempfile::tempdir().expect("tempdir");
        let marker = dir.path().join("x");
        let out = run_once(
            &argv(&["echo", "; touch", marker.to_str().expect("utf8 path")]),
            Duration::from_secs(5),
            None,
        )
        .await;
        assert!(out.good());
        assert!(!marker.exists());
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_group_and_reaps() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pidfile = dir.path().join("pid");
        let shfile = dir.path().join("sh");
        // The script notes its own pid, starts a grandchild that would outlive it, then hangs.
        let script = format!(
            "echo $$ > {}; sleep 30 & echo $! > {}; wait",
            shfile.to_str().expect("utf8 path"),
            pidfile.to_str().expect("utf8 path")
        );
        let t = std::time::Instant::now();
        let out = run_once(
            &argv(&["sh", "-c", &script]),
            Duration::from_millis(500),
            None,
        )
        .await;
        assert!(matches!(out, Outcome::TimedOut), "{out:?}");
        assert!(t.elapsed() < Duration::from_secs(5));
        let read = |p: &std::path::Path| {
            std::fs::read_to_string(p)
                .expect("pid file")
                .trim()
                .to_string()
        };
        let (sh, grandchild) = (read(&shfile), read(&pidfile));
        // Our child was reaped before run_once returned: no zombie, its pid is gone.
        assert!(
            !std::path::Path::new(&format!("/proc/{sh}")).exists(),
            "child {sh} still in /proc (zombie?)"
        );
        // The grandchild was killed with the group (it may linger briefly as a zombie of init).
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let stat =
                std::fs::read_to_string(format!("/proc/{grandchild}/stat")).unwrap_or_default();
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|s| s.split_whitespace().next());
            if stat.is_empty() || state == Some("Z") {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "grandchild {grandchild} survived: {stat}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test]
    async fn rise_and_fall_filter_flapping() {
        let dir = tempfile::tempdir().expect("tempdir");
        let flag = dir.path().join("ok");
        std::fs::write(&flag, "").expect("flag");
        let ts: TrackScript = toml::from_str(&format!(
            r#"
            name = "chk"
            command = ["test", "-e", "{}"]
            interval = "50ms"
            timeout = "1s"
            fall = 3
            rise = 2
            "#,
            flag.display()
        ))
        .expect("track script");
        let (tx, mut rx) = mpsc::channel(4);
        let h = spawn_script(0, ts, None, tx);
        std::fs::remove_file(&flag).expect("rm");
        let t = std::time::Instant::now();
        let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("fell");
        assert_eq!(got, Some((0, false)));
        assert!(
            t.elapsed() >= Duration::from_millis(100),
            "needs 3 failures"
        );
        std::fs::write(&flag, "").expect("flag");
        let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("rose");
        assert_eq!(got, Some((0, true)));
        h.abort();
    }

    #[test]
    fn script_user_resolves_names_and_numbers() {
        assert_eq!(
            resolve_user("root").expect("root is in /etc/passwd"),
            (0, 0)
        );
        assert_eq!(resolve_user("65534").expect("numeric"), (65534, 65534));
        assert_eq!(resolve_user("1000:1001").expect("uid:gid"), (1000, 1001));
        let e = resolve_user("no-such-user-here").expect_err("unknown user");
        assert!(e.to_string().contains("no such user"), "{e}");
        assert!(resolve_user("12:x").is_err());
    }

    #[tokio::test]
    #[ignore = "needs root: only root can switch users"]
    async fn scripts_run_as_script_user() {
        assert!(
            std::fs::read_to_string("/proc/self/status")
                .map(|s| {
                    s.lines()
                        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
                })
                .unwrap_or(false),
            "scripts_run_as_script_user needs root (it is #[ignore]d: run it as root with \
             --include-ignored)"
        );
        let check = |uid: &str| {
            argv(&[
                "sh",
                "-c",
                &format!("test \"$(id -u)\" = {uid} && test \"$(id -G)\" = 65534"),
            ])
        };
        assert!(
            run_once(&check("65534"), Duration::from_secs(5), Some("65534"))
                .await
                .good()
        );
        // Without script_user, the daemon's own user.
        assert!(!run_once(&check("65534"), Duration::from_secs(5), None)
            .await
            .good());
        // An unknown user fails the script (closed, not open).
        assert!(!run_once(
            &argv(&["true"]),
            Duration::from_secs(5),
            Some("no-such-user-here")
        )
        .await
        .good());
    }
}
