//! A webhook target on a loopback port: records every request and answers
//! as its script says.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How the target answers request number `n` (0-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// Answer with this status.
    Status(u16),
    /// Answer with this status after this many milliseconds.
    After(u64, u16),
    /// Answer with this status once the target is opened ([`Target::open`]).
    WhenOpen(u16),
    /// Never answer.
    Hang,
}

/// One request the target received.
#[derive(Debug, Clone)]
pub struct Hit {
    pub headers: HeaderMap,
    pub body: Bytes,
    /// When it arrived.
    pub at: Instant,
    /// When it was answered (`None`: not yet).
    pub answered: Option<Instant>,
}

impl Hit {
    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

type Script = Arc<dyn Fn(usize) -> Reply + Send + Sync>;

#[derive(Clone)]
struct Shared {
    hits: Arc<Mutex<Vec<Hit>>>,
    script: Script,
    open: watch::Receiver<bool>,
}

/// A running target; stops when dropped.
pub struct Target {
    /// `http://127.0.0.1:PORT/hook`.
    pub url: String,
    hits: Arc<Mutex<Vec<Hit>>>,
    open: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Drop for Target {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let n = {
        let mut hits = shared.hits.lock().unwrap();
        hits.push(Hit {
            headers,
            body,
            at: Instant::now(),
            answered: None,
        });
        hits.len() - 1
    };
    let code = match (shared.script)(n) {
        Reply::Status(code) => code,
        Reply::After(ms, code) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            code
        }
        Reply::WhenOpen(code) => {
            let mut open = shared.open.clone();
            let _ = open.wait_for(|open| *open).await;
            code
        }
        Reply::Hang => std::future::pending().await,
    };
    shared.hits.lock().unwrap()[n].answered = Some(Instant::now());
    StatusCode::from_u16(code).unwrap()
}

impl Target {
    /// Starts a target answering by `script(request_number)`.
    pub async fn start(script: impl Fn(usize) -> Reply + Send + Sync + 'static) -> Target {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(Mutex::new(Vec::new()));
        let (open, opened) = watch::channel(false);
        let shared = Shared {
            hits: hits.clone(),
            script: Arc::new(script),
            open: opened,
        };
        let app = Router::new().fallback(handle).with_state(shared);
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Target {
            url: format!("http://{addr}/hook"),
            hits,
            open,
            task,
        }
    }

    /// Lets the requests held by [`Reply::WhenOpen`] be answered.
    pub fn open(&self) {
        self.open.send_replace(true);
    }

    /// Answers `status` to everything.
    pub async fn always(status: u16) -> Target {
        Target::start(move |_| Reply::Status(status)).await
    }

    /// Answers `status` to the first `failures` requests, then 200.
    pub async fn failing(failures: usize, status: u16) -> Target {
        Target::start(move |n| {
            if n < failures {
                Reply::Status(status)
            } else {
                Reply::Status(200)
            }
        })
        .await
    }

    /// The requests so far.
    pub fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }
}

/// A loopback URL nothing listens on (a port bound, then released).
pub async fn refused_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}/hook")
}
