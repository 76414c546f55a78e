//! Accepting and serving connections: HTTP/1.1 through hyper with a
//! header-read timeout (which also closes connections idle between
//! requests), a cap on open connections, and a shutdown with a deadline.
//!
//! `axum::serve` exposes neither hyper's timers nor a connection cap, and
//! its graceful shutdown waits for every connection without bound; a
//! slowloris client (headers trickled in, or a body never finished) could
//! then hold file descriptors forever and stall a shutdown past the pod's
//! grace period, losing the final checkpoint.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

/// How long accepting pauses after an error other than a failed handshake
/// (such as `EMFILE`: out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The largest request head (start line and headers) a connection may
/// send; a larger one is answered 431 and the connection closed. A Google
/// OIDC token is about 1 KiB, and hyper's default (the buffer's ~400 KiB)
/// would let each connection that never finishes its headers hold that
/// much memory until `--header-read-timeout`.
pub(crate) const MAX_HEAD_BYTES: usize = 16 * 1024;

/// The most a connection buffers, reading or writing (a body is read
/// through it in pieces): what a connection that never finishes its head
/// can make the process hold, so `--max-connections` × this bounds it
/// (64 MiB at the default 4096).
pub(crate) const MAX_BUFFER_BYTES: usize = 16 * 1024;

/// Limits of one [`run`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Connections open at once; past it, accepting waits for one to close.
    pub(crate) max_connections: usize,
    /// Longest a connection may take to send a request's headers (or stay
    /// idle), and longest a response write may make no progress.
    pub(crate) header_read_timeout: Duration,
    /// Longest open requests may run once `shutdown` resolved.
    pub(crate) shutdown_timeout: Duration,
}

/// Serves `app` on `listener` until `shutdown` resolves; then stops
/// accepting, lets each connection finish its current request, and drops
/// whatever is still open after `limits.shutdown_timeout`.
pub(crate) async fn run(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (closing, closing_seen) = watch::channel(false);
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(MAX_HEAD_BYTES)
        .max_buf_size(MAX_BUFFER_BYTES);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        // Finished connections leave the set here, so it stays as small as
        // the number of open ones.
        while connections.try_join_next().is_some() {}
        // A slot first: past the cap, connections wait in the listen backlog.
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = Arc::clone(&slots).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_closed) => break,
            },
        };
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(error) => {
                    if !is_handshake_error(&error) {
                        tracing::warn!(error = %error, "accept failed; pausing");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                    continue;
                }
            },
        };
        // Acks are small and latency-bound: do not wait for Nagle.
        let _ = stream.set_nodelay(true);
        // A client that stops reading its responses (a zero receive window)
        // would hold the connection forever once the socket buffer fills:
        // a write that makes no progress for this long closes it.
        let mut stream = tokio_io_timeout::TimeoutStream::new(stream);
        stream.set_write_timeout(Some(limits.header_read_timeout));
        let connection = builder.serve_connection(
            TokioIo::new(Box::pin(stream)),
            TowerToHyperService::new(app.clone()),
        );
        let mut closing_seen = closing_seen.clone();
        connections.spawn(async move {
            let _permit = permit;
            tokio::pin!(connection);
            // Errors are the client's (reset, header timeout, bad request
            // line): the connection is closed either way.
            tokio::select! {
                served = connection.as_mut() => {
                    if let Err(error) = served {
                        tracing::debug!(error = %error, "connection closed with an error");
                    }
                }
                // The flag only ever turns true, once, after this task started.
                _ = closing_seen.changed() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
    drop(listener);
    let _ = closing.send(true);
    let drained = tokio::time::timeout(limits.shutdown_timeout, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = connections.len(),
            timeout_s = limits.shutdown_timeout.as_secs_f64(),
            "shutdown deadline passed: dropping the connections still open"
        );
        connections.shutdown().await;
    }
}

/// Whether `error` concerns one connection only (the peer gave up during
/// the handshake), so accepting can go on at once.
fn is_handshake_error(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}
