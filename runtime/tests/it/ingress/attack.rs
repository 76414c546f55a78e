//! Attacks on the transport, over real sockets on port 0: unauthenticated
//! clients that send headers and never finish their body, or trickle their
//! headers, must neither take request slots nor fail readiness; the
//! header-read timeout closes them; a connection cap bounds them; and a
//! shutdown has a hard deadline whatever the clients do.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ggen_runtime::clock::Timestamp;
use ggen_runtime::ingress::auth::SigningKey;
use ggen_runtime::ingress::{Options, serve};
use ggen_runtime::ledger::memory::MemoryLedger;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::client::Connection;
use super::harness::{SECRET, Service, TOKEN, full_auth, signal};
use super::sku::GUARD;

/// Bound on every wait for something that must happen (never a timing claim).
const PATIENCE: Duration = Duration::from_secs(10);

/// A service on 127.0.0.1:0, stopped when [`Server::stop`] is called.
struct Server {
    service: Service,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(options: Options) -> Server {
        let service = Service::over(&GUARD, Arc::new(MemoryLedger::new()), full_auth(), options);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, service.state.clone(), async move {
            let _ = stopped.await;
        }));
        Server {
            service,
            addr,
            stop: Some(stop),
            task,
        }
    }

    /// Begins shutdown; the serve task is returned to await.
    fn stop(mut self) -> (Service, JoinHandle<std::io::Result<()>>) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (self.service, self.task)
    }
}

/// Options of the attack tests: a small in-flight limit, a request timeout
/// far longer than any test, headers waited for long enough that only the
/// behaviour under test closes a connection, and a short shutdown.
fn options() -> Options {
    Options {
        max_in_flight: 16,
        request_timeout: Duration::from_secs(3600),
        header_read_timeout: Duration::from_secs(60),
        shutdown_timeout: Duration::from_secs(1),
        ..Options::default()
    }
}

/// Opens a raw connection and writes `bytes`.
async fn raw(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    stream
}

/// Headers of a request with a declared 1 KiB body, of which 1 byte follows.
fn headers_and_one_byte(method: &str, path: &str, extra: &str) -> Vec<u8> {
    format!(
        "{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 1024\r\n{extra}\r\n{{"
    )
    .into_bytes()
}

/// The status of the first response on `stream`, `None` if it closed without one.
async fn status_of(stream: &mut TcpStream) -> Option<u16> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n") {
        match stream.read(&mut byte).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => head.push(byte[0]),
        }
    }
    String::from_utf8_lossy(&head)
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
}

