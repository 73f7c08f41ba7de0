//! The accept loop under the router: connection limits, slow clients, graceful shutdown.
//!
//! `axum::serve` offers none of the limits a server facing untrusted sockets needs, so
//! the node drives hyper itself (as `axum::serve` does inside):
//! - **Header read timeout**: a connection that has not sent a complete request head
//!   within [`ServeLimits::header_read_timeout`] (counted from when the server starts
//!   waiting for a head: a new connection, or an idle keep-alive one) is closed.
//! - **Body read timeout**: enforced by the JSON body extractor
//!   ([`super::routes::JsonBody`]), which answers 408.
//! - **Connection cap**: at most [`ServeLimits::max_connections`] connections are served
//!   at once; further ones wait in the kernel's accept queue until one closes (slow ones
//!   are closed by the timeouts above, so the queue drains).
//! - **Graceful shutdown with a deadline**: once `shutdown` resolves the listener closes,
//!   every connection is asked to finish its current request and close, and after
//!   [`ServeLimits::shutdown_timeout`] the connections still open are dropped, so a
//!   stalled client can never keep the node from exiting.
//! - Each connection is wrapped in [`JsonErrorIo`], so hyper's own error responses are
//!   JSON too.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::wire::JsonErrorIo;

/// The limits of [`serve`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct ServeLimits {
    /// How long a client may take to send a complete request head.
    pub(crate) header_read_timeout: Duration,
    /// How many connections are served at once.
    pub(crate) max_connections: usize,
    /// How long a graceful shutdown waits for open connections before dropping them.
    pub(crate) shutdown_timeout: Duration,
}

/// How a [`serve`] ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Stopped {
    /// Connections still open at the shutdown deadline, dropped.
    pub(crate) dropped: usize,
}

/// Serves `app` on `listener` until `shutdown` resolves, then shuts down gracefully
/// within [`ServeLimits::shutdown_timeout`].
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()>,
) -> Stopped {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let mut connections = JoinSet::new();
    // Accept errors come in runs (out of descriptors): logged once per run.
    let mut accept_failing = false;
    tokio::pin!(shutdown);
    loop {
        // Reap finished connections so the set stays as large as the open ones.
        while connections.try_join_next().is_some() {}
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => {
                accept_failing = false;
                stream
            }
            Err(error) => {
                // Out of descriptors or a connection reset before accept: the listener
                // is fine; wait a little rather than spin.
                if std::mem::replace(&mut accept_failing, true) {
                    tracing::debug!(%error, "accepting a connection failed (still failing)");
                } else {
                    tracing::warn!(%error, "accepting a connection failed; retrying every 50 ms");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let connection = builder.serve_connection(TokioIo::new(JsonErrorIo::new(stream)), service);
        let connection = graceful.watch(connection);
        connections.spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    let stopped = match tokio::time::timeout(limits.shutdown_timeout, graceful.shutdown()).await {
        Ok(()) => Stopped { dropped: 0 },
        Err(_) => {
            while connections.try_join_next().is_some() {}
            let dropped = connections.len();
            tracing::warn!(
                dropped,
                timeout_ms = u64::try_from(limits.shutdown_timeout.as_millis()).unwrap_or(u64::MAX),
                "connections still open at the shutdown deadline are dropped"
            );
            Stopped { dropped }
        }
    };
    connections.abort_all();
    while connections.join_next().await.is_some() {}
    stopped
}
