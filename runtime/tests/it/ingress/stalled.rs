//! A replica whose database stops answering (a table locked by someone
//! else, a stalled server), over real sockets and a real PostgreSQL: only
//! the requests that need the database wait, each at most the ledger's
//! `answer_within`, then get a 503 with a JSON body; the probes and
//! `/metrics` keep answering meanwhile, and the database cancels the
//! statements left behind.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use ggen_runtime::ingress::{Options, serve};
use ggen_runtime::pg::PgOptions;
use ggen_runtime::pg::shared::{MAX_WAITING, SharedPgLedger, patiently};
use ggen_runtime::tenant::TenantId;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::client::Connection;
use super::harness::{Service, TOKEN, full_auth, signal};
use super::sku::GUARD;

/// Bound on every wait for something that must happen (never a timing claim).
const PATIENCE: Duration = Duration::from_secs(20);
/// How long a request waits for the database in these tests.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// Sends one request on a new connection; the status and the body.
async fn send(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut connection = Connection::open(addr).await.unwrap();
    tokio::time::timeout(
        PATIENCE,
        connection.request(method, path, Some(TOKEN), body),
    )
    .await
    .unwrap_or_else(|_| panic!("{method} {path}: no answer within {PATIENCE:?}"))
    .unwrap()
}

/// tokio's default number of blocking threads.
const BLOCKING_THREADS: usize = 512;

/// A replica serving over loopback on a runtime of two workers, as
/// `serve` has on this machine's two cores.
struct Replica {
    runtime: tokio::runtime::Runtime,
    service: Service,
    addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    server: JoinHandle<std::io::Result<()>>,
}

impl Replica {
    /// Serves `ledger` with `options` on a runtime of `blocking` blocking threads.
    fn start(ledger: SharedPgLedger, options: Options, blocking: usize) -> Replica {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(blocking)
            .enable_all()
            .build()
            .unwrap();
        let service = runtime
            .block_on(async { Service::over(&GUARD, Arc::new(ledger), full_auth(), options) });
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = runtime.spawn(serve(listener, service.state.clone(), async move {
            let _ = stopped.await;
        }));
        Replica {
            runtime,
            service,
            addr,
            stop,
            server,
        }
    }

    /// Stops serving, then drops the ledger off the runtime's threads
    /// (its synchronous client cannot be dropped on them).
    fn stop(self) {
        let _ = self.stop.send(());
        self.runtime.block_on(self.server).unwrap().unwrap();
        drop(self.runtime);
        drop(self.service);
    }
}

/// A replica's ledger on `url` whose requests wait at most `within`.
fn answering_within(url: &str, within: Duration) -> SharedPgLedger {
    let options = PgOptions {
        answer_within: within,
        ..PgOptions::default()
    };
    SharedPgLedger::open(url, options).unwrap()
}

