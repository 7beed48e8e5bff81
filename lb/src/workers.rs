//! Proxy worker threads: one current-thread tokio runtime per thread.
//!
//! Each worker accepts on its own SO_REUSEPORT socket of every bind address and runs the
//! connections it accepted to their end, so a connection never moves between threads and its
//! wake-ups stay on one core. Health checks, VRRP and the admin endpoint run elsewhere.
//!
//! Each worker's `heartbeat` also records when it last ran ([`Heartbeats`]): a worker that
//! is wedged (a busy loop, a blocked system call) stops beating, and the systemd watchdog,
//! which pings only while every worker beats, lets systemd restart the daemon.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::warn;

use crate::config::Mode;
use crate::frontend::Frontend;
use crate::uring::{self, Engine};

/// How the worker threads run tcp-mode connections (the top-level `io`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Io {
    /// Readiness (epoll) on each worker's tokio runtime: [`crate::l4`].
    #[default]
    Epoll,
    /// Completions: an io_uring engine thread beside each worker (`lb/src/uring/`); the
    /// http mode stays on the runtime. Falls back to epoll where io_uring is refused.
    IoUring,
}

/// Ticks every [`HEARTBEAT`], forever, recording each tick in `beats` as worker `index`.
///
/// tokio's time driver wakes its own thread (an eventfd write, then one more epoll_wait) when a
/// timer is registered that expires before the driver's next planned wake-up. With no other
/// timer pending, every connection's connect timeout or request timeout was such a timer. A
/// timer that always expires within [`HEARTBEAT`] keeps the planned wake-up near, so timeouts
/// of a second or more are registered without that wake-up.
async fn heartbeat(beats: Heartbeats, index: usize) {
    let mut beat = tokio::time::interval(HEARTBEAT);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        beat.tick().await;
        beats.beat(index);
    }
}

/// Period of `heartbeat`.
pub const HEARTBEAT: Duration = Duration::from_millis(500);

/// When each worker thread last ran its heartbeat. Cheap to clone and to read from any thread.
#[derive(Debug, Clone)]
pub struct Heartbeats {
    base: Instant,
    /// Per worker: milliseconds from `base` to its last beat.
    last: Arc<[AtomicU64]>,
}

