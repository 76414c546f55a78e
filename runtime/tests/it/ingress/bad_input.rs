//! The bad-input corpus: each case gets its documented 4xx and a JSON body,
//! never a 5xx or a panic, and the ledger still verifies afterwards.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, header};
use ggen_runtime::ledger::file::FileOptions;
use serde_json::json;

use super::harness::{
    ADMIN, Reply, Service, TOKEN, envelope, get, marketplace, post, pubsub, request, signal,
};
use super::sku::{GUARD, MAX_BODY, TINY};

fn raw(
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: impl Into<Body>,
) -> Request<Body> {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"));
    if let Some(content_type) = content_type {
        builder = builder.header(header::CONTENT_TYPE, content_type);
    }
    builder.body(body.into()).unwrap()
}

/// `request` declaring `content_type` instead.
fn typed(mut request: Request<Body>, content_type: &'static str) -> Request<Body> {
    request.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    request
}

struct Case {
    name: &'static str,
    request: Request<Body>,
    status: u16,
    code: &'static str,
}

fn case(name: &'static str, request: Request<Body>, status: u16, code: &'static str) -> Case {
    Case {
        name,
        request,
        status,
        code,
    }
}

/// `request` declaring a body of `len` bytes, whatever it sends.
fn declared(mut request: Request<Body>, len: usize) -> Request<Body> {
    request
        .headers_mut()
        .insert(header::CONTENT_LENGTH, header::HeaderValue::from(len));
    request
}

fn signals(body: impl Into<Body>) -> Request<Body> {
    post("/v1/signals", body)
}

fn push(tenant: &str, data: &str) -> Request<Body> {
    pubsub(envelope(tenant, data, "m-1"))
}

