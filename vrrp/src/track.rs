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

impl GroupChild {
    fn spawn(argv: &[String]) -> std::io::Result<GroupChild> {
        let (prog, args) = argv
            .split_first()
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty argv"))?;
        let child = Command::new(prog)
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
pub(crate) async fn run_once(argv: &[String], timeout: Duration) -> Outcome {
    match GroupChild::spawn(argv) {
        Ok(mut c) => c.wait(timeout).await,
        Err(e) => Outcome::SpawnError(e),
    }
}

/// Runs one track script every `interval` and reports `(index, good)` each time its
/// rise/fall-filtered verdict changes. The first run is at once.
pub(crate) fn spawn_script(
    index: usize,
    ts: TrackScript,
    tx: mpsc::Sender<(usize, bool)>,
) -> JoinHandle<()> {
    let span = tracing::info_span!("track_script", script = %ts.name.get_ref());
    tokio::spawn(
        async move {
            let argv = ts.command.get_ref().clone();
            let mut good = true;
            let mut streak: u32 = 0;
            let mut tick = tokio::time::interval(ts.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let out = run_once(&argv, ts.timeout).await;
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

/// Runs a notify program with instance, state and priority as arguments, in the background.
pub(crate) fn notify(argv: Vec<String>, instance: String, state: &'static str, priority: u8) {
    tokio::spawn(async move {
        let mut full = argv;
        full.extend([instance, state.to_string(), priority.to_string()]);
        match run_once(&full, Duration::from_secs(30)).await {
            Outcome::Ok => debug!(?full, "notify ran"),
            other => warn!(?full, outcome = ?other, "notify failed"),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn exit_status_decides() {
        assert!(run_once(&argv(&["true"]), Duration::from_secs(5))
            .await
            .good());
        assert!(matches!(
            run_once(&argv(&["false"]), Duration::from_secs(5)).await,
            Outcome::Failed(_)
        ));
        assert!(matches!(
            run_once(&argv(&["/nonexistent/prog"]), Duration::from_secs(5)).await,
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
        let out = run_once(&argv(&["sh", "-c", &script]), Duration::from_millis(500)).await;
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
        let h = spawn_script(0, ts, tx);
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
}
