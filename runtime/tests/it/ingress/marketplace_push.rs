//! `POST /marketplace/pubsub` against a fake Partner Procurement API and a
//! fake metadata-server token endpoint on loopback, built from Google's
//! documented shapes (entitlement and account resources, `:approve`,
//! `:reject`, `:approvePlanChange`, `:rejectPlanChange`, accounts
//! `:approve`); notifications arrive in the documented Pub/Sub push
//! envelope with a Google-style OIDC token. Every call the fake receives is
//! recorded and asserted: method, path, body and bearer token.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode, Uri, header};
use base64::Engine as _;
use ggen_runtime::actuator::Backoff;
use ggen_runtime::ingress::Options;
use ggen_runtime::ingress::auth::{Auth, Oidc};
use ggen_runtime::ledger::Ledger;
use ggen_runtime::ledger::memory::MemoryLedger;
use ggen_runtime::marketplace::{Marketplace, Procurement, Retry, Tokens};
use ggen_runtime::registry::Registry;
use ggen_runtime::sku::PolicyPack;
use ggen_runtime::tenant::TenantId;
use serde_json::{Value, json};

use super::auth::{EMAIL, claims, token};
use super::harness::{Service, fixture, full_auth, get, without_sku};
use super::sku::{AUDIENCE, GUARD, PRODUCT, PROVIDER, SOLD, WATCHED};

/// The audience of the Marketplace subscription's push tokens.
const MKT_AUDIENCE: &str = "https://governor.test/marketplace/pubsub";
/// The service account the Marketplace subscription pushes as.
const MKT_EMAIL: &str = "marketplace-push@provider.iam.gserviceaccount.com";
/// A fault that makes an approval take effect and answer after 2 s.
const SLOW_APPROVAL: u16 = 0;
/// A fault answered 400 `FAILED_PRECONDITION`.
const PRECONDITION: u16 = 4000;
/// The access token the fake metadata server hands out.
const ACCESS_TOKEN: &str = "ya29.test-access-token";

/// One request the fake Procurement API received.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Call {
    method: String,
    path: String,
    body: Value,
    bearer: Option<String>,
}

/// What the fake Procurement API knows and was asked.
#[derive(Default)]
struct Google {
    entitlements: BTreeMap<String, Value>,
    accounts: BTreeMap<String, Value>,
    /// Answers forced on the next requests whose path contains the text.
    faults: VecDeque<(String, u16)>,
    calls: Vec<Call>,
}

/// A fake Procurement API and token endpoint on loopback.
struct Fake {
    procurement: SocketAddr,
    token_url: String,
    google: Arc<Mutex<Google>>,
    token_calls: Arc<Mutex<u32>>,
}

async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

