//! Proxy worker threads: one current-thread tokio runtime per thread.
//!
//! Each worker accepts on its own SO_REUSEPORT socket of every bind address and runs the
//! connections it accepted to their end, so a connection never moves between threads and its
//! wake-ups stay on one core. Health checks, VRRP and the admin endpoint run elsewhere.

use std::cell::Cell;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::warn;

use crate::frontend::Frontend;

thread_local! {
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// Index of the worker thread this runs on (0 on any other thread). Per-worker state (the L7
/// connection pools) is indexed by it, so a connection and its requests stay on one thread.
pub fn current() -> usize {
    WORKER.with(Cell::get)
}

/// Ticks every [`HEARTBEAT`], forever.
///
/// tokio's time driver wakes its own thread (an eventfd write, then one more epoll_wait) when a
/// timer is registered that expires before the driver's next planned wake-up. With no other
/// timer pending, every connection's connect timeout or request timeout was such a timer. A
/// timer that always expires within [`HEARTBEAT`] keeps the planned wake-up near, so timeouts
/// of a second or more are registered without that wake-up.
async fn heartbeat() {
    let mut beat = tokio::time::interval(HEARTBEAT);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        beat.tick().await;
    }
}

/// Period of [`heartbeat`].
const HEARTBEAT: Duration = Duration::from_millis(500);

/// The worker threads.
#[derive(Debug)]
pub struct Workers {
    handles: Vec<Handle>,
    threads: Vec<std::thread::JoinHandle<()>>,
    stop: watch::Sender<bool>,
}

impl Workers {
    /// Starts `n` workers (0: one per CPU).
    pub fn start(n: usize) -> io::Result<Workers> {
        let n = if n == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            n
        };
        let (stop, rx) = watch::channel(false);
        let mut handles = Vec::with_capacity(n);
        let mut threads = Vec::with_capacity(n);
        for i in 0..n {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(rt.handle().clone());
            let mut rx = rx.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("proxy-{i}"))
                    .spawn(move || {
                        WORKER.with(|w| w.set(i));
                        rt.block_on(async move {
                            tokio::select! {
                                _ = rx.wait_for(|s| *s) => {}
                                () = heartbeat() => {}
                            }
                        });
                    })?,
            );
        }
        Ok(Workers {
            handles,
            threads,
            stop,
        })
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
    /// until `shutdown` turns true.
    pub fn accept(
        &self,
        fe: &Arc<Frontend>,
        listeners: Vec<std::net::TcpListener>,
        shutdown: &watch::Receiver<bool>,
    ) -> Vec<JoinHandle<()>> {
        listeners
            .into_iter()
            .zip(self.handles.iter().cycle())
            .map(|(l, h)| {
                let fe = fe.clone();
                let rx = shutdown.clone();
                h.spawn(async move {
                    match tokio::net::TcpListener::from_std(l) {
                        Ok(l) => fe.accept(l, rx).await,
                        Err(e) => {
                            warn!(frontend = %fe.name, cause = %e, "cannot register a listener")
                        }
                    }
                })
            })
            .collect()
    }

    /// Stops the workers; connections still running on them are closed.
    pub fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.threads {
            let _ = t.join();
        }
    }
}
