//! The strict baseline of `bench/http.sh`: an axum handler that answers
//! `POST /v1/signals` with 204 without extracting, let alone parsing, the
//! body (hyper discards it), on the same runtime setup as `serve` and the
//! `bare` example (multi-thread tokio, `axum::serve`): the ceiling of an
//! HTTP ingest on this stack. `bench/http.sh` also runs one as the local
//! receiver of the governor's webhook actions.
//!
//! `cargo run --release -p ggen-runtime --example strict -- 127.0.0.1:18082`

use axum::Router;
use axum::http::StatusCode;
use axum::routing::post;

async fn signals() -> StatusCode {
    StatusCode::NO_CONTENT
}

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18082".to_owned());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&addr).await?;
        eprintln!("strict handler listening on {addr}");
        let app = Router::new().route("/v1/signals", post(signals));
        axum::serve(listener, app).await
    })
}