impl Heartbeats {
    fn new(n: usize) -> Heartbeats {
        Heartbeats {
            base: Instant::now(),
            last: (0..n).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    pub(crate) fn beat(&self, index: usize) {
        let now = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        if let Some(b) = self.last.get(index) {
            b.store(now, Ordering::Relaxed);
        }
    }

    /// The worker that has been silent the longest, with how long, if that is more than
    /// `limit`: `None` while every worker has beaten within `limit`.
    pub fn silent_longer_than(&self, limit: Duration) -> Option<(usize, Duration)> {
        let now = self.base.elapsed();
        self.last
            .iter()
            .map(|b| now.saturating_sub(Duration::from_millis(b.load(Ordering::Relaxed))))
            .enumerate()
            .max_by_key(|(_, silent)| *silent)
            .filter(|(_, silent)| *silent > limit)
    }
}

/// The worker threads.
#[derive(Debug)]
pub struct Workers {
    handles: Vec<Handle>,
    threads: Vec<std::thread::JoinHandle<()>>,
    stop: watch::Sender<bool>,
    beats: Heartbeats,
    /// With `io = "io_uring"`: one engine per worker, and their threads.
    engines: Vec<Engine>,
    engine_threads: Vec<std::thread::JoinHandle<()>>,
}

impl Workers {
    /// Starts `n` workers (0: one per CPU), running tcp-mode connections as `io` says.
    pub fn start(n: usize, io: Io) -> io::Result<Workers> {
        let n = if n == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            n
        };
        let (stop, rx) = watch::channel(false);
        let runtimes = (0..n)
            .map(|_| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
            })
            .collect::<io::Result<Vec<_>>>()?;
        let handles: Vec<Handle> = runtimes.iter().map(|rt| rt.handle().clone()).collect();
        let (beats, engines, engine_threads) = match io {
            Io::Epoll => (Heartbeats::new(n), Vec::new(), Vec::new()),
            Io::IoUring => match start_engines(&handles) {
                Ok((beats, engines, threads)) => (beats, engines, threads),
                Err(e) => {
                    warn!(cause = %e, "io = \"io_uring\", but this host gives no io_uring: \
                        the proxy runs on epoll");
                    (Heartbeats::new(n), Vec::new(), Vec::new())
                }
            },
        };
        let mut threads = Vec::with_capacity(n);
        for (i, rt) in runtimes.into_iter().enumerate() {
            let mut rx = rx.clone();
            let beats = beats.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("proxy-{i}"))
                    .spawn(move || {
                        rt.block_on(async move {
                            tokio::select! {
                                _ = rx.wait_for(|s| *s) => {}
                                () = heartbeat(beats, i) => {}
                            }
                        });
                    })?,
            );
        }
        Ok(Workers {
            handles,
            threads,
            stop,
            beats,
            engines,
            engine_threads,
        })
    }

    /// How tcp-mode connections run: `IoUring` only if it was asked for and the host gives it.
    pub fn io(&self) -> Io {
        if self.engines.is_empty() {
            Io::Epoll
        } else {
            Io::IoUring
        }
    }

    /// Their heartbeats, for the watchdog.
    pub fn heartbeats(&self) -> Heartbeats {
        self.beats.clone()
    }

    /// Number of workers.
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Whether there are no workers (never, once started).
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// Accepts on `listeners` (one per worker, from [`crate::listener::bind_shared`]) for `fe`
    /// until `shutdown` turns true. Each accept loop is told the index of the worker it runs
    /// on: per-worker state (the L7 connection pools) is indexed by it, so a connection and its
    /// requests stay on one thread.
    pub fn accept(
        &self,
        fe: &Arc<Frontend>,
        listeners: Vec<std::net::TcpListener>,
        shutdown: &watch::Receiver<bool>,
    ) -> Vec<JoinHandle<()>> {
        if !self.engines.is_empty() && fe.snapshot().settings.mode == Mode::Tcp {
            return self.accept_on_engines(fe, listeners, shutdown);
        }
        listeners
            .into_iter()
            .zip(self.handles.iter().enumerate().cycle())
            .map(|(l, (worker, h))| {
                let fe = fe.clone();
                let rx = shutdown.clone();
                h.spawn(async move {
                    match tokio::net::TcpListener::from_std(l) {
                        Ok(l) => fe.accept(l, rx, worker).await,
                        Err(e) => {
                            warn!(frontend = %fe.name, cause = %e, "cannot register a listener")
                        }
                    }
                })
            })
            .collect()
    }

    /// [`Workers::accept`] on the io_uring engines: each listener goes to an engine, and a
    /// task on the worker beside it closes it there once `shutdown` turns true; the task ends
    /// when the listener is closed.
    fn accept_on_engines(
        &self,
        fe: &Arc<Frontend>,
        listeners: Vec<std::net::TcpListener>,
        shutdown: &watch::Receiver<bool>,
    ) -> Vec<JoinHandle<()>> {
        listeners
            .into_iter()
            .zip(self.engines.iter().zip(self.handles.iter()).cycle())
            .map(|(l, (engine, h))| {
                let engine = engine.clone();
                let fe = fe.clone();
                let mut rx = shutdown.clone();
                h.spawn(async move {
                    let (id, closed) = engine.listen(fe, l);
                    let _ = rx.wait_for(|s| *s).await;
                    engine.unlisten(id);
                    let _ = closed.await;
                })
            })
            .collect()
    }

    /// Stops the workers; connections still running on them are closed.
    pub fn stop(self) {
        stop_engines(&self.engines, self.engine_threads);
        let _ = self.stop.send(true);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// One io_uring engine per runtime in `handles`, beating after the workers in one
/// [`Heartbeats`]. All or none: on the first that fails, those started are stopped.
fn start_engines(
    handles: &[Handle],
) -> io::Result<(Heartbeats, Vec<Engine>, Vec<std::thread::JoinHandle<()>>)> {
    uring::available()?;
    let n = handles.len();
    let beats = Heartbeats::new(2 * n);
    let mut engines = Vec::with_capacity(n);
    let mut threads = Vec::with_capacity(n);
    for (i, h) in handles.iter().enumerate() {
        match Engine::start(i, beats.clone(), n + i, h.clone()) {
            Ok((e, t)) => {
                engines.push(e);
                threads.push(t);
            }
            Err(e) => {
                stop_engines(&engines, threads);
                return Err(e);
            }
        }
    }
    Ok((beats, engines, threads))
}

/// Stops `engines` and waits for their `threads` to end.
fn stop_engines(engines: &[Engine], threads: Vec<std::thread::JoinHandle<()>>) {
    for e in engines {
        e.stop();
    }
    for t in threads {
        let _ = t.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Polls `cond` every 10 ms for at most `limit`.
    fn wait(limit: Duration, cond: impl Fn() -> bool) -> bool {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if cond() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        cond()
    }

    #[test]
    fn a_blocked_worker_stops_beating_and_resumes() {
        let w = Workers::start(2, Io::Epoll).expect("workers");
        let beats = w.heartbeats();
        let limit = 2 * HEARTBEAT;
        std::thread::sleep(HEARTBEAT);
        assert_eq!(beats.silent_longer_than(limit), None, "both beat");
        // A task that blocks its thread in a system call (nanosleep), as a wedged worker.
        w.handles[1].spawn(async { std::thread::sleep(Duration::from_secs(3)) });
        assert!(
            wait(Duration::from_secs(3), || beats
                .silent_longer_than(limit)
                .is_some_and(|(i, _)| i == 1)),
            "worker 1 seen silent: {:?}",
            beats.silent_longer_than(Duration::ZERO)
        );
        assert!(
            wait(Duration::from_secs(4), || beats
                .silent_longer_than(limit)
                .is_none()),
            "beats again once unblocked"
        );
        w.stop();
    }
}
