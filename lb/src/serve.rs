//! Serving a frontend: accept its connections and hand each to the tcp mode ([`crate::l4`])
//! or the http mode ([`crate::l7`]).
//!
//! The data these read (settings, server pool, counters) lives in [`crate::frontend`], which
//! depends on neither mode: the modes read it, this module dispatches to them.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::Mode;
use crate::frontend::Frontend;
use crate::listener::{self, Admission};

impl Frontend {
    /// Serves connections from `listeners` until `shutdown` turns true, then waits up to
    /// `grace` for the connections in flight to finish. Runs as worker 0 (see
    /// [`Frontend::accept`]).
    pub async fn serve(
        self: Arc<Self>,
        listeners: Vec<TcpListener>,
        shutdown: watch::Receiver<bool>,
        grace: Duration,
    ) {
        let mut loops = JoinSet::new();
        for l in listeners {
            loops.spawn(self.clone().accept(l, shutdown.clone(), 0));
        }
        while loops.join_next().await.is_some() {}
        self.drain(grace).await;
    }

    /// Accepts connections on one listener until `shutdown` turns true; each runs in its own
    /// task. The listener is closed when this returns; connections go on. `worker` is the
    /// index of the worker thread this runs on (0 off the worker threads): per-worker state (the
    /// http mode's idle server connections) is indexed by it.
    pub async fn accept(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: watch::Receiver<bool>,
        worker: usize,
    ) {
        let limit = self.limit();
        listener::accept_loop(
            listener,
            limit,
            shutdown,
            move |stream, peer, permit, adm| {
                let fe = self.clone();
                tokio::spawn(async move {
                    fe.handle(stream, peer, adm, worker).await;
                    drop(permit);
                });
            },
        )
        .await
    }

    /// Handles a connection another thread accepted (the io_uring engine hands over those of a
    /// frontend in http mode), holding its maxconn `permit` until it ends.
    pub(crate) async fn handle_accepted(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        permit: tokio::sync::OwnedSemaphorePermit,
        worker: usize,
    ) {
        self.handle(stream, peer, Admission::default(), worker)
            .await;
        drop(permit);
    }

    async fn handle(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        mut admission: Admission,
        worker: usize,
    ) {
        let snap = self.snapshot();
        self.counters.total.fetch_add(1, Ordering::Relaxed);
        self.counters.current.fetch_add(1, Ordering::Relaxed);
        match snap.settings.mode {
            Mode::Tcp => crate::l4::proxy(self, &snap, stream, peer, admission).await,
            Mode::Http => {
                // Server connections in http mode are pooled, not one per client: nothing to
                // wait for here (a connect that finds no descriptor holds accepts off itself).
                admission.release();
                crate::l7::serve(self, snap, stream, peer, worker).await
            }
        }
        self.counters.current.fetch_sub(1, Ordering::Relaxed);
    }
}