/// Whether the peer closed `stream` (EOF or reset), reading and discarding anything before.
async fn closed(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return true,
            Ok(_) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_requests_are_refused_from_their_headers_before_a_slot_or_the_body() {
    let server = Server::start(Options {
        max_in_flight: 1,
        ..options()
    })
    .await;
    let signature = format!(
        "X-Ggen-Signature: {}\r\n",
        SigningKey::new(b"wrong").sign(b"{", Timestamp::now())
    );
    let oversized = format!("X-Ggen-Signature: t=1,v1={}\r\n", "ab".repeat(1024));
    // One per route group, each with a body that never completes.
    let attempts = [
        headers_and_one_byte("POST", "/v1/signals", ""),
        headers_and_one_byte("POST", "/v1/signals", "Authorization: Bearer wrong\r\n"),
        headers_and_one_byte(
            "POST",
            "/pubsub/push",
            &format!("Authorization: Bearer {TOKEN}\r\n"),
        ),
        headers_and_one_byte(
            "POST",
            "/v1/tenants/a/reset",
            &format!("Authorization: Bearer {TOKEN}\r\n"),
        ),
        headers_and_one_byte("POST", "/v1/marketplace/events", ""),
        headers_and_one_byte("POST", "/v1/marketplace/events", &oversized),
    ];
    let mut held = Vec::new();
    for (i, attempt) in attempts.iter().enumerate() {
        let mut stream = raw(server.addr, attempt).await;
        let status = tokio::time::timeout(PATIENCE, status_of(&mut stream))
            .await
            .unwrap_or_else(|_| panic!("attempt {i}: no answer before the body was sent"));
        let status = status.unwrap_or_else(|| panic!("attempt {i}: closed without an answer"));
        assert!(matches!(status, 401 | 403), "attempt {i}: {status}");
        held.push(stream);
    }
    // None of them holds the only slot: an authenticated request goes through.
    let mut client = Connection::open(server.addr).await.unwrap();
    let (status, text) = client
        .request("POST", "/v1/signals", Some(TOKEN), &signal("a", 1.0, "ok"))
        .await
        .unwrap();
    assert_eq!(status, 204, "{text}");
    // A marketplace request whose signature header is well-formed is let in
    // to have its body read, and its HMAC still verifies against the body.
    let mut forged = raw(
        server.addr,
        &headers_and_one_byte("POST", "/v1/marketplace/events", &signature)[..],
    )
    .await;
    forged.write_all(&[b' '; 1023]).await.unwrap();
    let status = tokio::time::timeout(PATIENCE, status_of(&mut forged))
        .await
        .unwrap();
    assert_eq!(status, Some(401));
    let body = r#"{"tenant":"a","event":"created","id":"e-1"}"#;
    let signed = format!(
        "POST /v1/marketplace/events HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\nX-Ggen-Signature: {}\r\n\r\n{body}",
        body.len(),
        SigningKey::new(SECRET).sign(body.as_bytes(), Timestamp::now())
    );
    let mut stream = raw(server.addr, signed.as_bytes()).await;
    let status = tokio::time::timeout(PATIENCE, status_of(&mut stream))
        .await
        .unwrap();
    assert_eq!(status, Some(204));
    let (service, task) = server.stop();
    task.await.unwrap().unwrap();
    assert_eq!(service.receipts("a").len(), 2);
}

/// Raises the open-file soft limit to the hard one; the limit now in force.
fn raise_open_files() -> u64 {
    rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_unauthenticated_connections_cannot_starve_authenticated_clients() {
    // Each held connection costs two descriptors here (client and server
    // side); keep 200 for the rest of the test binary.
    let limit = raise_open_files();
    let attackers = 2000.min((limit.saturating_sub(200) / 2) as usize);
    assert!(
        attackers > 16 * 4,
        "open-file limit `{limit}` too low for this test"
    );
    let server = Server::start(options()).await;
    let addr = server.addr;
    // Half send headers (no credentials) and 1 byte of a 1 KiB body; half
    // trickle a request line and part of the headers and stop.
    let mut held = Vec::with_capacity(attackers);
    for i in 0..attackers {
        let bytes = if i % 2 == 0 {
            headers_and_one_byte("POST", "/v1/signals", "")
        } else {
            b"POST /v1/signals HTTP/1.1\r\nHost: t\r\nContent-Le".to_vec()
        };
        held.push(raw(addr, &bytes).await);
    }
    // An authenticated client keeps being served quickly meanwhile.
    let mut client = Connection::open(addr).await.unwrap();
    let mut probe = Connection::open(addr).await.unwrap();
    let mut latencies = Vec::new();
    for n in 0..300 {
        let started = Instant::now();
        let (status, text) = client
            .request(
                "POST",
                "/v1/signals",
                Some(TOKEN),
                &signal("victim", 1.0, &format!("v-{n}")),
            )
            .await
            .unwrap();
        latencies.push(started.elapsed());
        assert_eq!(status, 204, "request {n}: {text}");
        if n % 30 == 0 {
            let (status, text) = probe.request("GET", "/readyz", None, "").await.unwrap();
            assert_eq!(status, 200, "readyz during the attack: {text}");
        }
    }
    // A new authenticated connection is accepted too (the cap is not reached).
    let mut late = Connection::open(addr).await.unwrap();
    let (status, _) = late
        .request("GET", "/v1/tenants/victim", Some(TOKEN), "")
        .await
        .unwrap();
    assert_eq!(status, 200);
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100];
    assert!(
        p99 < Duration::from_millis(50),
        "p99 `{p99:?}` with {attackers} slow connections held"
    );
    // The attackers with a full header were answered 401 without their body.
    let mut answered = 0;
    for stream in held.iter_mut().step_by(2).take(20) {
        let status = tokio::time::timeout(PATIENCE, status_of(stream))
            .await
            .unwrap();
        assert_eq!(status, Some(401));
        answered += 1;
    }
    assert_eq!(answered, 20);
    let (service, task) = server.stop();
    tokio::time::timeout(PATIENCE, task)
        .await
        .expect("shutdown within its deadline")
        .unwrap()
        .unwrap();
    assert_eq!(service.receipts_of("victim", "signal").len(), 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_header_read_timeout_closes_slow_and_idle_connections() {
    let server = Server::start(Options {
        header_read_timeout: Duration::from_millis(200),
        ..options()
    })
    .await;
    let mut trickling = raw(server.addr, b"GET /healthz HTTP/1.1\r\nHost: t\r\n").await;
    let mut idle = raw(server.addr, b"").await;
    for (name, stream) in [("trickling", &mut trickling), ("idle", &mut idle)] {
        let closed = tokio::time::timeout(PATIENCE, closed(stream)).await;
        assert_eq!(closed, Ok(true), "{name} connection still open");
    }
    // A client that sends its headers in time is served as usual.
    let mut client = Connection::open(server.addr).await.unwrap();
    let (status, _) = client.request("GET", "/healthz", None, "").await.unwrap();
    assert_eq!(status, 200);
    let (_, task) = server.stop();
    task.await.unwrap().unwrap();
}

/// A head larger than 16 KiB is answered 431 and its connection closed
/// as soon as that much arrived, however long the header-read timeout: a
/// connection that never finishes its head holds at most that much of the
/// server's memory. A head just under it is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_past_16_kib_is_refused_at_once_not_buffered() {
    let server = Server::start(options()).await;
    // `head` on a new connection: the stream, and the status answered.
    let send = |head: String| async move {
        let mut stream = raw(server.addr, head.as_bytes()).await;
        let status = tokio::time::timeout(PATIENCE, status_of(&mut stream)).await;
        (stream, status)
    };
    let start = "GET /healthz HTTP/1.1\r\nHost: t\r\n";
    // 20 KiB of one header, never finished (no blank line).
    let (mut stream, status) = send(format!("{start}X-Pad: {}", "a".repeat(20 * 1024))).await;
    assert_eq!(
        status,
        Ok(Some(431)),
        "a 20 KiB head was not refused before the header timeout"
    );
    assert_eq!(
        tokio::time::timeout(PATIENCE, closed(&mut stream)).await,
        Ok(true)
    );
    // Many small headers adding up past the bound, also unfinished.
    let many: String = (0..90)
        .map(|i| format!("X-{i}: {}\r\n", "b".repeat(200)))
        .collect();
    let (_, status) = send(format!("{start}{many}")).await;
    assert_eq!(
        status,
        Ok(Some(431)),
        "90 headers of 200 bytes were not refused"
    );
    // A 12 KiB head (a large token, say) is served.
    let (_, status) = send(format!("{start}X-Pad: {}\r\n\r\n", "c".repeat(12 * 1024))).await;
    assert_eq!(status, Ok(Some(200)));
    let (_, task) = server.stop();
    task.await.unwrap().unwrap();
}

/// The header-read timeout bounds the whole head, not the gaps between its
/// bytes: a head trickled in a byte at a time is closed, however steadily
/// it trickles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_trickled_byte_by_byte_is_closed_at_the_header_read_timeout() {
    let server = Server::start(Options {
        header_read_timeout: Duration::from_millis(300),
        ..options()
    })
    .await;
    let stream = raw(server.addr, b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: ").await;
    let (mut reader, mut writer) = stream.into_split();
    // A byte every 50 ms, for at most PATIENCE, or until the server closes.
    let trickle = tokio::spawn(async move {
        let steps = PATIENCE.as_millis() / 50;
        for _ in 0..steps {
            if writer.write_all(b"a").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(PATIENCE, reader.read_to_end(&mut answer)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "the trickling connection was not closed: {closed:?}"
    );
    assert!(
        answer.is_empty(),
        "answered: {}",
        String::from_utf8_lossy(&answer)
    );
    trickle.abort();
    let (_, task) = server.stop();
    task.await.unwrap().unwrap();
}

/// The header-read timeout bounds a connection between requests, not a
/// request being served (admission's request timeout does): a body that
/// takes several times as long to arrive is served, and the connection
/// then gets a whole timeout for its next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_served_past_the_header_read_timeout_keeps_its_connection() {
    let server = Server::start(Options {
        header_read_timeout: Duration::from_millis(500),
        ..options()
    })
    .await;
    let mut client = Connection::open(server.addr).await.unwrap();
    let body = signal("slow", 1.0, "slow-1");
    // Five pauses of 300 ms: the body takes three timeouts.
    let (status, answer) = client
        .request_slowly("/v1/signals", TOKEN, &body, 5, Duration::from_millis(300))
        .await
        .unwrap();
    assert!((200..300).contains(&status), "{status}: {answer}");
    // At once, on the same connection: its last progress was the answer.
    let (status, _) = client.request("GET", "/healthz", None, "").await.unwrap();
    assert_eq!(status, 200);
    let (service, task) = server.stop();
    task.await.unwrap().unwrap();
    assert_eq!(service.receipts_of("slow", "signal").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_connection_cap_new_connections_wait_for_a_free_one() {
    let server = Server::start(Options {
        max_connections: 2,
        ..options()
    })
    .await;
    // Two connections that are being served (each answered once, then idle).
    let mut first = Connection::open(server.addr).await.unwrap();
    let mut second = Connection::open(server.addr).await.unwrap();
    for connection in [&mut first, &mut second] {
        let (status, _) = connection
            .request("GET", "/healthz", None, "")
            .await
            .unwrap();
        assert_eq!(status, 200);
    }
    // A third is queued in the listen backlog, not served...
    let mut third = raw(server.addr, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").await;
    let early = tokio::time::timeout(Duration::from_millis(300), status_of(&mut third)).await;
    assert!(early.is_err(), "served past the cap: {early:?}");
    // ...until one of the two closes.
    drop(first);
    let status = tokio::time::timeout(PATIENCE, status_of(&mut third))
        .await
        .unwrap();
    assert_eq!(status, Some(200));
    let (_, task) = server.stop();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drops_requests_still_open_at_its_deadline() {
    let server = Server::start(Options {
        shutdown_timeout: Duration::from_millis(200),
        ..options()
    })
    .await;
    // An authenticated upload that never finishes holds its slot for the
    // request timeout (an hour here).
    let mut client = Connection::open(server.addr).await.unwrap();
    let (status, _) = client
        .request("GET", "/v1/tenants/a", Some(TOKEN), "")
        .await
        .unwrap();
    assert_eq!(status, 404, "the connection is being served");
    let mut stalled = raw(
        server.addr,
        &headers_and_one_byte(
            "POST",
            "/v1/signals",
            &format!("Authorization: Bearer {TOKEN}\r\n"),
        ),
    )
    .await;
    let (_, task) = server.stop();
    tokio::time::timeout(PATIENCE, task)
        .await
        .expect("serve did not return at its shutdown deadline")
        .unwrap()
        .unwrap();
    let closed = tokio::time::timeout(PATIENCE, closed(&mut stalled)).await;
    assert_eq!(closed, Ok(true));
}

/// Forged marketplace events whose signature looks right (fresh timestamp,
/// wrong HMAC) are let in to have their body read, but only into the
/// marketplace's own slots: stalling every one of them leaves signals their
/// slots. A stale timestamp is refused from the header alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_forged_marketplace_events_cannot_take_the_signals_slots() {
    use ggen_runtime::ingress::state::SIGNED_IN_FLIGHT;

    let server = Server::start(Options {
        max_in_flight: 4,
        ..options()
    })
    .await;
    let fresh = format!(
        "X-Ggen-Signature: {}\r\n",
        SigningKey::new(b"wrong").sign(b"{", Timestamp::now())
    );
    let mut held = Vec::new();
    for _ in 0..SIGNED_IN_FLIGHT {
        held.push(
            raw(
                server.addr,
                &headers_and_one_byte("POST", "/v1/marketplace/events", &fresh),
            )
            .await,
        );
    }
    // Let them all be admitted, then one more marketplace event is shed...
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut extra = raw(
        server.addr,
        &headers_and_one_byte("POST", "/v1/marketplace/events", &fresh),
    )
    .await;
    let status = tokio::time::timeout(PATIENCE, status_of(&mut extra))
        .await
        .unwrap();
    assert_eq!(status, Some(503));
    // ...while signals still get every one of their slots.
    let mut clients = Vec::new();
    for n in 0..4 {
        let mut client = Connection::open(server.addr).await.unwrap();
        let (status, text) = client
            .request(
                "POST",
                "/v1/signals",
                Some(TOKEN),
                &signal("a", 1.0, &format!("s-{n}")),
            )
            .await
            .unwrap();
        assert_eq!(status, 204, "{text}");
        clients.push(client);
    }
    // A capture signed long ago is refused before its body is read.
    let stale = format!(
        "X-Ggen-Signature: {}\r\n",
        SigningKey::new(b"wrong").sign(b"{", Timestamp::from_millis(0))
    );
    let mut old = raw(
        server.addr,
        &headers_and_one_byte("POST", "/v1/marketplace/events", &stale),
    )
    .await;
    let status = tokio::time::timeout(PATIENCE, status_of(&mut old))
        .await
        .unwrap();
    assert_eq!(status, Some(401));
    drop(held);
}

/// A client that pipelines requests and never reads the answers fills the
/// socket buffers; the server's write then makes no progress, and after the
/// write timeout (the header-read timeout) the connection is closed, so such
/// clients cannot keep the connection cap taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_its_answers_loses_its_connection() {
    let server = Server::start(Options {
        max_connections: 1,
        header_read_timeout: Duration::from_millis(500),
        ..options()
    })
    .await;
    // A tiny receive window, then ~20k pipelined requests, never read.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut hog = socket.connect(server.addr).await.unwrap();
    let request = b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n";
    let pipelined: Vec<u8> = request.repeat(20_000);
    // The server stops reading once its writes stall: write what it takes.
    let _ = tokio::time::timeout(Duration::from_secs(3), hog.write_all(&pipelined)).await;
    // The only connection slot is the hog's; a second client waits...
    let mut waiting = raw(server.addr, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").await;
    // ...until the stalled write times out and the hog's connection closes.
    let status = tokio::time::timeout(PATIENCE, status_of(&mut waiting))
        .await
        .expect("the stalled connection was never closed");
    assert_eq!(status, Some(200));
    drop(hog);
    let (_, task) = server.stop();
    task.await.unwrap().unwrap();
}