fn corpus() -> Vec<Case> {
    let deep_array = "[".repeat(MAX_BODY - 10);
    let deep_value = format!(
        r#"{{"tenant":"a","signal":"load","value":{}1{}}}"#,
        "[".repeat(1000),
        "]".repeat(1000)
    );
    let b64 =
        |bytes: &[u8]| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes);
    vec![
        case("bad json", signals("{"), 400, "bad_json"),
        case("empty body", signals(""), 400, "bad_json"),
        case("not utf-8", signals(&b"{\"tenant\":\"\xff\"}"[..]), 400, "bad_json"),
        case("deep array", signals(deep_array), 400, "bad_json"),
        case("deep value", signals(deep_value), 400, "bad_json"),
        case("missing tenant", signals(r#"{"signal":"load","value":1}"#), 400, "bad_json"),
        case("missing value", signals(r#"{"tenant":"a","signal":"load"}"#), 400, "bad_json"),
        case("unknown field", signals(r#"{"tenant":"a","signal":"load","value":1,"x":1}"#), 400, "bad_json"),
        case("tenant not a string", signals(r#"{"tenant":7,"signal":"load","value":1}"#), 400, "bad_json"),
        case("huge number", signals(r#"{"tenant":"a","signal":"load","value":1e400}"#), 400, "bad_json"),
        case("path traversal tenant", signals(signal("../etc/passwd", 1.0, "x")), 400, "bad_request"),
        case("empty tenant", signals(signal("", 1.0, "x")), 400, "bad_request"),
        case("long tenant", signals(signal(&"t".repeat(129), 1.0, "x")), 400, "bad_request"),
        case("control chars in tenant", signals(signal("a\u{0}b", 1.0, "x")), 400, "bad_request"),
        case("bad time", signals(r#"{"tenant":"a","signal":"load","value":1,"at":"yesterday"}"#), 400, "bad_request"),
        // Times an offset pushes out of the years 0000 to 9999 in UTC: a
        // receipt could record them but not read them back.
        case("time past the year 9999", signals(r#"{"tenant":"a","signal":"load","value":1,"at":"9999-12-31T23:59:59-23:59"}"#), 400, "bad_request"),
        case("time before the year 0000", signals(r#"{"tenant":"a","signal":"load","value":1,"at":"0000-01-01T00:00:00+00:01"}"#), 400, "bad_request"),
        case("publish time past the year 9999", pubsub(json!({"message":{"data":b64(br#"{"signal":"load","value":1}"#),"attributes":{"tenant_id":"a"},"messageId":"1","publishTime":"9999-12-31T23:59:59-23:59"}}).to_string()), 400, "bad_request"),
        case("marketplace time past the year 9999", marketplace(r#"{"tenant":"a","event":"created","id":"1","at":"9999-12-31T23:59:59-23:59"}"#), 400, "bad_request"),
        case("long id", signals(signal("a", 1.0, &"i".repeat(300))), 400, "bad_request"),
        // An empty id would make every later input with it a duplicate.
        case("empty id", signals(signal("a", 1.0, "")), 400, "bad_request"),
        case("empty pubsub message id", pubsub(json!({"message":{"data":b64(br#"{"signal":"load","value":1}"#),"attributes":{"tenant_id":"a"},"messageId":""}}).to_string()), 400, "bad_request"),
        case("empty marketplace event id", marketplace(r#"{"tenant":"a","event":"created","id":""}"#), 400, "bad_request"),
        case("unknown signal", signals(r#"{"tenant":"r1","signal":"nope","value":1}"#), 400, "rejected"),
        case("below min", signals(signal("r2", -5.0, "x")), 400, "rejected"),
        case("above max", signals(signal("r3", 1e9, "x")), 400, "rejected"),
        case("string value", signals(r#"{"tenant":"r4","signal":"load","value":"12"}"#), 400, "rejected"),
        case("null value", signals(r#"{"tenant":"r5","signal":"load","value":null}"#), 400, "rejected"),
        case("nan string", signals(r#"{"tenant":"r6","signal":"load","value":"NaN"}"#), 400, "rejected"),
        case("too large", signals(vec![b' '; MAX_BODY + 1]), 413, "too_large"),
        case("text/plain", raw("POST", "/v1/signals", Some("text/plain"), signal("a", 1.0, "x")), 415, "unsupported_media_type"),
        case("no content type", raw("POST", "/v1/signals", None, signal("a", 1.0, "x")), 415, "unsupported_media_type"),
        // The content type is judged first, then the size.
        case("text/plain, too large", raw("POST", "/v1/signals", Some("text/plain"), vec![b' '; MAX_BODY + 1]), 415, "unsupported_media_type"),
        // Judged from the header, before a body that may never come.
        case("declared too large", declared(signals("{}"), MAX_BODY + 1), 413, "too_large"),
        case("pubsub declared too large", declared(push("a", "{}"), MAX_BODY + 1), 413, "too_large"),
        case("pubsub text/plain", typed(push("a", "{}"), "text/plain"), 415, "unsupported_media_type"),
        case("pubsub too large", pubsub(vec![b' '; MAX_BODY + 1]), 413, "too_large"),
        case("batch too large", signals(format!("[{}]", vec!["1"; 1001].join(","))), 400, "bad_request"),
        case("envelope not json", pubsub("nope"), 400, "bad_json"),
        case("envelope without message", pubsub("{}"), 400, "bad_json"),
        case("bad base64", pubsub(json!({"message":{"data":"%%%","attributes":{"tenant_id":"a"},"messageId":"1"}}).to_string()), 400, "bad_request"),
        case("data not utf-8", pubsub(json!({"message":{"data":b64(&[0xff, 0xfe]),"attributes":{"tenant_id":"a"},"messageId":"1"}}).to_string()), 400, "bad_request"),
        case("data not json", push("a", "nope"), 400, "bad_json"),
        case("data missing value", push("a", r#"{"signal":"load"}"#), 400, "bad_json"),
        case("missing tenant attribute", pubsub(json!({"message":{"data":b64(b"{}"),"attributes":{},"messageId":"1"}}).to_string()), 400, "bad_request"),
        case("missing message id", pubsub(json!({"message":{"data":b64(b"{}"),"attributes":{"tenant_id":"a"}}}).to_string()), 400, "bad_request"),
        case("hostile tenant attribute", push("a/../../b", r#"{"signal":"load","value":1}"#), 400, "bad_request"),
        case("pubsub unknown signal", push("p1", r#"{"signal":"nope","value":1}"#), 400, "rejected"),
        case("pubsub out of range", push("p2", r#"{"signal":"load","value":-1}"#), 400, "rejected"),
        case("marketplace bad json", marketplace("{"), 400, "bad_json"),
        case("marketplace unknown event", marketplace(r#"{"tenant":"a","event":"exploded","id":"1"}"#), 400, "bad_request"),
        case("marketplace unknown plan", marketplace(r#"{"tenant":"a","event":"created","id":"1","plan":"gold"}"#), 400, "bad_request"),
        case("marketplace missing id", marketplace(r#"{"tenant":"a","event":"created"}"#), 400, "bad_json"),
        case("receipts limit zero", get("/v1/tenants/r1/receipts?limit=0"), 400, "bad_request"),
        case("receipts limit huge", get("/v1/tenants/r1/receipts?limit=100000"), 400, "bad_request"),
        case("receipts limit text", get("/v1/tenants/r1/receipts?limit=ten"), 400, "bad_request"),
        case("receipts unknown query", get("/v1/tenants/r1/receipts?offset=1"), 400, "bad_request"),
        case("hostile tenant path", get("/v1/tenants/..%2Fetc"), 400, "bad_request"),
        // Escapes that are not UTF-8, in every kind of path parameter.
        case("tenant path not utf-8", get("/v1/tenants/%ff"), 400, "bad_request"),
        case("admit path not utf-8", get("/v1/tenants/%ff/admit"), 400, "bad_request"),
        case("proof path not utf-8", get("/v1/tenants/r1/receipts/%ff/proof"), 400, "bad_request"),
        case("reset path not utf-8", request("POST", "/v1/tenants/%ff/reset", Some(ADMIN), Body::empty()), 400, "bad_request"),
        case("long token id", request("DELETE", &format!("/v1/tenants/r1/tokens/{}", "a".repeat(4000)), Some(ADMIN), Body::empty()), 404, "not_found"),
        case("token path not utf-8", request("DELETE", "/v1/tenants/r1/tokens/%c3%28", Some(ADMIN), Body::empty()), 400, "bad_request"),
        case("unknown tenant", get("/v1/tenants/ghost"), 404, "not_found"),
        case("unknown tenant receipts", get("/v1/tenants/ghost/receipts"), 404, "not_found"),
        case("reset unknown tenant", request("POST", "/v1/tenants/ghost/reset", Some(ADMIN), Body::empty()), 404, "not_found"),
        case("reset bad body", request("POST", "/v1/tenants/r1/reset", Some(ADMIN), "{"), 400, "bad_json"),
        case("unknown route", get("/v2/signals"), 404, "not_found"),
        case("root", get("/"), 404, "not_found"),
        case("wrong method on signals", get("/v1/signals"), 405, "method_not_allowed"),
        case("wrong method on healthz", request("DELETE", "/healthz", None, Body::empty()), 405, "method_not_allowed"),
        case("wrong method on tenant", post("/v1/tenants/r1", "{}"), 405, "method_not_allowed"),
    ]
}

/// A body that never ends.
fn endless() -> Body {
    Body::from_stream(futures_util::stream::pending::<
        Result<axum::body::Bytes, std::io::Error>,
    >())
}

#[tokio::test]
async fn a_wrong_content_type_is_refused_before_the_body_is_read() {
    let service = Service::memory(&GUARD);
    for (name, request) in [
        ("signals", typed(signals(endless()), "text/plain")),
        ("pubsub", typed(pubsub(endless()), "text/plain")),
    ] {
        let reply = tokio::time::timeout(Duration::from_secs(10), service.send(request))
            .await
            .unwrap_or_else(|_| panic!("{name}: the handler waited for a body it would refuse"));
        assert_eq!(reply.status.as_u16(), 415, "{name}: {reply:?}");
        assert_eq!(reply.json["error"], "unsupported_media_type", "{name}");
    }
}

#[tokio::test]
async fn every_bad_input_gets_its_status_and_a_json_error() {
    let service = Service::memory(&GUARD);
    for case in corpus() {
        let reply = service.send(case.request).await;
        assert_eq!(
            reply.status.as_u16(),
            case.status,
            "{}: {reply:?}",
            case.name
        );
        assert_eq!(reply.json["error"], case.code, "{}: {reply:?}", case.name);
        assert!(reply.json["detail"].is_string(), "{}: {reply:?}", case.name);
        // Echoed input is cut: a refusal is never much larger than a request.
        let detail = reply.json["detail"].as_str().unwrap_or_default();
        assert!(
            detail.len() <= 512,
            "{}: {} bytes of detail",
            case.name,
            detail.len()
        );
        assert_eq!(
            reply.content_type.as_deref(),
            Some("application/json"),
            "{}",
            case.name
        );
    }
    // Refused input for valid tenants was receipted as `rejected`.
    for tenant in ["r1", "r2", "r3", "r4", "r5", "r6", "p1", "p2"] {
        let rejected = service.receipts_of(tenant, "rejected");
        assert_eq!(
            rejected.len(),
            1,
            "{tenant}: {:#?}",
            service.receipts(tenant)
        );
        let event = &rejected[0]["event"];
        assert!(event["reason"].is_string(), "{event}");
        assert!(event["input"]["signal"].is_string(), "{event}");
        assert!(
            event["input"]["value"].is_string(),
            "decimals are strings: {event}"
        );
    }
    // Nothing else was written: malformed input never reaches the ledger.
    let report = service.assert_verifies();
    assert_eq!(report.receipts, 8);
    assert_eq!(service.send(get("/readyz")).await.status, 200);
}

#[tokio::test]
async fn tenants_past_max_tenants_are_refused_with_403() {
    let service = Service::memory(&TINY);
    for tenant in ["one", "two"] {
        let reply = service
            .send(post("/v1/signals", signal(tenant, 1.0, "x")))
            .await;
        assert_eq!(reply.status, 204);
    }
    let reply = service
        .send(post("/v1/signals", signal("three", 1.0, "x")))
        .await;
    reply.assert_error(403, "tenant_limit");
    let reply = service
        .send(pubsub(envelope(
            "four",
            r#"{"signal":"load","value":1}"#,
            "m",
        )))
        .await;
    reply.assert_error(403, "tenant_limit");
    // Known tenants still work.
    let reply = service
        .send(post("/v1/signals", signal("one", 2.0, "y")))
        .await;
    assert_eq!(reply.status, 204);
    assert_eq!(service.assert_verifies().receipts, 3);
}

#[test]
fn tenants_past_max_tenants_of_all_replicas_together_are_refused_with_403() {
    use ggen_runtime::pg::PgOptions;
    use ggen_runtime::pg::shared::SharedPgLedger;
    // The synchronous client is opened and dropped off the runtime.
    let Some(url) = crate::ledger::postgres::fresh_schema() else {
        return;
    };
    // Two replicas of `max_tenants` 2 on one schema, one tenant each.
    let replica = || {
        let ledger = SharedPgLedger::open(&url, PgOptions::default()).unwrap();
        let options = ggen_runtime::ingress::Options::default();
        Service::over(
            &TINY,
            Arc::new(ledger),
            super::harness::full_auth(),
            options,
        )
    };
    let (a, b) = (replica(), replica());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        for (replica, tenant) in [(&a, "one"), (&b, "two")] {
            let reply = replica
                .send(post("/v1/signals", signal(tenant, 1.0, "x")))
                .await;
            assert_eq!(reply.status, 204, "{reply:?}");
        }
        let reply = a.send(post("/v1/signals", signal("three", 1.0, "x"))).await;
        reply.assert_error(403, "tenant_limit");
        // Known tenants still work, on either replica.
        let reply = a.send(post("/v1/signals", signal("two", 2.0, "y"))).await;
        assert_eq!(reply.status, 204, "{reply:?}");
    });
    // Nothing of the refused tenant was written.
    let (text, ok) = ggen_runtime::cli::verify_database_report(&TINY, &url, None).unwrap();
    assert!(ok, "{text}");
    assert!(
        text.starts_with("ok: 3 receipts in 2 tenant chains"),
        "{text}"
    );
}

/// A file ledger whose every sync sleeps `delay` first.
fn slow_sync(delay: Duration) -> FileOptions {
    FileOptions {
        sync: Arc::new(move |file| {
            std::thread::sleep(delay);
            file.sync_data()
        }),
        ..FileOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_past_the_in_flight_limit_are_shed_with_503() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = ggen_runtime::ledger::file::FileLedger::open(
        dir.path(),
        slow_sync(Duration::from_millis(400)),
    )
    .unwrap();
    let service = Arc::new(Service::over(
        &GUARD,
        Arc::new(ledger),
        super::harness::full_auth(),
        ggen_runtime::ingress::Options {
            max_in_flight: 1,
            ..Default::default()
        },
    ));
    let slow = {
        let service = Arc::clone(&service);
        tokio::spawn(async move {
            service
                .send(post("/v1/signals", signal("a", 1.0, "1")))
                .await
        })
    };
    // Wait until the first request holds the only slot (its receipt is appended).
    for _ in 0..200 {
        if service.registry.len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let shed: Reply = service
        .send(post("/v1/signals", signal("b", 1.0, "2")))
        .await;
    shed.assert_error(503, "overloaded");
    // Readiness is about serving at all, not a momentary full limit: anyone
    // able to fill the slots must not pull the replica out of its balancer.
    let ready = service.send(get("/readyz")).await;
    assert_eq!(ready.status, 200, "{ready:?}");
    // Probes are never shed.
    assert_eq!(service.send(get("/healthz")).await.status, 200);
    assert_eq!(slow.await.unwrap().status, 204);
    service.assert_verifies();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_ledger_answers_503_and_fails_readiness() {
    let dir = tempfile::tempdir().unwrap();
    let options = FileOptions {
        sync: Arc::new(|_| Err(std::io::Error::other("disk on fire"))),
        ..FileOptions::default()
    };
    let service = Service::file(&GUARD, dir.path(), options);
    let reply = service
        .send(post("/v1/signals", signal("a", 1.0, "1")))
        .await;
    reply.assert_error(503, "unavailable");
    let ready = service.send(get("/readyz")).await;
    ready.assert_error(503, "not_ready");
    assert!(
        ready.json["detail"]
            .as_str()
            .unwrap()
            .contains("disk on fire"),
        "{ready:?}"
    );
    let again = service
        .send(post("/v1/signals", signal("a", 2.0, "2")))
        .await;
    again.assert_error(503, "unavailable");
    // Only a restart undoes a stopped ledger: liveness fails too, so the
    // orchestrator restarts the process.
    let health = service.send(get("/healthz")).await;
    health.assert_error(503, "ledger_failed");
    assert!(
        health.json["detail"]
            .as_str()
            .unwrap()
            .contains("disk on fire"),
        "{health:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_the_timeout_gets_408_and_frees_its_slot() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = ggen_runtime::ledger::file::FileLedger::open(
        dir.path(),
        slow_sync(Duration::from_millis(500)),
    )
    .unwrap();
    let service = Service::over(
        &GUARD,
        Arc::new(ledger),
        super::harness::full_auth(),
        ggen_runtime::ingress::Options {
            max_in_flight: 1,
            request_timeout: Duration::from_millis(100),
            ..Default::default()
        },
    );
    let reply = service
        .send(post("/v1/signals", signal("a", 1.0, "1")))
        .await;
    reply.assert_error(408, "timeout");
    // The slot was released: the next request is not shed. (Not
    // `GET /v1/tenants/a`: it reads the last receipt, which waits for the
    // same slow sync and would time out too.)
    let reply = service.send(get("/v1/tenants/a/admit")).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    service.ledger.flush().unwrap();
    service.assert_verifies();
}

/// A request whose decision dispatched an action, cut off before it was
/// acknowledged (here by the request timeout; a client hanging up does the
/// same): the action still runs, so the ledger never records a dispatch that
/// never happened (which would hold the storm guard for the tenant).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decided_action_runs_even_when_its_request_is_cut_off() {
    use ggen_runtime::actuator::webhook::WebhookConfig;
    use ggen_runtime::actuator::{ActuatorMode, Actuators, Dispatcher, DispatcherOptions};

    let dir = tempfile::tempdir().unwrap();
    let ledger = ggen_runtime::ledger::file::FileLedger::open(
        dir.path(),
        slow_sync(Duration::from_millis(400)),
    )
    .unwrap();
    let dispatcher = Dispatcher::new(
        tokio::runtime::Handle::current(),
        Actuators::new(WebhookConfig::default()).unwrap(),
        DispatcherOptions {
            mode: ActuatorMode::LogOnly,
            ..DispatcherOptions::default()
        },
    );
    let service = Service::over(
        &GUARD,
        Arc::new(ledger),
        super::harness::full_auth(),
        ggen_runtime::ingress::Options {
            request_timeout: Duration::from_millis(50),
            actuator: Some(dispatcher.clone()),
            ..Default::default()
        },
    );
    // 150 is past `intervene`: the decision dispatches `throttle`.
    let reply = service
        .send(post("/v1/signals", signal("cut", 150.0, "c-1")))
        .await;
    reply.assert_error(408, "timeout");
    // The receipt becomes durable after the 400 ms sync; the action then runs.
    for _ in 0..50 {
        if !service.receipts_of("cut", "action_result").is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(service.receipts_of("cut", "action").len(), 1);
    let results = service.receipts_of("cut", "action_result");
    assert_eq!(results.len(), 1, "the dispatched action never ran");
    assert_eq!(results[0]["event"]["ok"], true);
    service.ledger.flush().unwrap();
    service.assert_verifies();
}
