//! `/metrics` as a dashboard reads it, scraped over a real socket: a
//! `# HELP` for every family, the build info, requests by route and status
//! class (refusals included), action results per action, and only the
//! transitions the FSM can make.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ggen_runtime::actuator::webhook::WebhookConfig;
use ggen_runtime::actuator::{Actuators, Dispatcher, DispatcherOptions};
use ggen_runtime::ingress::{Options, serve};
use ggen_runtime::ledger::memory::MemoryLedger;
use ggen_runtime::sku::PolicyPack;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use super::client::Connection;
use super::harness::{Service, TOKEN, full_auth, signal, without_sku};
use super::sku::{GUARD, MAX_BODY, REPLICA};

/// Bound on every wait for something that must happen (never a timing claim).
const PATIENCE: Duration = Duration::from_secs(10);

/// A service of `pack` on 127.0.0.1:0 (stopped when dropped).
struct Server {
    service: Service,
    addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

impl Server {
    async fn start(pack: &'static dyn PolicyPack, options: Options) -> Server {
        let service = Service::over(pack, Arc::new(MemoryLedger::new()), full_auth(), options);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(serve(listener, service.state.clone(), async move {
            let _ = stopped.await;
        }));
        Server {
            service,
            addr,
            _stop: stop,
        }
    }

    /// One request on a fresh connection: its status.
    async fn status(&self, method: &str, path: &str, token: Option<&str>, body: &str) -> u16 {
        let mut connection = Connection::open(self.addr).await.unwrap();
        let (status, _) = connection.request(method, path, token, body).await.unwrap();
        status
    }

    /// The `/metrics` text (the scrape itself is counted after it is answered).
    async fn scrape(&self) -> String {
        let mut connection = Connection::open(self.addr).await.unwrap();
        let (status, text) = connection
            .request("GET", "/metrics", None, "")
            .await
            .unwrap();
        assert_eq!(status, 200, "{text}");
        text
    }
}

/// The samples of `text`: series (name with labels but the global `sku`) → value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    without_sku(text)
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap();
            (series.to_owned(), value.parse().unwrap())
        })
        .collect()
}

/// The value of `series` in `text` (`None`: not exported).
fn value(text: &str, series: &str) -> Option<f64> {
    samples(text).get(series).copied()
}

/// The families named on `# kind NAME …` lines of `text`.
fn declared(text: &str, kind: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|line| line.strip_prefix(&format!("# {kind} ")))
        .map(|rest| rest.split(' ').next().unwrap().to_owned())
        .collect()
}

