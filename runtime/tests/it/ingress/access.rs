//! Tenant-scoped read tokens: issued and revoked by the operator, each a
//! receipt holding only the secret's SHA-256; a token reads its tenant's
//! receipts and proofs and is refused everywhere else; tokens and their
//! revocations survive a restart (from the log and from a checkpoint).

use std::sync::Arc;

use axum::body::Body;
use ggen_runtime::ingress::Options;
use ggen_runtime::ingress::access::ReadToken;
use ggen_runtime::ledger::file::{FileLedger, FileOptions};
use ggen_runtime::note::NoteSigner;
use ggen_runtime::transparency::publish;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::harness::{ADMIN, Service, TOKEN, full_auth, post, request, signal};
use super::sku::GUARD;

fn open(dir: &std::path::Path, publisher: Option<Arc<publish::Publisher>>) -> Service {
    Service::over(
        &GUARD,
        Arc::new(FileLedger::open(dir, FileOptions::default()).unwrap()),
        full_auth(),
        Options {
            transparency: publisher,
            ..Options::default()
        },
    )
}

fn publisher(dir: &std::path::Path) -> Arc<publish::Publisher> {
    Arc::new(publish::Publisher::new(
        NoteSigner::from_seed("governor.test/guard", [9; 32]).unwrap(),
        vec![publish::Sink::Dir(dir.to_path_buf())],
    ))
}

async fn signals(service: &Service, tenant: &str, n: usize) {
    for i in 0..n {
        let reply = service
            .send(post(
                "/v1/signals",
                signal(tenant, 10.0, &format!("{tenant}-{i}")),
            ))
            .await;
        assert_eq!(reply.status, 204, "{reply:?}");
    }
}

/// Issues a read token for `tenant` with the admin token: (id, token).
async fn issue(service: &Service, tenant: &str) -> (String, String) {
    let reply = service
        .send(request(
            "POST",
            &format!("/v1/tenants/{tenant}/tokens"),
            Some(ADMIN),
            Body::empty(),
        ))
        .await;
    assert_eq!(reply.status, 201, "{reply:?}");
    (
        reply.json["id"].as_str().unwrap().to_owned(),
        reply.json["token"].as_str().unwrap().to_owned(),
    )
}

