//! The durable baseline of `bench/http.sh`: an axum handler that answers
//! `POST /v1/signals` with 204 only once the body it read is on disk, and
//! does nothing else: no parse, no authentication, no decision, no hash.
//! Bodies are appended to one shared buffer; a writer thread, after the
//! same 200 µs commit delay as the file ledger's, writes what gathered
//! into a zero-filled file and `fdatasync`s it, then wakes the requests it
//! covered. It is the ceiling of an ingest that acknowledges only durable
//! input on this stack and this disk, so the governor's distance from it
//! is what its own work costs, and its distance from `strict` is what
//! durability costs.
//!
//! `cargo run --release -p ggen-runtime --example durable -- 127.0.0.1:18084 DIR`

use std::future::poll_fn;
use std::io::Write as _;
use std::os::unix::fs::FileExt as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::task::{Poll, Waker};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;

/// The file ledger's commit delay.
const COMMIT_DELAY: Duration = Duration::from_micros(200);
/// The file is zero-filled to this length once, then written round and
/// round: its content is never read.
const FILE_BYTES: u64 = 256 << 20;

/// What the handlers and the writer share.
#[derive(Default)]
struct Log {
    pending: Mutex<Pending>,
    wake_writer: Condvar,
    /// Bodies up to this count are durable.
    durable: AtomicU64,
}

/// Appended but not yet written.
#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    /// Bodies appended so far.
    appended: u64,
    /// Requests waiting, with the count their body makes durable.
    waiters: Vec<(u64, Waker)>,
}

impl Log {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends `body`; the count at which it is durable.
    fn append(&self, body: &[u8]) -> u64 {
        let mut pending = self.lock();
        let was_empty = pending.bytes.is_empty();
        pending
            .bytes
            .extend_from_slice(&(body.len() as u32).to_le_bytes());
        pending.bytes.extend_from_slice(body);
        pending.appended += 1;
        let mark = pending.appended;
        drop(pending);
        if was_empty {
            self.wake_writer.notify_one();
        }
        mark
    }

    /// Resolves once the body counted `mark` is durable.
    async fn durable(&self, mark: u64) {
        poll_fn(|cx| {
            if self.durable.load(Ordering::Acquire) >= mark {
                return Poll::Ready(());
            }
            let mut pending = self.lock();
            if self.durable.load(Ordering::Acquire) >= mark {
                return Poll::Ready(());
            }
            pending.waiters.push((mark, cx.waker().clone()));
            Poll::Pending
        })
        .await;
    }

    /// The writer: gathers, writes, syncs, wakes; forever.
    fn write(&self, file: &fs_err::File) -> std::io::Result<()> {
        let mut offset = 0u64;
        let mut batch = Vec::new();
        loop {
            let mut pending = self.lock();
            while pending.bytes.is_empty() {
                pending = self
                    .wake_writer
                    .wait(pending)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            drop(pending);
            std::thread::sleep(COMMIT_DELAY);
            let mut pending = self.lock();
            std::mem::swap(&mut batch, &mut pending.bytes);
            let mark = pending.appended;
            drop(pending);
            if offset + batch.len() as u64 > FILE_BYTES {
                offset = 0;
            }
            file.file().write_all_at(&batch, offset)?;
            offset += batch.len() as u64;
            batch.clear();
            file.sync_data()?;
            self.durable.store(mark, Ordering::Release);
            let mut pending = self.lock();
            let mut woken = Vec::new();
            pending.waiters.retain(|(waits_for, waker)| {
                let done = *waits_for <= mark;
                if done {
                    woken.push(waker.clone());
                }
                !done
            });
            drop(pending);
            woken.into_iter().for_each(Waker::wake);
        }
    }
}

async fn signals(State(log): State<Arc<Log>>, body: Bytes) -> StatusCode {
    let mark = log.append(&body);
    log.durable(mark).await;
    StatusCode::NO_CONTENT
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:18084".to_owned());
    let dir = PathBuf::from(args.next().unwrap_or_else(|| ".".to_owned()));
    let mut file = fs_err::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(dir.join("durable.log"))?;
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..FILE_BYTES / zeros.len() as u64 {
        file.write_all(&zeros)?;
    }
    file.sync_all()?;
    let log = Arc::new(Log::default());
    let writer = Arc::clone(&log);
    // Named as the file ledger's writer, so bench/profile.sh and
    // bench/anatomy.sh file its samples the same way.
    std::thread::Builder::new()
        .name("ledger-writer".to_owned())
        .spawn(move || {
            if let Err(error) = writer.write(&file) {
                eprintln!("durable baseline: the writer failed: {error}");
                std::process::exit(1);
            }
        })?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&addr).await?;
        eprintln!("durable handler listening on {addr}");
        let app = Router::new()
            .route("/v1/signals", post(signals))
            .with_state(log);
        axum::serve(listener, app).await
    })
}