/// The `http_requests_total` series of `route` and `status`.
fn http(route: &str, status: &str) -> String {
    format!(r#"governor_http_requests_total{{route="{route}",status="{status}"}}"#)
}

#[tokio::test]
async fn every_family_has_help_and_the_build_info_names_sku_spec_and_runtime() {
    let server = Server::start(&GUARD, Options::default()).await;
    let text = server.scrape().await;
    let families: BTreeSet<String> = [
        "build_info",
        "http_requests_total",
        "signals_total",
        "decisions_total",
        "transitions_total",
        "actions_total",
        "action_results_total",
        "ledger_durable_seconds",
        "tenants",
        "requests_shed_total",
        "ledger_bytes",
        "ledger_disk_free_bytes",
        "ledger_disk_size_bytes",
        "ledger_disk_low",
        "ledger_disk_full",
        "http_request_duration_seconds",
        "ready",
        "ledger_verifications_total",
        "ledger_verify_failures_total",
        "ledger_last_verify_ok",
        "ledger_last_verify_timestamp_seconds",
    ]
    .iter()
    .map(|name| format!("governor_{name}"))
    .collect();
    let typed = declared(&text, "TYPE");
    let helped = declared(&text, "HELP");
    assert_eq!(typed, families, "{text}");
    assert_eq!(helped, families, "{text}");
    for line in text.lines().filter(|l| l.starts_with("# HELP ")) {
        let help = line.splitn(4, ' ').nth(3).unwrap_or_default();
        assert!(help.len() > 10, "empty help: {line}");
    }
    let build = format!(
        r#"governor_build_info{{version="1.0.0",spec_sha256="00aa",runtime="{}"}}"#,
        ggen_runtime::VERSION
    );
    assert_eq!(value(&text, &build), Some(1.0), "{text}");
    // Every series names its SKU.
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        assert!(line.contains(r#"{sku="ingress_guard""#), "{line}");
    }
    assert_eq!(value(&text, "governor_ready"), Some(1.0), "{text}");
}

#[tokio::test]
async fn requests_are_counted_by_route_template_and_status_class_refusals_included() {
    let server = Server::start(
        &GUARD,
        Options {
            max_in_flight: 1,
            request_timeout: Duration::from_secs(3600),
            ..Options::default()
        },
    )
    .await;
    // Pre-registered: a dashboard sees 401s and 400s at 0 before any happens.
    let before = server.scrape().await;
    for route in ggen_runtime::ingress::ROUTES.iter().chain(&["other"]) {
        for status in ["2xx", "3xx", "4xx", "5xx"] {
            let series = http(route, status);
            assert_eq!(value(&before, &series), Some(0.0), "{series} in\n{before}");
        }
    }

    assert_eq!(
        server
            .status("POST", "/v1/signals", Some("wrong"), &signal("a", 1.0, "1"))
            .await,
        401
    );
    assert_eq!(
        server
            .status("POST", "/v1/signals", None, &signal("a", 1.0, "1"))
            .await,
        401
    );
    assert_eq!(
        server
            .status("POST", "/v1/signals", Some(TOKEN), &signal("a", 1.0, "1"))
            .await,
        204
    );
    assert_eq!(
        server
            .status("POST", "/v1/signals", Some(TOKEN), "{not json")
            .await,
        400
    );
    let oversized = format!(r#"{{"pad":"{}"}}"#, "x".repeat(MAX_BODY));
    assert_eq!(
        server
            .status("POST", "/v1/signals", Some(TOKEN), &oversized)
            .await,
        413
    );
    assert_eq!(
        server.status("GET", "/v1/tenants/a", Some(TOKEN), "").await,
        200
    );
    assert_eq!(
        server
            .status("GET", "/v1/tenants/zz", Some(TOKEN), "")
            .await,
        404
    );
    assert_eq!(server.status("GET", "/no/such/route", None, "").await, 404);
    assert_eq!(
        server
            .status("DELETE", "/v1/signals", Some(TOKEN), "")
            .await,
        405
    );
    assert_eq!(server.status("GET", "/healthz", None, "").await, 200);

    // The only slot held by a body that never completes: the next request is shed.
    let mut held = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    held.write_all(
        format!(
            "POST /v1/signals HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 100\r\n\r\n{{"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let shed = tokio::time::timeout(PATIENCE, async {
        loop {
            let status = server
                .status("GET", "/v1/tenants/a/admit", Some(TOKEN), "")
                .await;
            if status == 503 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    shed.await.expect("the held slot never shed a request");

    let text = server.scrape().await;
    // 401 twice, 400, 413, and the 405 of a method the template lacks.
    for (route, status, count) in [
        ("/v1/signals", "4xx", 5.0),
        ("/v1/signals", "2xx", 1.0),
        ("/v1/signals", "5xx", 0.0),
        ("/v1/tenants/{tenant}", "2xx", 1.0),
        ("/v1/tenants/{tenant}", "4xx", 1.0),
        ("/v1/tenants/{tenant}/admit", "5xx", 1.0),
        ("other", "4xx", 1.0),
        ("/healthz", "2xx", 1.0),
        ("/metrics", "2xx", 1.0),
        ("/pubsub/push", "4xx", 0.0),
    ] {
        let series = http(route, status);
        assert_eq!(value(&text, &series), Some(count), "{series} in\n{text}");
    }
    assert_eq!(
        value(&text, "governor_requests_shed_total"),
        value(&text, &http("/v1/tenants/{tenant}/admit", "5xx"))
    );
    // Timed: every answer but the client's mistakes (the five 4xx on /v1/signals).
    let timed = |route: &str| {
        value(
            &text,
            &format!(r#"governor_http_request_duration_seconds_count{{route="{route}"}}"#),
        )
    };
    assert_eq!(timed("/v1/signals"), Some(1.0), "{text}");
    assert_eq!(timed("/v1/tenants/{tenant}"), Some(1.0), "{text}");
    drop(held);
    server.service.assert_verifies();
}

/// A live dispatcher on the current runtime (REPLICA's commands fail).
fn live_dispatcher() -> Dispatcher {
    let actuators = Actuators::new(WebhookConfig::default()).unwrap();
    Dispatcher::new(
        tokio::runtime::Handle::current(),
        actuators,
        DispatcherOptions::default(),
    )
}

#[tokio::test]
async fn action_results_are_counted_per_action_and_outcome() {
    let dispatcher = live_dispatcher();
    let server = Server::start(
        &REPLICA,
        Options {
            actuator: Some(dispatcher.clone()),
            ..Options::default()
        },
    )
    .await;
    let status = server
        .status("POST", "/v1/signals", Some(TOKEN), &signal("a", 120.0, "1"))
        .await;
    assert_eq!(status, 204);
    tokio::time::timeout(PATIENCE, dispatcher.drain(PATIENCE))
        .await
        .unwrap()
        .unwrap();
    let text = server.scrape().await;
    let result = |action: &str, outcome: &str| {
        value(
            &text,
            &format!(r#"governor_action_results_total{{action="{action}",outcome="{outcome}"}}"#),
        )
    };
    assert_eq!(result("throttle", "failed"), Some(1.0), "{text}");
    assert_eq!(result("throttle", "ok"), Some(0.0), "{text}");
    assert_eq!(result("throttle", "rejected"), Some(0.0), "{text}");
    assert_eq!(result("unthrottle", "failed"), Some(0.0), "{text}");
    assert!(
        !text.contains(r#"governor_action_results_total{outcome="#),
        "the old unlabelled-by-action series is gone: {text}"
    );
    // The failed result moved the tenant on: a transition an action result made.
    let degraded = r#"governor_transitions_total{from="intervening",to="degraded"}"#;
    assert_eq!(value(&text, degraded), Some(1.0), "{text}");
}

#[tokio::test]
async fn only_transitions_the_fsm_can_make_are_exported() {
    let server = Server::start(&GUARD, Options::default()).await;
    let text = server.scrape().await;
    let exported: BTreeSet<(String, String)> = samples(&text)
        .into_keys()
        .filter_map(|series| {
            let labels = series.strip_prefix("governor_transitions_total{from=\"")?;
            let (from, rest) = labels.split_once("\",to=\"")?;
            let to = rest.strip_suffix("\"}")?;
            Some((from.to_owned(), to.to_owned()))
        })
        .collect();
    // GUARD needs no entitlement: a new tenant's first signal acts at once.
    let expected: BTreeSet<(String, String)> = [
        ("boot", "stable"),
        ("boot", "warning"),
        ("boot", "intervening"),
        ("boot", "refusing"),
        ("stable", "warning"),
        ("stable", "intervening"),
        ("stable", "refusing"),
        ("warning", "stable"),
        ("warning", "intervening"),
        ("warning", "refusing"),
        ("intervening", "stable"),
        ("intervening", "warning"),
        ("intervening", "degraded"),
        ("intervening", "refusing"),
        ("degraded", "stable"),
        ("degraded", "intervening"),
        ("degraded", "refusing"),
        ("refusing", "stable"),
        ("refusing", "warning"),
    ]
    .iter()
    .map(|(from, to)| ((*from).to_owned(), (*to).to_owned()))
    .collect();
    assert_eq!(exported, expected, "{text}");
    // Every exported pair is an edge of the table, never a self-loop.
    let table: BTreeSet<(String, String)> = ggen_runtime::fsm::transitions(false)
        .map(|t| (t.from.to_owned(), t.to.to_owned()))
        .collect();
    assert!(exported.is_subset(&table));
    assert!(exported.iter().all(|(from, to)| from != to));
}