fn with(token: &str, method: &str, path: &str) -> axum::http::Request<Body> {
    request(method, path, Some(token), Body::empty())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_token_reads_its_own_tenants_receipts_and_proofs_and_nothing_else() {
    let ledger = tempfile::tempdir().unwrap();
    let published = tempfile::tempdir().unwrap();
    let publisher = publisher(published.path());
    let service = open(ledger.path(), Some(Arc::clone(&publisher)));
    signals(&service, "t1", 3).await;
    signals(&service, "t2", 3).await;

    // Only the admin token issues, and only for a tenant that exists.
    for (token, status, code) in [
        (None, 401, "unauthorized"),
        (Some("wrong-admin-token-000"), 401, "unauthorized"),
        (Some(TOKEN), 403, "forbidden"),
    ] {
        let reply = service
            .send(request(
                "POST",
                "/v1/tenants/t1/tokens",
                token,
                Body::empty(),
            ))
            .await;
        reply.assert_error(status, code);
    }
    let reply = service
        .send(request(
            "POST",
            "/v1/tenants/nobody/tokens",
            Some(ADMIN),
            Body::empty(),
        ))
        .await;
    reply.assert_error(404, "not_found");

    let (id, token) = issue(&service, "t1").await;
    publisher.publish(&service.ledger).await.unwrap();

    // Its own tenant's receipts and proofs.
    let reply = service
        .send(with(&token, "GET", "/v1/tenants/t1/receipts"))
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.json["receipts"].as_array().unwrap().len(), 4);
    let reply = service
        .send(with(&token, "GET", "/v1/tenants/t1/receipts/2/proof"))
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");

    // Nothing else: another tenant, other routes, writes.
    for (method, path) in [
        ("GET", "/v1/tenants/t2/receipts"),
        ("GET", "/v1/tenants/t2/receipts/1/proof"),
        ("GET", "/v1/tenants/t1"),
        ("GET", "/v1/tenants/t1/admit"),
        ("GET", "/v1/ledger/verify"),
        ("GET", "/v1/tenants/t1/tokens"),
        ("POST", "/v1/tenants/t1/tokens"),
        ("POST", "/v1/tenants/t1/reset"),
        ("DELETE", &format!("/v1/tenants/t1/tokens/{id}")),
        ("GET", "/v1/tenants/Bad%20Id/receipts"),
        ("GET", "/v1/tenants/t1%2F../receipts"),
    ] {
        let reply = service.send(with(&token, method, path)).await;
        assert_eq!(reply.status, 401, "{method} {path}: {reply:?}");
    }
    let reply = service
        .send(request(
            "POST",
            "/v1/signals",
            Some(&token),
            signal("t1", 1.0, "by-a-reader"),
        ))
        .await;
    assert_eq!(reply.status, 401, "{reply:?}");

    // Forgeries: its id with another secret, another id, a broken shape.
    let forged = format!("{}{}", &token[..20], "0".repeat(64));
    let other = ReadToken::generate().unwrap().text();
    for bad in [forged.as_str(), other.as_str(), &token[..83], "ggt_zz"] {
        let reply = service
            .send(with(bad, "GET", "/v1/tenants/t1/receipts"))
            .await;
        reply.assert_error(401, "unauthorized");
    }

    // The ledger holds the token's id and the SHA-256 of its secret, never
    // the secret; the listing only ids.
    let secret = &token[20..];
    let access = service.receipts_of("t1", "access");
    assert_eq!(access.len(), 1);
    assert_eq!(access[0]["event"]["access"], "token_issued");
    assert_eq!(access[0]["event"]["token"], id.as_str());
    let digest = hex::encode(Sha256::digest(hex::decode(secret).unwrap()));
    assert_eq!(access[0]["event"]["digest"], digest.as_str());
    let mut all = Vec::new();
    service
        .ledger
        .scan(&mut |record| {
            all.extend_from_slice(&record.bytes);
            Ok(())
        })
        .unwrap();
    let all = String::from_utf8(all).unwrap();
    assert!(!all.contains(secret) && !all.contains(&token));
    let reply = service
        .send(request(
            "GET",
            "/v1/tenants/t1/tokens",
            Some(ADMIN),
            Body::empty(),
        ))
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.json["tokens"], serde_json::json!([id]));
    assert!(!reply.text.contains(secret) && !reply.text.contains(&digest));

    // Revoked: refused from then on; revoking again, or an unknown id, is 404.
    let path = format!("/v1/tenants/t1/tokens/{id}");
    let reply = service.send(with(TOKEN, "DELETE", &path)).await;
    reply.assert_error(403, "forbidden");
    let reply = service.send(with(ADMIN, "DELETE", &path)).await;
    assert_eq!(reply.status, 204, "{reply:?}");
    let reply = service
        .send(with(&token, "GET", "/v1/tenants/t1/receipts"))
        .await;
    reply.assert_error(401, "unauthorized");
    for path in [
        path.as_str(),
        "/v1/tenants/t1/tokens/0123456789abcdef",
        "/v1/tenants/t1/tokens/not-an-id",
        "/v1/tenants/nobody/tokens/0123456789abcdef",
    ] {
        let reply = service.send(with(ADMIN, "DELETE", path)).await;
        reply.assert_error(404, "not_found");
    }
    let revoked = service.receipts_of("t1", "access");
    assert_eq!(revoked[1]["event"]["access"], "token_revoked");
    assert_eq!(revoked[1]["event"]["digest"], Value::Null);
    // The api token still reads everything.
    let reply = service
        .send(with(TOKEN, "GET", "/v1/tenants/t2/receipts"))
        .await;
    assert_eq!(reply.status, 200);
    service.assert_verifies();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_tokens_and_revocations_survive_a_restart() {
    let ledger = tempfile::tempdir().unwrap();
    let (kept, revoked) = {
        let service = open(ledger.path(), None);
        signals(&service, "t1", 2).await;
        let kept = issue(&service, "t1").await;
        let revoked = issue(&service, "t1").await;
        let reply = service
            .send(with(
                ADMIN,
                "DELETE",
                &format!("/v1/tenants/t1/tokens/{}", revoked.0),
            ))
            .await;
        assert_eq!(reply.status, 204, "{reply:?}");
        (kept, revoked)
    };
    // Recovered from the log alone…
    let service = check(open(ledger.path(), None), &kept.1, &revoked.1).await;
    // …and from a checkpoint of the tenants' states.
    service.registry.checkpoint().unwrap();
    drop(service);
    let service = check(open(ledger.path(), None), &kept.1, &revoked.1).await;
    service.assert_verifies();
    // The checkpoint carried them: `ledger verify`'s replay agrees.
    let states = service.registry.states();
    assert_eq!(
        states[&ggen_runtime::tenant::TenantId::new("t1").unwrap()]
            .tokens
            .keys()
            .cloned()
            .collect::<Vec<_>>(),
        vec![kept.0.clone()]
    );
}

/// `kept` reads t1's receipts, `revoked` does not.
async fn check(service: Service, kept: &str, revoked: &str) -> Service {
    let reply = service
        .send(with(kept, "GET", "/v1/tenants/t1/receipts"))
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let reply = service
        .send(with(revoked, "GET", "/v1/tenants/t1/receipts"))
        .await;
    reply.assert_error(401, "unauthorized");
    service
}
