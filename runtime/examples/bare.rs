//! The baseline of `bench/http.sh`: a bare axum handler that reads a small
//! JSON body and answers 204, on the same runtime setup as `serve`.
//!
//! `cargo run --release -p ggen-runtime --example bare -- 127.0.0.1:18081`

use axum::Router;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::post;

async fn signals(body: Bytes) -> StatusCode {
    // Parse like the real handler does, so the baseline includes JSON work.
    match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(_) => StatusCode::NO_CONTENT,
        Err(_) => StatusCode::BAD_REQUEST,
    }
}

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18081".to_owned());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&addr).await?;
        eprintln!("bare handler listening on {addr}");
        let app = Router::new().route("/v1/signals", post(signals));
        axum::serve(listener, app).await
    })
}