/// Holds `ACCESS EXCLUSIVE` on `table` in its own session (a thread: the
/// synchronous client stays off the runtime) until the returned sender is
/// dropped; returns once the lock is held. The second value reports how
/// many of the ledger's reader sessions wait for this lock, asked for
/// with `()`.
fn lock_table(url: &str, table: &str) -> (mpsc::Sender<()>, mpsc::Receiver<i64>) {
    let (held_tx, held_rx) = mpsc::channel::<()>();
    let (ask_tx, ask_rx) = mpsc::channel::<()>();
    let (waiting_tx, waiting_rx) = mpsc::channel::<i64>();
    let (url, table) = (url.to_owned(), table.to_owned());
    std::thread::spawn(move || {
        let mut client = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
        let mut tx = client.transaction().unwrap();
        tx.batch_execute(&format!("LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))
            .unwrap();
        held_tx.send(()).unwrap();
        // Each ask: how many reader sessions wait for this lock.
        while ask_rx.recv().is_ok() {
            // Activity is read once per transaction unless cleared.
            tx.batch_execute("SELECT pg_stat_clear_snapshot()").unwrap();
            let waiting: i64 = tx
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity
                     WHERE application_name = 'ggen-read'
                       AND pg_blocking_pids(pid) @> ARRAY[pg_backend_pid()]",
                    &[],
                )
                .unwrap()
                .get(0);
            if waiting_tx.send(waiting).is_err() {
                break;
            }
        }
        tx.commit().unwrap();
    });
    held_rx.recv().unwrap();
    (ask_tx, waiting_rx)
}

#[test]
fn a_locked_table_holds_up_only_the_requests_that_need_it_each_for_a_bounded_time() {
    let Some(url) = crate::ledger::postgres::fresh_schema() else {
        return;
    };
    let ledger = answering_within(&url, ANSWER_WITHIN);
    let replica = Replica::start(ledger, Options::default(), BLOCKING_THREADS);
    let (runtime, addr) = (&replica.runtime, replica.addr);
    let post = |tenant: &str, id: &str| {
        let body = signal(tenant, 1.0, id);
        async move { send(addr, "POST", "/v1/signals", &body).await }
    };

    let (status, body) = runtime.block_on(post("known", "k1"));
    assert_eq!(status, 204, "{body}");

    // Someone else locks the heads: loading a new tenant waits on it.
    let (ask, waiting) = lock_table(&url, "ggen_heads");
    // Far more requests for new tenants than the runtime has workers, and
    // more than may wait for the database at once.
    let requests = MAX_WAITING + 4;
    let stuck: Vec<JoinHandle<(u16, String)>> = (0..requests)
        .map(|i| runtime.spawn(post(&format!("new{i}"), "n")))
        .collect();
    runtime.block_on(async {
        // The requests reach the database (the readers' loads wait on the
        // lock; the rest of the loads queue for a reader).
        let waits = tokio::time::timeout(PATIENCE, async {
            loop {
                ask.send(()).unwrap();
                if waiting.recv().unwrap() >= 4 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        waits.await.expect("the new tenants' loads never reached the lock");
        // Meanwhile the service answers what does not need the database,
        // before any of the held-up requests is answered.
        // Those let wait are still waiting (the ones turned away are
        // answered at once).
        let still_waiting = || {
            stuck.iter().filter(|request| !request.is_finished()).count() >= MAX_WAITING - 1
        };
        let (status, body) = send(addr, "GET", "/healthz", "").await;
        assert_eq!(status, 200, "{body}");
        assert!(
            still_waiting(),
            "a request that needs the database was answered while the lock was still held, before /healthz"
        );
        // `/metrics` waits at most 1 s for the tables' size, which the lock
        // holds up too.
        let (status, body) = send(addr, "GET", "/metrics", "").await;
        assert_eq!(status, 200, "{body}");
        assert!(
            still_waiting(),
            "a request that needs the database was answered while the lock was still held, before /metrics"
        );
    });
    // Each held-up request gives up after `answer_within`, and those past
    // `MAX_WAITING` did not wait at all: a 503 with a JSON body that says
    // why, the lock still held. (The scrape's reading of the tables' size
    // may have taken one of the places.)
    let (mut late, mut crowded) = (0, 0);
    for request in stuck {
        let (status, body) = runtime.block_on(request).unwrap();
        assert_eq!(status, 503, "{body}");
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["error"], "unavailable", "{body}");
        let detail = body["detail"].as_str().unwrap();
        if detail.contains("the database did not answer within 5s") {
            late += 1;
        } else if detail.contains("64 requests already wait for the database") {
            crowded += 1;
        } else {
            panic!("{body}");
        }
    }
    assert!(
        (MAX_WAITING - 1..=MAX_WAITING).contains(&late) && late + crowded == requests,
        "{late} waited, {crowded} turned away"
    );
    // The server cancels the statements they left behind (a second
    // later), so the reader threads are free again, the lock still held.
    runtime.block_on(async {
        let cancelled = tokio::time::timeout(PATIENCE, async {
            loop {
                ask.send(()).unwrap();
                if waiting.recv().unwrap() == 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        cancelled
            .await
            .expect("loads still wait on the lock: one their caller left is not cancelled (no statement timeout), or a queued one still runs");
    });
    drop(ask);
    // Once the lock is let go, new tenants are served again, and nothing
    // of the refused requests was written.
    runtime.block_on(async {
        let served = tokio::time::timeout(PATIENCE, async {
            loop {
                let (status, body) = post("after", "a1").await;
                match status {
                    204 => break,
                    503 => tokio::time::sleep(Duration::from_millis(50)).await,
                    _ => panic!("{status} {body}"),
                }
            }
        });
        served
            .await
            .expect("a new tenant was not served after the lock went");
    });
    replica.stop();
    let (text, ok) = ggen_runtime::cli::verify_database_report(&GUARD, &url, None).unwrap();
    assert!(ok, "{text}");
    assert!(
        text.starts_with("ok: 2 receipts in 2 tenant chains"),
        "{text}"
    );
}

#[test]
fn a_patient_caller_waits_out_a_locked_table_where_a_request_gives_up() {
    use ggen_runtime::ledger::SharedLedger;
    let Some(url) = crate::ledger::postgres::fresh_schema() else {
        return;
    };
    let ledger = answering_within(&url, Duration::from_secs(1));
    let tenant = TenantId::new("t").unwrap();
    let (ask, _waiting) = lock_table(&url, "ggen_heads");
    let error = ledger.load(&tenant).unwrap_err().to_string();
    assert!(
        error.contains("the database did not answer within 1s"),
        "{error}"
    );
    // Let the lock go well after a request would have given up.
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(3));
        drop(ask);
    });
    let stored = patiently(|| ledger.load(&tenant));
    assert!(
        release.is_finished(),
        "the patient load returned before the lock was let go"
    );
    assert_eq!(stored.unwrap().head.seq, 0);
    release.join().unwrap();
}

/// `serve`'s flags as the command line gives them.
#[derive(Debug, clap::Parser)]
struct Cli {
    #[command(flatten)]
    serve: ggen_runtime::ingress::service::ServeArgs,
}

#[test]
fn database_timeout_sets_how_long_a_request_waits_and_stays_below_the_request_timeout() {
    use clap::Parser as _;
    let argv = |extra: &[&str]| {
        let mut argv = vec!["governor", "--listen", "127.0.0.1:0", "--database-url"];
        argv.push("postgres://ggen@127.0.0.1:1/none");
        argv.extend_from_slice(extra);
        Cli::try_parse_from(argv)
    };
    // A wait as long as the request's own bound (or none) is refused.
    for refused in ["0", "30", "-1", "ten"] {
        let flag = format!("--database-timeout={refused}");
        let error = argv(&[&flag]).unwrap_err().to_string();
        assert!(error.contains("--database-timeout"), "{refused}: {error}");
    }
    let default = argv(&[]).unwrap().serve.open_options();
    assert_eq!(default.database_timeout, PgOptions::default().answer_within);

    let Some(url) = crate::ledger::postgres::fresh_schema() else {
        return;
    };
    let args = Cli::try_parse_from([
        "governor",
        "--listen",
        "127.0.0.1:0",
        "--database-url",
        &url,
        "--database-timeout",
        "1",
    ])
    .unwrap()
    .serve;
    let ledger = args
        .store
        .location()
        .unwrap()
        .open_with(
            ggen_runtime::store::Writers::Shared,
            args.open_options(),
            &mut |warning| panic!("{warning}"),
        )
        .unwrap();
    let shared = ledger.shared().expect("a database ledger is shared");
    let (ask, _waiting) = lock_table(&url, "ggen_heads");
    let error = shared
        .load(&TenantId::new("t").unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("the database did not answer within 1s"),
        "{error}"
    );
    drop(ask);
}

/// On a replica a read token can only be checked against the database. A
/// flood of forged ones takes its own few slots, never the slots that
/// signals and the API take, and at most that many database reads.
#[test]
fn forged_read_tokens_on_a_replica_take_only_their_own_slots() {
    use ggen_runtime::ingress::state::UNVERIFIED_READS_IN_FLIGHT;
    let Some(url) = crate::ledger::postgres::fresh_schema() else {
        return;
    };
    // Longer than the test holds the lock: the checks wait it out.
    let ledger = answering_within(&url, PATIENCE);
    let options = Options {
        max_in_flight: 4,
        ..Options::default()
    };
    let replica = Replica::start(ledger, options, BLOCKING_THREADS);
    let (runtime, addr) = (&replica.runtime, replica.addr);
    let body = signal("known", 1.0, "k1");
    let (status, body) = runtime.block_on(send(addr, "POST", "/v1/signals", &body));
    assert_eq!(status, 204, "{body}");

    // The tenant's state cannot be read while the heads are locked.
    let (ask, _waiting) = lock_table(&url, "ggen_heads");
    let forged = format!("ggt_{}", "ab".repeat(40));
    let extra = 4;
    let reads: Vec<JoinHandle<(u16, String)>> = (0..UNVERIFIED_READS_IN_FLIGHT + extra)
        .map(|_| {
            let forged = forged.clone();
            runtime.spawn(async move {
                let mut connection = Connection::open(addr).await.unwrap();
                let request =
                    connection.request("GET", "/v1/tenants/known/receipts", Some(&forged), "");
                tokio::time::timeout(PATIENCE, request)
                    .await
                    .expect("a forged read was never answered")
                    .unwrap()
            })
        })
        .collect();
    runtime.block_on(async {
        // Those past the read slots are turned away at once; the others
        // wait for the database.
        let turned_away = tokio::time::timeout(PATIENCE, async {
            while reads.iter().filter(|read| read.is_finished()).count() < extra {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        turned_away.await.expect("no forged read was turned away");
        // The general slots are all free: a request that needs no
        // database (a malformed signal) is served its 400, not a 503.
        let (status, body) = send(addr, "POST", "/v1/signals", "{").await;
        assert_eq!(status, 400, "{body}");
    });
    drop(ask);
    let (mut refused, mut overloaded) = (0, 0);
    for read in reads {
        let (status, body) = runtime.block_on(read).unwrap();
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        match status {
            401 => refused += 1,
            503 => {
                assert_eq!(body["error"], "overloaded", "{body}");
                let limit = format!("limit `{UNVERIFIED_READS_IN_FLIGHT}`");
                assert!(body["detail"].as_str().unwrap().contains(&limit), "{body}");
                overloaded += 1;
            }
            _ => panic!("{status} {body}"),
        }
    }
    assert_eq!((refused, overloaded), (UNVERIFIED_READS_IN_FLIGHT, extra));
    replica.stop();
}

/// Duplicates acknowledged once everything before them is durable wait
/// for a writer held up by a lock without holding a thread each: the
/// blocking threads stay free for the work that needs them (here, the
/// check of a read token).
#[test]
fn duplicates_waiting_for_a_held_up_writer_hold_no_thread() {
    let Some(url) = crate::ledger::postgres::fresh_schema() else {
        return;
    };
    let ledger = answering_within(&url, PATIENCE);
    // As few blocking threads as duplicates would take with a thread each.
    let replica = Replica::start(ledger, Options::default(), 2);
    let (runtime, addr) = (&replica.runtime, replica.addr);
    let post = |id: &str| {
        let body = signal("known", 1.0, id);
        async move { send(addr, "POST", "/v1/signals", &body).await }
    };
    let (status, body) = runtime.block_on(post("d"));
    assert_eq!(status, 204, "{body}");

    // The writer cannot commit while the receipt counter is locked.
    let (ask, _waiting) = lock_table(&url, "ggen_log");
    let held = runtime.spawn(post("n"));
    // Its decision is queued once the writer waits for the lock: from then
    // on a duplicate is acknowledged only after it commits.
    let writer_waits = {
        let url = url.clone();
        std::thread::spawn(move || {
            let mut client = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
            let waiting = |client: &mut ::postgres::Client| -> i64 {
                client
                    .query_one(
                        "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'ggen_log'::regclass",
                        &[],
                    )
                    .unwrap()
                    .get(0)
            };
            let started = std::time::Instant::now();
            while waiting(&mut client) == 0 {
                assert!(
                    started.elapsed() < PATIENCE,
                    "the writer never waited for the lock"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    writer_waits.join().unwrap();
    let duplicates: Vec<JoinHandle<(u16, String)>> =
        (0..6).map(|_| runtime.spawn(post("d"))).collect();
    runtime.block_on(async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !held.is_finished(),
            "a signal was acknowledged while the writer was held up"
        );
        assert!(
            duplicates.iter().all(|d| !d.is_finished()),
            "a duplicate was acknowledged while the writer was held up"
        );
        // A read token's check runs on a blocking thread: answered while
        // the duplicates still wait.
        let forged = format!("ggt_{}", "ab".repeat(40));
        let mut connection = Connection::open(addr).await.unwrap();
        let read = connection.request("GET", "/v1/tenants/known/receipts", Some(&forged), "");
        let (status, body) = tokio::time::timeout(PATIENCE, read)
            .await
            .expect("the read waited for the duplicates' threads")
            .unwrap();
        assert_eq!(status, 401, "{body}");
        assert!(duplicates.iter().all(|d| !d.is_finished()));
    });
    drop(ask);
    let (status, body) = runtime.block_on(held).unwrap();
    assert_eq!(status, 204, "{body}");
    for duplicate in duplicates {
        let (status, body) = runtime.block_on(duplicate).unwrap();
        assert!(status == 200 || status == 204, "{status} {body}");
    }
    replica.stop();
}