impl Fake {
    async fn start() -> Fake {
        let google = Arc::new(Mutex::new(Google::default()));
        let state = Arc::clone(&google);
        let prefix = format!("/v1/providers/{PROVIDER}/");
        let procurement = Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let state = Arc::clone(&state);
                let prefix = prefix.clone();
                async move {
                    let (status, body, hang) = answer(&state, &prefix, method, uri, headers, body);
                    if hang {
                        tokio::time::sleep(Duration::from_secs(2)).await;
                    }
                    (status, body)
                }
            },
        );
        fn answer(
            state: &Mutex<Google>,
            prefix: &str,
            method: Method,
            uri: Uri,
            headers: HeaderMap,
            body: Bytes,
        ) -> (StatusCode, String, bool) {
            let mut google = state.lock().unwrap();
            let path = uri.path().to_owned();
            google.calls.push(Call {
                method: method.to_string(),
                path: path.clone(),
                body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                bearer: headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
            });
            let fault = google
                .faults
                .front()
                .filter(|(part, _)| path.contains(part.as_str()))
                .map(|(_, status)| *status);
            if let Some(status) = fault {
                google.faults.pop_front();
                if status == SLOW_APPROVAL {
                    // Takes effect, then answers too late.
                    let id = path
                        .rsplit('/')
                        .next()
                        .unwrap()
                        .trim_end_matches(":approve");
                    google.entitlements.get_mut(id).unwrap()["state"] = json!("ENTITLEMENT_ACTIVE");
                    return (StatusCode::OK, "{}".to_owned(), true);
                }
                let (status, google_status) = match status {
                    PRECONDITION => (400, "FAILED_PRECONDITION"),
                    400 => (400, "INVALID_ARGUMENT"),
                    other => (other, "INJECTED"),
                };
                let body = json!({"error": {"code": status, "message": "injected", "status": google_status}});
                return (
                    StatusCode::from_u16(status).unwrap(),
                    body.to_string(),
                    false,
                );
            }
            let Some(rest) = path.strip_prefix(prefix) else {
                return (StatusCode::NOT_FOUND, "{}".to_owned(), false);
            };
            if method == Method::POST {
                return (StatusCode::OK, "{}".to_owned(), false);
            }
            let found = match rest.split_once('/') {
                Some(("entitlements", id)) => google.entitlements.get(id),
                Some(("accounts", id)) => google.accounts.get(id),
                _ => None,
            };
            match found {
                Some(resource) => (StatusCode::OK, resource.to_string(), false),
                None => (
                    StatusCode::NOT_FOUND,
                    json!({"error": {"code": 404, "status": "NOT_FOUND"}}).to_string(),
                    false,
                ),
            }
        }
        let token_calls = Arc::new(Mutex::new(0));
        let counted = Arc::clone(&token_calls);
        let tokens = Router::new().fallback(move |headers: HeaderMap| {
            let counted = Arc::clone(&counted);
            async move {
                *counted.lock().unwrap() += 1;
                assert_eq!(
                    headers.get("metadata-flavor").and_then(|v| v.to_str().ok()),
                    Some("Google")
                );
                json!({"access_token": ACCESS_TOKEN, "expires_in": 3599, "token_type": "Bearer"})
                    .to_string()
            }
        });
        let token_addr = serve(tokens).await;
        Fake {
            procurement: serve(procurement).await,
            token_url: format!(
                "http://{token_addr}/computeMetadata/v1/instance/service-accounts/default/token"
            ),
            google,
            token_calls,
        }
    }

    /// The client `serve` would build, pointed at the fakes, retrying fast.
    fn client(&self, token_url: &str) -> Marketplace {
        self.client_with(token_url, Duration::from_secs(5))
    }

    /// [`Fake::client`] whose attempts time out after `timeout`.
    fn client_with(&self, token_url: &str, timeout: Duration) -> Marketplace {
        let tokens = Arc::new(Tokens::new(token_url).unwrap());
        Marketplace {
            procurement: Procurement::new(
                &format!("http://{}/", self.procurement),
                PROVIDER,
                tokens,
            )
            .unwrap(),
            retry: Retry {
                attempts: 3,
                timeout,
                backoff: Backoff {
                    base: Duration::from_millis(1),
                    cap: Duration::from_millis(4),
                },
            },
        }
    }

    /// Google's entitlement `id` for `account`, as `entitlements.get` answers.
    fn entitlement(&self, id: &str, account: &str, plan: &str, state: &str, pending: Option<&str>) {
        let mut resource = json!({
            "name": format!("providers/{PROVIDER}/entitlements/{id}"),
            "account": format!("providers/{PROVIDER}/accounts/{account}"),
            "provider": PROVIDER,
            "product": PRODUCT,
            "productExternalName": PRODUCT,
            "plan": plan,
            "state": state,
            "createTime": "2026-11-01T00:00:00Z",
            "updateTime": "2026-11-30T00:00:00Z",
        });
        if let Some(pending) = pending {
            resource["newPendingPlan"] = json!(pending);
        }
        self.google
            .lock()
            .unwrap()
            .entitlements
            .insert(id.to_owned(), resource);
    }

    /// Makes entitlement `id` one of the provider's other products.
    fn of_other_product(&self, id: &str) {
        let mut google = self.google.lock().unwrap();
        let resource = google.entitlements.get_mut(id).unwrap();
        resource["productExternalName"] = json!("other.endpoints.provider.cloud.goog");
        resource["product"] = json!("other.endpoints.provider.cloud.goog");
    }

    /// Google's account `id` with its `signup` approval in `signup`.
    fn account(&self, id: &str, signup: &str) {
        let resource = json!({
            "name": format!("providers/{PROVIDER}/accounts/{id}"),
            "provider": PROVIDER,
            "state": "ACCOUNT_ACTIVE",
            "approvals": [{"name": "signup", "state": signup, "updateTime": "2026-11-30T00:00:00Z"}],
        });
        self.google
            .lock()
            .unwrap()
            .accounts
            .insert(id.to_owned(), resource);
    }

    /// Forces `status` on the next request whose path contains `part`.
    fn fail(&self, part: &str, status: u16) {
        self.google
            .lock()
            .unwrap()
            .faults
            .push_back((part.to_owned(), status));
    }

    /// The calls so far, as `METHOD path body`, cleared; each carried the token.
    fn take_calls(&self) -> Vec<String> {
        let calls = std::mem::take(&mut self.google.lock().unwrap().calls);
        calls
            .into_iter()
            .map(|c| {
                assert_eq!(
                    c.bearer.as_deref(),
                    Some(&*format!("Bearer {ACCESS_TOKEN}")),
                    "{c:?}"
                );
                let path = c.path.replace(&format!("/v1/providers/{PROVIDER}/"), "");
                match c.body {
                    Value::Null => format!("{} {path}", c.method),
                    body => format!("{} {path} {body}", c.method),
                }
            })
            .collect()
    }
}

/// Every auth mechanism plus the Marketplace push verifier.
fn auth() -> Auth {
    Auth {
        marketplace_push: Some(
            Oidc::from_file(
                &fixture("jwks.json"),
                MKT_AUDIENCE,
                vec![MKT_EMAIL.to_owned()],
            )
            .unwrap(),
        ),
        ..full_auth()
    }
}

/// A service for `pack` over `ledger` whose Marketplace client is `client`.
fn service(pack: &'static dyn PolicyPack, ledger: Arc<dyn Ledger>, client: Marketplace) -> Service {
    Service::over(
        pack,
        ledger,
        auth(),
        Options {
            marketplace: Some(client),
            ..Options::default()
        },
    )
}

/// A valid push token of the Marketplace subscription.
fn push_token() -> String {
    let claims = claims(MKT_AUDIENCE, "https://accounts.google.com", 600, MKT_EMAIL);
    token("oidc_key.pem", Some("test-key-1"), &claims)
}

/// The push of `notification` (the decoded `message.data`), as Pub/Sub
/// sends it, with bearer `bearer`.
fn push_as(bearer: Option<&str>, notification: &Value, message_id: &str) -> Request<Body> {
    let data = base64::engine::general_purpose::STANDARD.encode(notification.to_string());
    let envelope = json!({
        "message": {
            "data": data,
            "attributes": {},
            "messageId": message_id,
            "message_id": message_id,
            "publishTime": "2026-11-30T10:00:00.000Z",
            "publish_time": "2026-11-30T10:00:00.000Z",
        },
        "subscription": "projects/provider/subscriptions/marketplace-governor",
    });
    let mut builder = Request::builder()
        .method("POST")
        .uri("/marketplace/pubsub")
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(bearer) = bearer {
        builder = builder.header(header::AUTHORIZATION, format!("Bearer {bearer}"));
    }
    builder.body(Body::from(envelope.to_string())).unwrap()
}

/// An entitlement notification of `event_type` (message id derived from the event id).
fn entitlement_event(event_id: &str, event_type: &str, entitlement: &str) -> Value {
    json!({
        "eventId": event_id,
        "eventType": event_type,
        "providerId": PROVIDER,
        "entitlement": { "id": entitlement, "updateTime": "2026-11-30T09:59:59.000Z" },
    })
}

/// Pushes `notification` with a valid token; the answer's status.
async fn push(service: &Service, notification: &Value) -> u16 {
    let id = notification["eventId"].as_str().unwrap_or("none");
    let reply = service
        .send(push_as(
            Some(&push_token()),
            notification,
            &format!("m-{id}"),
        ))
        .await;
    assert!(
        reply.status == StatusCode::NO_CONTENT
            || reply.content_type.as_deref() == Some("application/json"),
        "{reply:?}"
    );
    reply.status.as_u16()
}

/// The tenant's `/v1/tenants/{t}` view and admit answer.
async fn tenant(service: &Service, t: &str) -> (Value, bool) {
    let view = service.send(get(&format!("/v1/tenants/{t}"))).await;
    let admit = service.send(get(&format!("/v1/tenants/{t}/admit"))).await;
    assert_eq!(admit.status, 200, "{admit:?}");
    (view.json, admit.json["allow"].as_bool().unwrap())
}

/// The last receipt of `kind` on `t`'s chain.
fn last(service: &Service, t: &str, kind: &str) -> Value {
    service
        .receipts_of(t, kind)
        .pop()
        .unwrap_or_else(|| panic!("no {kind} receipt for {t}"))
}

#[tokio::test]
async fn a_tenant_lives_from_sign_up_to_cancellation() {
    let fake = Fake::start().await;
    let ledger: Arc<dyn Ledger> = Arc::new(MemoryLedger::new());
    let service = service(&SOLD, Arc::clone(&ledger), fake.client(&fake.token_url));
    let t = "acct-1";

    // The account: its sign-up approval is pending, and approved.
    fake.account(t, "PENDING");
    let account_active = json!({
        "eventId": "ev-1", "eventType": "ACCOUNT_ACTIVE", "providerId": PROVIDER,
        "account": { "id": t, "updateTime": "2026-11-30T09:00:00Z" },
    });
    assert_eq!(push(&service, &account_active).await, 204);
    assert_eq!(
        fake.take_calls(),
        [
            format!("GET accounts/{t}"),
            format!(r#"POST accounts/{t}:approve {{"approvalName":"signup"}}"#)
        ]
    );
    let noted = last(&service, t, "entitlement");
    assert_eq!(noted["event"]["entitlement"], "noted");
    assert_eq!(
        noted["event"]["marketplace"]["event_type"],
        "ACCOUNT_ACTIVE"
    );
    assert_eq!(noted["event"]["id"], "ev-1");
    let call = last(&service, t, "procurement");
    assert_eq!(call["event"]["call"], "approve_account");
    assert_eq!(call["event"]["ok"], true);
    assert_eq!(call["event"]["marketplace"]["account"], t);
    assert_eq!(
        call["event"]["idempotency_key"],
        format!("{t}:{}:approve_account", noted["seq"])
    );
    let (view, allow) = tenant(&service, t).await;
    assert_eq!(
        (view["entitlement"].as_str(), allow),
        (Some("pending"), false)
    );

    // The purchase: read, approved at Google; the tenant waits for activation.
    fake.entitlement(
        "ent-1",
        t,
        "basic-monthly",
        "ENTITLEMENT_ACTIVATION_REQUESTED",
        None,
    );
    assert_eq!(
        push(
            &service,
            &entitlement_event("ev-2", "ENTITLEMENT_CREATION_REQUESTED", "ent-1")
        )
        .await,
        204
    );
    assert_eq!(
        fake.take_calls(),
        [
            "GET entitlements/ent-1",
            "POST entitlements/ent-1:approve {}"
        ]
    );
    let created = last(&service, t, "entitlement");
    assert_eq!(created["event"]["entitlement"], "created");
    assert_eq!(
        created["event"]["marketplace"]["state"],
        "ENTITLEMENT_ACTIVATION_REQUESTED"
    );
    assert_eq!(created["event"]["marketplace"]["entitlement"], "ent-1");
    assert_eq!(created["event"]["marketplace"]["plan"], "basic-monthly");
    assert_eq!(created["event"]["observed_at"], "2026-11-30T09:59:59Z");
    let approve = last(&service, t, "procurement");
    assert_eq!(approve["event"]["call"], "approve");
    assert_eq!(
        approve["event"]["idempotency_key"],
        format!("{t}:{}:approve", created["seq"])
    );
    assert!(!tenant(&service, t).await.1, "pending: not admitted");

    // Google activates it: admitted, on the plan's profile.
    fake.entitlement("ent-1", t, "basic-monthly", "ENTITLEMENT_ACTIVE", None);
    assert_eq!(
        push(
            &service,
            &entitlement_event("ev-3", "ENTITLEMENT_ACTIVE", "ent-1")
        )
        .await,
        204
    );
    assert_eq!(fake.take_calls(), ["GET entitlements/ent-1"]);
    let active = last(&service, t, "entitlement");
    assert_eq!(active["event"]["entitlement"], "approved");
    assert_eq!(
        active["decision"]["entitlement"],
        json!({"from": "pending", "to": "active"})
    );
    let (view, allow) = tenant(&service, t).await;
    assert_eq!(
        (
            view["entitlement"].as_str(),
            view["profile"].as_str(),
            allow
        ),
        (Some("active"), Some("standard"), true)
    );

    // A plan change to a mapped plan: approved; the profile changes once it is in effect.
    fake.entitlement(
        "ent-1",
        t,
        "basic-monthly",
        "ENTITLEMENT_PENDING_PLAN_CHANGE_APPROVAL",
        Some("pro-monthly"),
    );
    assert_eq!(
        push(
            &service,
            &entitlement_event("ev-4", "ENTITLEMENT_PLAN_CHANGE_REQUESTED", "ent-1")
        )
        .await,
        204
    );
    assert_eq!(
        fake.take_calls(),
        [
            "GET entitlements/ent-1",
            r#"POST entitlements/ent-1:approvePlanChange {"pendingPlanName":"pro-monthly"}"#
        ]
    );
    let (view, allow) = tenant(&service, t).await;
    assert_eq!(
        (
            view["entitlement"].as_str(),
            view["profile"].as_str(),
            allow
        ),
        (Some("plan_change_pending"), Some("standard"), true)
    );
    fake.entitlement("ent-1", t, "pro-monthly", "ENTITLEMENT_ACTIVE", None);
    assert_eq!(
        push(
            &service,
            &entitlement_event("ev-5", "ENTITLEMENT_PLAN_CHANGED", "ent-1")
        )
        .await,
        204
    );
    assert_eq!(
        last(&service, t, "entitlement")["event"]["plan"],
        "enterprise"
    );
    let (view, allow) = tenant(&service, t).await;
    assert_eq!(
        (
            view["entitlement"].as_str(),
            view["profile"].as_str(),
            allow
        ),
        (Some("active"), Some("enterprise"), true)
    );

    // A cancellation at the end of the cycle, reverted: served throughout.
    fake.entitlement(
        "ent-1",
        t,
        "pro-monthly",
        "ENTITLEMENT_PENDING_CANCELLATION",
        None,
    );
    assert_eq!(
        push(
            &service,
            &entitlement_event("ev-6", "ENTITLEMENT_PENDING_CANCELLATION", "ent-1")
        )
        .await,
        204
    );
    let (view, allow) = tenant(&service, t).await;
    assert_eq!(
        (view["entitlement"].as_str(), allow),
        (Some("pending_cancellation"), true)
    );
    fake.entitlement("ent-1", t, "pro-monthly", "ENTITLEMENT_ACTIVE", None);
    assert_eq!(
        push(
            &service,
            &entitlement_event("ev-7", "ENTITLEMENT_CANCELLATION_REVERTED", "ent-1")
        )
        .await,
        204
    );
    assert_eq!(
        last(&service, t, "entitlement")["event"]["entitlement"],
        "cancellation_reverted"
    );
    assert_eq!(tenant(&service, t).await.0["entitlement"], "active");

    // Cancelled for good: refused from then on.
    fake.entitlement(
        "ent-1",
        t,
        "pro-monthly",
        "ENTITLEMENT_PENDING_CANCELLATION",
        None,
    );
    assert_eq!(
        push(
            &service,
            &entitlement_event("ev-8", "ENTITLEMENT_PENDING_CANCELLATION", "ent-1")
        )
        .await,
        204
    );
    fake.entitlement("ent-1", t, "pro-monthly", "ENTITLEMENT_CANCELLED", None);
    assert_eq!(
        push(
            &service,
            &entitlement_event("ev-9", "ENTITLEMENT_CANCELLED", "ent-1")
        )
        .await,
        204
    );
    let (view, allow) = tenant(&service, t).await;
    assert_eq!(
        (view["entitlement"].as_str(), allow),
        (Some("cancelled"), false)
    );
    // Reads only since the plan change: nothing more was approved or rejected.
    assert!(
        fake.take_calls()
            .iter()
            .all(|c| c == "GET entitlements/ent-1")
    );
    // One token for everything (cached).
    assert_eq!(*fake.token_calls.lock().unwrap(), 1);

    // Every step is on the chain, which verifies and replays to the same state.
    let kinds: Vec<String> = service
        .receipts(t)
        .iter()
        .map(|r| match r["kind"].as_str().unwrap() {
            "entitlement" => r["event"]["entitlement"].as_str().unwrap().to_owned(),
            other => other.to_owned(),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "noted",
            "procurement",
            "created",
            "procurement",
            "approved",
            "plan_change_requested",
            "procurement",
            "plan_changed",
            "cancellation_requested",
            "cancellation_reverted",
            "cancellation_requested",
            "cancelled"
        ]
    );
    service.assert_verifies();
    let recovered = Registry::new(&SOLD, ledger);
    recovered.recover().unwrap();
    let view = recovered.view(&TenantId::new(t).unwrap()).unwrap();
    assert_eq!(
        (view.entitlement.as_str(), view.profile),
        ("cancelled", "enterprise")
    );
}

#[tokio::test]
async fn transient_failures_are_retried_and_nothing_is_lost() {
    let fake = Fake::start().await;
    let service = service(
        &SOLD,
        Arc::new(MemoryLedger::new()),
        fake.client(&fake.token_url),
    );
    let t = "acct-2";
    fake.entitlement(
        "ent-2",
        t,
        "basic-monthly",
        "ENTITLEMENT_ACTIVATION_REQUESTED",
        None,
    );

    // The approval answers 503, then 429, then succeeds: one notification,
    // three attempts, each after a read that shows it still called for.
    fake.fail(":approve", 503);
    fake.fail(":approve", 429);
    let created = entitlement_event("ev-1", "ENTITLEMENT_CREATION_REQUESTED", "ent-2");
    assert_eq!(push(&service, &created).await, 204);
    assert_eq!(
        fake.take_calls(),
        [
            "GET entitlements/ent-2",
            "POST entitlements/ent-2:approve {}",
            "GET entitlements/ent-2",
            "POST entitlements/ent-2:approve {}",
            "GET entitlements/ent-2",
            "POST entitlements/ent-2:approve {}"
        ]
    );
    let approve = last(&service, t, "procurement");
    assert_eq!(approve["event"]["ok"], true);
    assert_eq!(approve["event"]["detail"], "ok (attempt 3/3)");

    // The read keeps failing: 503, nothing written, and Pub/Sub's
    // redelivery of the same message is then handled in full.
    fake.entitlement("ent-2", t, "basic-monthly", "ENTITLEMENT_ACTIVE", None);
    for _ in 0..3 {
        fake.fail("entitlements/ent-2", 500);
    }
    let before = service.receipts(t).len();
    let active = entitlement_event("ev-2", "ENTITLEMENT_ACTIVE", "ent-2");
    let reply = service
        .send(push_as(Some(&push_token()), &active, "m-ev-2"))
        .await;
    reply.assert_error(503, "upstream_unavailable");
    assert!(
        reply.json["detail"].as_str().unwrap().contains("`500`"),
        "{reply:?}"
    );
    assert_eq!(service.receipts(t).len(), before, "nothing written");
    assert_eq!(fake.take_calls().len(), 3);
    assert_eq!(push(&service, &active).await, 204);
    assert_eq!(tenant(&service, t).await.0["entitlement"], "active");

    // A duplicate eventId: one effect (read again, no call, no receipt).
    let after = service.receipts(t).len();
    fake.take_calls();
    assert_eq!(push(&service, &active).await, 204);
    assert_eq!(push(&service, &created).await, 204);
    assert_eq!(service.receipts(t).len(), after);
    assert_eq!(
        fake.take_calls(),
        ["GET entitlements/ent-2", "GET entitlements/ent-2"]
    );

    // An approval that keeps failing transiently: 503 and nothing written;
    // the redelivery approves.
    fake.entitlement(
        "ent-3",
        "acct-3",
        "basic-monthly",
        "ENTITLEMENT_ACTIVATION_REQUESTED",
        None,
    );
    for _ in 0..3 {
        fake.fail(":approve", 502);
    }
    let third = entitlement_event("ev-3", "ENTITLEMENT_CREATION_REQUESTED", "ent-3");
    let reply = service
        .send(push_as(Some(&push_token()), &third, "m-ev-3"))
        .await;
    reply.assert_error(503, "upstream_unavailable");
    assert!(service.receipts("acct-3").is_empty());
    assert_eq!(push(&service, &third).await, 204);
    assert_eq!(last(&service, "acct-3", "procurement")["event"]["ok"], true);
    service.assert_verifies();

    // The metrics tell the same story.
    let metrics = service.send(get("/metrics")).await;
    let text = without_sku(&metrics.text);
    for line in [
        r#"governor_marketplace_notifications_total{outcome="applied"} 3"#,
        r#"governor_marketplace_notifications_total{outcome="duplicate"} 2"#,
        r#"governor_marketplace_notifications_total{outcome="unavailable"} 2"#,
        r#"governor_procurement_calls_total{call="approve",outcome="ok"} 2"#,
        r#"governor_procurement_calls_total{call="approve",outcome="unavailable"} 1"#,
        r#"governor_procurement_calls_total{call="reject",outcome="failed"} 0"#,
        r#"governor_entitlements{state="active"} 1"#,
        r#"governor_entitlements{state="pending"} 1"#,
    ] {
        assert!(text.lines().any(|l| l == line), "{line}\n{text}");
    }
}

#[tokio::test]
async fn a_refused_call_is_receipted_and_changes_nothing() {
    let fake = Fake::start().await;
    let service = service(
        &SOLD,
        Arc::new(MemoryLedger::new()),
        fake.client(&fake.token_url),
    );
    fake.entitlement(
        "ent-1",
        "acct-1",
        "basic-monthly",
        "ENTITLEMENT_ACTIVATION_REQUESTED",
        None,
    );
    fake.fail(":approve", 400);
    assert_eq!(
        push(
            &service,
            &entitlement_event("ev-1", "ENTITLEMENT_CREATION_REQUESTED", "ent-1")
        )
        .await,
        204
    );
    assert_eq!(
        fake.take_calls(),
        [
            "GET entitlements/ent-1",
            "POST entitlements/ent-1:approve {}"
        ]
    );
    let failed = last(&service, "acct-1", "procurement");
    assert_eq!(failed["event"]["ok"], false);
    let detail = failed["event"]["detail"].as_str().unwrap();
    assert!(
        detail.contains("`400`") && detail.contains("(attempt 1/3)"),
        "{detail}"
    );
    assert_eq!(
        failed["from"], failed["to"],
        "a procurement receipt is no transition"
    );
    let (view, allow) = tenant(&service, "acct-1").await;
    assert_eq!(
        (view["entitlement"].as_str(), allow),
        (Some("pending"), false)
    );

    // Active, then a plan change whose approval is refused: the tenant
    // follows Google (a change waits, the old profile stays), the failure
    // is receipted, and Google's next word decides.
    fake.entitlement(
        "ent-1",
        "acct-1",
        "basic-monthly",
        "ENTITLEMENT_ACTIVE",
        None,
    );
    assert_eq!(
        push(
            &service,
            &entitlement_event("ev-2", "ENTITLEMENT_ACTIVE", "ent-1")
        )
        .await,
        204
    );
    fake.entitlement(
        "ent-1",
        "acct-1",
        "basic-monthly",
        "ENTITLEMENT_PENDING_PLAN_CHANGE_APPROVAL",
        Some("pro-monthly"),
    );
    fake.fail(":approvePlanChange", 400);
    let requested = entitlement_event("ev-3", "ENTITLEMENT_PLAN_CHANGE_REQUESTED", "ent-1");
    assert_eq!(push(&service, &requested).await, 204);
    let failed = last(&service, "acct-1", "procurement");
    assert_eq!(
        (
            failed["event"]["call"].as_str(),
            failed["event"]["ok"].as_bool()
        ),
        (Some("approve_plan_change"), Some(false))
    );
    let (view, allow) = tenant(&service, "acct-1").await;
    assert_eq!(
        (
            view["entitlement"].as_str(),
            view["profile"].as_str(),
            allow
        ),
        (Some("plan_change_pending"), Some("standard"), true)
    );
    fake.entitlement(
        "ent-1",
        "acct-1",
        "basic-monthly",
        "ENTITLEMENT_ACTIVE",
        None,
    );
    let cancelled = entitlement_event("ev-4", "ENTITLEMENT_PLAN_CHANGE_CANCELLED", "ent-1");
    assert_eq!(push(&service, &cancelled).await, 204);
    let last_event = last(&service, "acct-1", "entitlement");
    assert_eq!(last_event["event"]["entitlement"], "plan_change_cancelled");
    assert_eq!(tenant(&service, "acct-1").await.0["entitlement"], "active");
}

#[tokio::test]
async fn notifications_out_of_order_converge_on_googles_state() {
    let fake = Fake::start().await;
    let service = service(
        &SOLD,
        Arc::new(MemoryLedger::new()),
        fake.client(&fake.token_url),
    );
    // ENTITLEMENT_ACTIVE arrives first: active at once; the creation
    // request arriving later reads ACTIVE too and calls nothing.
    fake.entitlement(
        "ent-1",
        "acct-1",
        "basic-monthly",
        "ENTITLEMENT_ACTIVE",
        None,
    );
    assert_eq!(
        push(
            &service,
            &entitlement_event("ev-2", "ENTITLEMENT_ACTIVE", "ent-1")
        )
        .await,
        204
    );
    let late = entitlement_event("ev-1", "ENTITLEMENT_CREATION_REQUESTED", "ent-1");
    assert_eq!(push(&service, &late).await, 204);
    assert_eq!(
        fake.take_calls(),
        ["GET entitlements/ent-1", "GET entitlements/ent-1"]
    );
    assert!(tenant(&service, "acct-1").await.1);
    // Skipped steps are followed (a pending cancellation straight into
    // suspension, and back).
    for (n, google) in [
        ("ev-3", "ENTITLEMENT_PENDING_CANCELLATION"),
        ("ev-4", "ENTITLEMENT_SUSPENDED"),
        ("ev-5", "ENTITLEMENT_ACTIVE"),
    ] {
        fake.entitlement("ent-1", "acct-1", "basic-monthly", google, None);
        let renewed = entitlement_event(n, "ENTITLEMENT_RENEWED", "ent-1");
        assert_eq!(push(&service, &renewed).await, 204);
    }
    let states: Vec<String> = service
        .receipts_of("acct-1", "entitlement")
        .iter()
        .map(|r| {
            r["decision"]["entitlement"]["to"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        states,
        [
            "active",
            "active",
            "pending_cancellation",
            "suspended",
            "active"
        ]
    );

    // A late word about another entitlement of the account (one rejected
    // earlier, now cancelled) cannot cancel the live one.
    fake.entitlement(
        "ent-2",
        "acct-1",
        "pro-monthly",
        "ENTITLEMENT_CANCELLED",
        None,
    );
    let other = entitlement_event("ev-6", "ENTITLEMENT_CANCELLED", "ent-2");
    assert_eq!(push(&service, &other).await, 204);
    let refused = last(&service, "acct-1", "entitlement");
    assert_eq!(refused["decision"]["reason"], "entitlement_refused");
    let error = refused["decision"]["error"].as_str().unwrap();
    assert!(error.contains("follows (`ent-1`"), "{refused}");
    assert!(tenant(&service, "acct-1").await.1);

    // Cancelled, then bought again with automatic approval (no creation
    // request): the new entitlement is followed, the old one no longer.
    fake.entitlement(
        "ent-1",
        "acct-1",
        "basic-monthly",
        "ENTITLEMENT_CANCELLED",
        None,
    );
    let gone = entitlement_event("ev-7", "ENTITLEMENT_CANCELLED", "ent-1");
    assert_eq!(push(&service, &gone).await, 204);
    assert!(!tenant(&service, "acct-1").await.1);
    fake.entitlement("ent-3", "acct-1", "pro-monthly", "ENTITLEMENT_ACTIVE", None);
    let again = entitlement_event("ev-8", "ENTITLEMENT_OFFER_ACCEPTED", "ent-3");
    assert_eq!(push(&service, &again).await, 204);
    let (view, allow) = tenant(&service, "acct-1").await;
    assert_eq!(
        (
            view["entitlement"].as_str(),
            view["profile"].as_str(),
            allow
        ),
        (Some("active"), Some("enterprise"), true)
    );
    let stale = entitlement_event("ev-9", "ENTITLEMENT_CANCELLED", "ent-1");
    assert_eq!(push(&service, &stale).await, 204);
    assert!(
        tenant(&service, "acct-1").await.1,
        "the old entitlement's word is stale"
    );
    service.assert_verifies();
}

#[tokio::test]
async fn a_write_that_must_wait_is_redelivered_and_one_that_took_effect_is_not_repeated() {
    let fake = Fake::start().await;
    // Attempts time out after 500 ms: the slow approval answers after 2 s.
    let service = service(
        &SOLD,
        Arc::new(MemoryLedger::new()),
        fake.client_with(&fake.token_url, Duration::from_millis(500)),
    );
    // The account's sign-up is not approved yet: Google refuses the
    // entitlement's approval (FAILED_PRECONDITION) on every attempt: 503,
    // nothing written; the redelivery, once it can, approves.
    fake.entitlement(
        "ent-1",
        "acct-1",
        "basic-monthly",
        "ENTITLEMENT_ACTIVATION_REQUESTED",
        None,
    );
    for _ in 0..3 {
        fake.fail(":approve", PRECONDITION);
    }
    let created = entitlement_event("ev-1", "ENTITLEMENT_CREATION_REQUESTED", "ent-1");
    let reply = service
        .send(push_as(Some(&push_token()), &created, "m-1"))
        .await;
    reply.assert_error(503, "upstream_unavailable");
    let detail = reply.json["detail"].as_str().unwrap();
    assert!(detail.contains("FAILED_PRECONDITION"), "{reply:?}");
    assert!(service.receipts("acct-1").is_empty());
    fake.take_calls();
    assert_eq!(push(&service, &created).await, 204);
    assert_eq!(last(&service, "acct-1", "procurement")["event"]["ok"], true);

    // An approval that takes effect but answers too late is not made
    // again: the read before the next attempt shows it done.
    fake.entitlement(
        "ent-2",
        "acct-2",
        "basic-monthly",
        "ENTITLEMENT_ACTIVATION_REQUESTED",
        None,
    );
    fake.fail(":approve", SLOW_APPROVAL);
    fake.take_calls();
    let second = entitlement_event("ev-2", "ENTITLEMENT_CREATION_REQUESTED", "ent-2");
    assert_eq!(push(&service, &second).await, 204);
    assert_eq!(
        fake.take_calls(),
        [
            "GET entitlements/ent-2",
            "POST entitlements/ent-2:approve {}",
            "GET entitlements/ent-2"
        ]
    );
    let approve = last(&service, "acct-2", "procurement");
    assert_eq!(approve["event"]["ok"], true);
    let detail = approve["event"]["detail"].as_str().unwrap();
    assert!(
        detail.contains("an earlier attempt took effect"),
        "{approve}"
    );
}

#[tokio::test]
async fn unmapped_plans_and_second_entitlements_are_rejected() {
    let fake = Fake::start().await;
    let service = service(
        &SOLD,
        Arc::new(MemoryLedger::new()),
        fake.client(&fake.token_url),
    );
    // A plan the spec does not map.
    fake.entitlement(
        "ent-9",
        "acct-9",
        "gold-yearly",
        "ENTITLEMENT_ACTIVATION_REQUESTED",
        None,
    );
    assert_eq!(
        push(
            &service,
            &entitlement_event("ev-1", "ENTITLEMENT_CREATION_REQUESTED", "ent-9")
        )
        .await,
        204
    );
    assert_eq!(
        fake.take_calls(),
        [
            "GET entitlements/ent-9",
            r#"POST entitlements/ent-9:reject {"reason":"plan `gold-yearly` is not offered by this product's governor"}"#
        ]
    );
    assert_eq!(
        last(&service, "acct-9", "procurement")["event"]["call"],
        "reject"
    );

    // An active account asks for a second entitlement: refused and rejected.
    fake.entitlement(
        "ent-1",
        "acct-1",
        "basic-monthly",
        "ENTITLEMENT_ACTIVE",
        None,
    );
    assert_eq!(
        push(
            &service,
            &entitlement_event("ev-2", "ENTITLEMENT_ACTIVE", "ent-1")
        )
        .await,
        204
    );
    fake.entitlement(
        "ent-2",
        "acct-1",
        "pro-monthly",
        "ENTITLEMENT_ACTIVATION_REQUESTED",
        None,
    );
    fake.take_calls();
    assert_eq!(
        push(
            &service,
            &entitlement_event("ev-3", "ENTITLEMENT_CREATION_REQUESTED", "ent-2")
        )
        .await,
        204
    );
    let calls = fake.take_calls();
    assert_eq!(
        calls[1],
        r#"POST entitlements/ent-2:reject {"reason":"the account already holds a live entitlement to this product"}"#
    );
    let refused = last(&service, "acct-1", "entitlement");
    assert_eq!(refused["decision"]["reason"], "entitlement_refused");
    assert_eq!(tenant(&service, "acct-1").await.0["entitlement"], "active");

    // A plan change to an unmapped plan: rejected, the tenant keeps its plan.
    fake.entitlement(
        "ent-1",
        "acct-1",
        "basic-monthly",
        "ENTITLEMENT_PENDING_PLAN_CHANGE_APPROVAL",
        Some("gold-yearly"),
    );
    assert_eq!(
        push(
            &service,
            &entitlement_event("ev-4", "ENTITLEMENT_PLAN_CHANGE_REQUESTED", "ent-1")
        )
        .await,
        204
    );
    assert_eq!(
        fake.take_calls()[1],
        r#"POST entitlements/ent-1:rejectPlanChange {"pendingPlanName":"gold-yearly","reason":"plan `gold-yearly` is not offered by this product's governor"}"#
    );
}

#[tokio::test]
async fn without_auto_approve_the_governor_only_follows() {
    let fake = Fake::start().await;
    let service = service(
        &WATCHED,
        Arc::new(MemoryLedger::new()),
        fake.client(&fake.token_url),
    );
    fake.account("acct-1", "PENDING");
    fake.entitlement(
        "ent-1",
        "acct-1",
        "basic-monthly",
        "ENTITLEMENT_ACTIVATION_REQUESTED",
        None,
    );
    let account =
        json!({"eventId": "ev-0", "eventType": "ACCOUNT_ACTIVE", "account": {"id": "acct-1"}});
    assert_eq!(push(&service, &account).await, 204);
    assert_eq!(
        push(
            &service,
            &entitlement_event("ev-1", "ENTITLEMENT_CREATION_REQUESTED", "ent-1")
        )
        .await,
        204
    );
    assert_eq!(
        fake.take_calls(),
        ["GET accounts/acct-1", "GET entitlements/ent-1"]
    );
    assert!(service.receipts_of("acct-1", "procurement").is_empty());
    assert_eq!(tenant(&service, "acct-1").await.0["entitlement"], "pending");
}

#[tokio::test]
async fn foreign_unknown_and_vanished_notifications_are_receipted_and_acknowledged() {
    let fake = Fake::start().await;
    let service = service(
        &SOLD,
        Arc::new(MemoryLedger::new()),
        fake.client(&fake.token_url),
    );
    // Another provider's entitlement: no read, no call.
    let mut foreign = entitlement_event("ev-1", "ENTITLEMENT_CREATION_REQUESTED", "ent-x");
    foreign["providerId"] = json!("other-partner");
    assert_eq!(push(&service, &foreign).await, 204);
    // An event type Google does not document.
    let unknown = entitlement_event("ev-2", "ENTITLEMENT_TELEPORTED", "ent-x");
    assert_eq!(push(&service, &unknown).await, 204);
    // An entitlement the API does not know (404).
    let gone = entitlement_event("ev-3", "ENTITLEMENT_DELETED", "ent-gone");
    assert_eq!(push(&service, &gone).await, 204);
    // An id that is not a path segment never reaches the API.
    let hostile = entitlement_event("ev-4", "ENTITLEMENT_ACTIVE", "../accounts/x");
    assert_eq!(push(&service, &hostile).await, 204);
    // Another product of the same provider: read, left alone (no rejection).
    fake.entitlement(
        "ent-o",
        "acct-o",
        "gold-yearly",
        "ENTITLEMENT_ACTIVATION_REQUESTED",
        None,
    );
    fake.of_other_product("ent-o");
    let other = entitlement_event("ev-5", "ENTITLEMENT_CREATION_REQUESTED", "ent-o");
    assert_eq!(push(&service, &other).await, 204);
    assert_eq!(
        fake.take_calls(),
        ["GET entitlements/ent-gone", "GET entitlements/ent-o"]
    );
    assert!(service.receipts("acct-o").is_empty());
    let rejected = service.receipts_of("marketplace", "rejected");
    let reasons: Vec<&str> = rejected
        .iter()
        .map(|r| r["event"]["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons.len(), 5, "{reasons:?}");
    assert!(
        reasons[4].contains("of product `other.endpoints.provider.cloud.goog`"),
        "{reasons:?}"
    );
    assert!(
        reasons[0].contains("provider `other-partner`"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].contains("unknown marketplace event type `ENTITLEMENT_TELEPORTED`"),
        "{reasons:?}"
    );
    assert!(
        reasons[2].contains("`ent-gone` is not found"),
        "{reasons:?}"
    );
    assert!(
        reasons[3].contains("not a plain path segment"),
        "{reasons:?}"
    );
    assert_eq!(rejected[0]["event"]["input"]["id"], "ev-1");
    // Redeliveries add nothing.
    for n in [&foreign, &unknown, &gone] {
        assert_eq!(push(&service, n).await, 204);
    }
    assert_eq!(service.receipts_of("marketplace", "rejected").len(), 5);
    service.assert_verifies();
}

#[tokio::test]
async fn the_token_endpoint_being_down_costs_a_redelivery() {
    let fake = Fake::start().await;
    // A port nothing listens on.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let client = fake.client(&format!("http://{closed}/token"));
    // What `serve` logs at startup names the endpoint.
    let error = client.check_token().await.unwrap_err();
    assert!(
        error.to_string().contains(&format!("`http://{closed}`")),
        "{error}"
    );
    let service = service(&SOLD, Arc::new(MemoryLedger::new()), client);
    fake.entitlement(
        "ent-1",
        "acct-1",
        "basic-monthly",
        "ENTITLEMENT_ACTIVATION_REQUESTED",
        None,
    );
    let created = entitlement_event("ev-1", "ENTITLEMENT_CREATION_REQUESTED", "ent-1");
    let reply = service
        .send(push_as(Some(&push_token()), &created, "m-1"))
        .await;
    reply.assert_error(503, "upstream_unavailable");
    assert!(
        reply.json["detail"]
            .as_str()
            .unwrap()
            .contains("token endpoint"),
        "{reply:?}"
    );
    assert!(fake.take_calls().is_empty(), "no call without a token");
    assert!(service.receipts("acct-1").is_empty());
}

#[tokio::test]
async fn only_the_marketplace_subscription_may_push() {
    let fake = Fake::start().await;
    let service = service(
        &SOLD,
        Arc::new(MemoryLedger::new()),
        fake.client(&fake.token_url),
    );
    fake.entitlement(
        "ent-1",
        "acct-1",
        "basic-monthly",
        "ENTITLEMENT_ACTIVE",
        None,
    );
    let n = entitlement_event("ev-1", "ENTITLEMENT_ACTIVE", "ent-1");
    let send = |bearer: Option<String>| service.send(push_as(bearer.as_deref(), &n, "m-1"));
    send(None).await.assert_error(401, "unauthorized");
    // The signals subscription's token (its audience and account).
    let pubsub = token(
        "oidc_key.pem",
        Some("test-key-1"),
        &claims(AUDIENCE, "https://accounts.google.com", 600, EMAIL),
    );
    send(Some(pubsub)).await.assert_error(401, "unauthorized");
    // The right audience, another account.
    let stranger = token(
        "oidc_key.pem",
        Some("test-key-1"),
        &claims(MKT_AUDIENCE, "https://accounts.google.com", 600, EMAIL),
    );
    send(Some(stranger)).await.assert_error(401, "unauthorized");
    // The api token.
    send(Some(super::harness::TOKEN.to_owned()))
        .await
        .assert_error(401, "unauthorized");
    assert!(
        fake.take_calls().is_empty(),
        "refused before anything is read"
    );
    assert_eq!(send(Some(push_token())).await.status, 204);

    // Not configured: 403, saying what to configure.
    let plain = Service::over(
        &SOLD,
        Arc::new(MemoryLedger::new()),
        full_auth(),
        Options::default(),
    );
    let reply = plain.send(push_as(Some(&push_token()), &n, "m-2")).await;
    reply.assert_error(403, "forbidden");
    assert!(
        reply.json["detail"]
            .as_str()
            .unwrap()
            .contains("--marketplace-audience"),
        "{reply:?}"
    );
    // A spec that is not sold on the Marketplace.
    let unsold = Service::over(
        &GUARD,
        Arc::new(MemoryLedger::new()),
        auth(),
        Options::default(),
    );
    let reply = unsold.send(push_as(Some(&push_token()), &n, "m-3")).await;
    reply.assert_error(403, "forbidden");
    assert!(
        reply.json["detail"]
            .as_str()
            .unwrap()
            .contains("entitlement.marketplace"),
        "{reply:?}"
    );
}

#[tokio::test]
async fn bad_envelopes_are_4xx_with_json() {
    let fake = Fake::start().await;
    let service = service(
        &SOLD,
        Arc::new(MemoryLedger::new()),
        fake.client(&fake.token_url),
    );
    let raw = |body: &str| {
        Request::builder()
            .method("POST")
            .uri("/marketplace/pubsub")
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::AUTHORIZATION, format!("Bearer {}", push_token()))
            .body(Body::from(body.to_owned()))
            .unwrap()
    };
    let not_json = base64::engine::general_purpose::STANDARD.encode("nope");
    let no_event_id =
        base64::engine::general_purpose::STANDARD.encode(r#"{"eventType":"ENTITLEMENT_ACTIVE"}"#);
    for (body, status, code) in [
        ("{", 400, "bad_json"),
        (r#"{"message":{}}"#, 400, "bad_request"),
        (r#"{"message":{"data":"%%%"}}"#, 400, "bad_request"),
        (
            &*format!(r#"{{"message":{{"data":"{not_json}"}}}}"#),
            400,
            "bad_json",
        ),
        (
            &*format!(r#"{{"message":{{"data":"{no_event_id}"}}}}"#),
            400,
            "bad_json",
        ),
    ] {
        service.send(raw(body)).await.assert_error(status, code);
    }
    let huge = "x".repeat(64 * 1024);
    let reply = service
        .send(raw(&format!(r#"{{"message":{{"data":"{huge}"}}}}"#)))
        .await;
    assert_eq!(reply.status, 413, "{reply:?}");
    assert!(fake.take_calls().is_empty());
    assert_eq!(service.registry.len(), 0);
}
