//! The `serve` command: configuration from flags and the environment,
//! checked before anything is opened ([`configure`], the same checks
//! `serve --check` runs and reports, see [`crate::preflight`]),
//! startup (open the ledger, recover, start the actuator and its timers),
//! serving with periodic background checkpoints (so a restart after a crash
//! replays only the log's tail), and graceful shutdown on SIGTERM/SIGINT
//! (stop accepting, drain in-flight requests, drain actions within a bound,
//! checkpoint, flush).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use super::auth::{Auth, JwksSource, MarketplaceFlags, SIGNATURE_TOLERANCE_SECS};
use super::state::{AppState, Options, REQUEST_TIMEOUT};
use crate::actuator::{ActuatorError, ActuatorMode, Actuators, Dispatcher, DispatcherOptions};
use crate::ledger::LedgerError;
pub use crate::logging::{LogFormat, init as init_logging};
use crate::preflight::{self, Environment, Problem, Problems};
use crate::registry::{
    DEFAULT_CAPACITY, DEFAULT_MAX_TOTAL, DEFAULT_WINDOW, DedupeOptions, Registry, RegistryError,
};
use crate::report::error_chain;
use crate::sku::PolicyPack;
use crate::store::Location;
use crate::transparency::publish::Publisher;

/// The shortest `--dedupe-window`: a signed marketplace event is accepted
/// while its timestamp is within the tolerance either side of the server's
/// clock, so its id must be remembered for twice that.
pub const MIN_DEDUPE_WINDOW_SECS: u64 = 2 * SIGNATURE_TOLERANCE_SECS as u64;

/// The longest timeout a flag takes (one day): larger values would overflow
/// the clock arithmetic of the server's timers.
pub const MAX_TIMEOUT_SECS: u64 = 86_400;

/// How often the background checkpointer compares the append count with `--checkpoint-every`.
pub const CHECKPOINT_POLL: Duration = Duration::from_secs(10);

/// Whether actions really run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ActionsMode {
    /// Through the adapter each action names.
    #[default]
    Live,
    /// Through the `log` adapter only (no side effects).
    Log,
}

/// Flags of `serve` (secrets come from the environment, never from flags).
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on, e.g. `0.0.0.0:8080`.
    #[arg(long, value_name = "ADDR")]
    pub listen: SocketAddr,
    /// The ledger: `--ledger DIR` or `--database-url URL`.
    #[command(flatten)]
    pub store: crate::store::StoreArgs,
    /// Serve `/v1/*` and `/pubsub/push` without authentication. Refused
    /// when `GOVERNOR_AUTH_TOKEN` or OIDC is configured. Local experiments only.
    #[arg(long)]
    pub insecure_no_auth: bool,
    /// Check the configuration against the spec and exit, opening nothing:
    /// 0 when `serve` would start, 1 listing every problem otherwise.
    #[arg(long)]
    pub check: bool,
    /// This instance takes no Pub/Sub pushes: `/pubsub/push` answers 403,
    /// and a spec's Pub/Sub audience needs no `--jwks`.
    #[arg(long)]
    pub no_pubsub: bool,
    /// Log format on stderr (level from `RUST_LOG`, default `info`).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// JWKS of the keys signing Pub/Sub OIDC tokens (or `GOVERNOR_OIDC_JWKS`):
    /// a file read at startup, or an `https://` URL (such as
    /// `https://www.googleapis.com/oauth2/v3/certs`) fetched at startup and
    /// refreshed while serving.
    #[arg(long, value_name = "FILE|URL")]
    pub jwks: Option<JwksSource>,
    /// Service account allowed to push (the verified `email` of its OIDC
    /// tokens); repeat for several. Required with `--jwks`. Without the flag,
    /// `GOVERNOR_OIDC_EMAIL` (comma-separated) is read.
    #[arg(long = "oidc-email", value_name = "EMAIL")]
    pub oidc_email: Vec<String>,
    /// The audience of the OIDC tokens Pub/Sub pushes Marketplace
    /// notifications with (`/marketplace/pubsub`; or
    /// `GOVERNOR_MARKETPLACE_AUDIENCE`). Needs `--jwks`, an
    /// `entitlement.marketplace` section in the spec and `--marketplace-oidc-email`.
    #[arg(long, value_name = "AUDIENCE")]
    pub marketplace_audience: Option<String>,
    /// Service account allowed to push Marketplace notifications; repeat
    /// for several. Without the flag, `GOVERNOR_MARKETPLACE_OIDC_EMAIL`
    /// (comma-separated) is read.
    #[arg(long = "marketplace-oidc-email", value_name = "EMAIL")]
    pub marketplace_oidc_email: Vec<String>,
    /// Base URL of the Partner Procurement API (or `GOVERNOR_PROCUREMENT_URL`).
    #[arg(long, value_name = "URL")]
    pub procurement_url: Option<String>,
    /// Where Google access tokens for the Procurement API come from: a
    /// metadata-server style endpoint (or `GOVERNOR_GCP_TOKEN_URL`; default
    /// the GKE metadata server's, for Workload Identity).
    #[arg(long, value_name = "URL")]
    pub gcp_token_url: Option<String>,
    /// A service-account key file to get Google access tokens with instead
    /// (the JWT-bearer grant at the key's `token_uri`; or
    /// `GOOGLE_APPLICATION_CREDENTIALS`). Workload Identity needs none.
    #[arg(long, value_name = "FILE", conflicts_with = "gcp_token_url")]
    pub gcp_key_file: Option<std::path::PathBuf>,
    /// Requests handled at once; more are refused with 503.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub max_in_flight: usize,
    /// Free space on the file ledger's disk under which `/readyz` answers
    /// 503 and a warning is logged, before writes fail: a percentage of
    /// the file system (`5%`), bytes (`512MiB`, `2GiB`), or `auto` (5%, at
    /// most 1 GiB).
    #[arg(long, value_name = "SIZE", default_value = "auto")]
    pub min_free: crate::ingress::MinFree,
    /// Connections open at once; past it, new ones wait in the listen
    /// backlog until one closes (keep it below the open-file limit).
    #[arg(long, value_name = "N", default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: u64,
    /// Seconds a connection may take to send a request's headers; also how
    /// long an idle keep-alive connection stays open.
    #[arg(long, value_name = "SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=MAX_TIMEOUT_SECS))]
    pub header_read_timeout: u64,
    /// Seconds from SIGTERM until open requests are dropped and running
    /// actions abandoned; the final checkpoint and flush follow. Keep it
    /// below the pod's `terminationGracePeriodSeconds` (60 in the
    /// generated manifest).
    #[arg(long, value_name = "SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=MAX_TIMEOUT_SECS))]
    pub shutdown_timeout: u64,
    /// `live` runs webhooks and commands; `log` only records them.
    #[arg(long, value_enum, default_value_t = ActionsMode::Live)]
    pub actions: ActionsMode,
    /// Seconds to wait for running actions at shutdown (within `--shutdown-timeout`).
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub drain_timeout: u64,
    /// Write a checkpoint in the background once this many receipts were
    /// appended since the last one (checked every 10 s; 0: only at shutdown).
    #[arg(long, value_name = "N", default_value_t = 200_000)]
    pub checkpoint_every: u64,
    /// Verify the whole ledger in the background every this many seconds
    /// (0: never; `GET /v1/ledger/verify` runs one on demand). A problem
    /// found is logged at ERROR and counted in
    /// `governor_ledger_verify_failures_total`, which an alert watches.
    #[arg(long, value_name = "SECONDS", default_value_t = 0,
          value_parser = clap::value_parser!(u64).range(0..=MAX_TIMEOUT_SECS))]
    pub verify_every: u64,
    /// Keep this much of the ledger locally: an age (`7d`, `12h`) or a size
    /// (`20GiB`). Older closed segments (a PostgreSQL ledger: full
    /// partitions) are copied to `--archive`, the copy checked, then
    /// removed here. Needs `--archive`.
    #[arg(long, value_name = "AGE|SIZE", requires = "archive")]
    pub retain: Option<crate::archive::Retain>,
    /// Where retention archives segments or partitions: `s3://bucket/prefix`,
    /// `gs://bucket/prefix` (credentials from `AWS_*` / `GOOGLE_*`), a
    /// directory or `file:///dir`.
    #[arg(long, value_name = "URL", requires = "retain")]
    pub archive: Option<String>,
    /// How often retention looks for segments to archive, in seconds.
    #[arg(long, value_name = "S", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub archive_every: u64,
    /// A PostgreSQL ledger's receipts per partition of its receipts table,
    /// the unit retention archives and drops (about 600 MB of calm signal
    /// receipts at the default).
    #[arg(long, value_name = "N", default_value_t = crate::pg::DEFAULT_PARTITION_RECEIPTS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub partition_receipts: u64,
    /// A file ledger's segment size (`64MiB`, `512KiB`; 4 KiB to 2 GiB):
    /// the unit retention archives and removes.
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = segment_size)]
    pub segment_size: u64,
    /// Replicas on PostgreSQL: seconds a request waits for the database to
    /// load its tenant, lock it or read on its behalf before it is answered
    /// 503 `unavailable`; the database sessions doing that work cancel a
    /// statement a second later. Below the request timeout (30 s).
    #[arg(long, value_name = "SECONDS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..REQUEST_TIMEOUT.as_secs()))]
    pub database_timeout: u64,
    /// How long event ids (Pub/Sub `messageId`, signal and marketplace
    /// `id`) are remembered to drop redeliveries, in seconds of the server's
    /// clock; at least twice the marketplace signature tolerance (600).
    #[arg(long, value_name = "SECONDS", default_value_t = DEFAULT_WINDOW.as_secs(),
          value_parser = clap::value_parser!(u64).range(MIN_DEDUPE_WINDOW_SECS..))]
    pub dedupe_window: u64,
    /// Signal ids one tenant may hold inside the dedupe window; a new id
    /// past it is answered 429 until the oldest expires.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CAPACITY,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub dedupe_capacity: usize,
    /// Signal ids all tenants together may hold inside their windows
    /// (about 50 bytes each); a new id past it is answered 429.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_TOTAL,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub dedupe_max_ids: usize,
    /// How often the append count is checked ([`CHECKPOINT_POLL`]; not a flag, tests shorten it).
    #[arg(skip = CHECKPOINT_POLL)]
    pub checkpoint_poll: Duration,
    /// Signed checkpoints of the ledger's Merkle tree, and where they are published.
    #[command(flatten)]
    pub transparency: crate::transparency::publish::PublishArgs,
    /// How often the tree's size is compared with `--publish-receipts` ([`PUBLISH_POLL`]).
    #[arg(skip = PUBLISH_POLL)]
    pub publish_poll: Duration,
}

/// How often the background publisher looks at the tree's size.
pub const PUBLISH_POLL: Duration = Duration::from_secs(1);

/// How long the checkpoint published at shutdown may take.
const FINAL_PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);

/// Why `serve` stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration cannot work (authentication, actions, Pub/Sub,
    /// the ledger's flags): nothing was opened.
    #[error("`serve` refuses to start")]
    Preflight(#[source] Problems),
    /// No ledger, or one that cannot be named (`--ledger`/`--database-url`).
    #[error("{0}")]
    Store(String),
    /// The ledger could not be opened or flushed.
    #[error("ledger failed")]
    Ledger(#[source] LedgerError),
    /// Recovery or the final checkpoint failed.
    #[error("registry failed")]
    Registry(#[source] RegistryError),
    /// The actuator could not be built.
    #[error("actuator failed")]
    Actuator(#[source] ActuatorError),
    /// The Procurement API client could not be built.
    #[error("marketplace client failed: {0}")]
    Marketplace(String),
    /// Signed checkpoints cannot work as configured.
    #[error("signed checkpoints: {0}")]
    Transparency(String),
    /// The runtime, the listener or the server failed.
    #[error("i/o failed: {what}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl ServeError {
    /// 1 for configuration the operator must fix, 2 for failures.
    pub fn exit_code(&self) -> u8 {
        match self {
            ServeError::Preflight(_)
            | ServeError::Store(_)
            | ServeError::Marketplace(_)
            | ServeError::Transparency(_) => 1,
            ServeError::Ledger(LedgerError::Io { .. } | LedgerError::Poisoned { .. }) => 2,
            ServeError::Ledger(_) => 1,
            ServeError::Registry(_) | ServeError::Actuator(_) | ServeError::Io { .. } => 2,
        }
    }
}

/// A `--segment-size`: bytes with a unit, 4 KiB to 2 GiB.
fn segment_size(text: &str) -> Result<u64, String> {
    match text.parse::<crate::archive::Retain>() {
        Ok(crate::archive::Retain::Bytes(bytes)) if (4096..=2 << 30).contains(&bytes) => Ok(bytes),
        _ => Err(format!(
            "`{text}` is not a size from 4KiB to 2GiB (e.g. `64MiB`)"
        )),
    }
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServeError {
    let what = what.into();
    move |source| ServeError::Io { what, source }
}

/// Resolves on SIGTERM or SIGINT.
async fn terminated() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(error = %error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = term => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
    }
}

/// Whether `appended` receipts (a running count) call for a checkpoint after
/// the last one, taken at `last`, given `--checkpoint-every` = `every` (0: never).
fn checkpoint_due(appended: u64, last: u64, every: u64) -> bool {
    every > 0 && appended.saturating_sub(last) >= every
}

/// Every `poll`, checkpoints `registry` on a blocking thread if at least
/// `every` receipts were appended since the last checkpoint; returns once
/// `stopped` turns true (never in the middle of a checkpoint).
async fn checkpoint_periodically(
    registry: Arc<Registry>,
    every: u64,
    poll: Duration,
    mut stopped: watch::Receiver<bool>,
) {
    // Recovery appends nothing: receipts still to be checkpointed are those
    // appended from here on (a recovered tail waits for the next N).
    let mut last = registry.appended();
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + poll, poll);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stopped.wait_for(|s| *s) => return,
            _ = ticks.tick() => {}
        }
        let appended = registry.appended();
        if !checkpoint_due(appended, last, every) {
            continue;
        }
        let started = std::time::Instant::now();
        let worker = Arc::clone(&registry);
        match tokio::task::spawn_blocking(move || worker.checkpoint()).await {
            Ok(Ok(tenants)) => {
                tracing::info!(
                    tenants,
                    receipts = appended - last,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "checkpoint written"
                );
                last = appended;
            }
            // Retried at the next tick; a failed ledger also fails ingest.
            Ok(Err(error)) => {
                tracing::error!(error = %error_chain(&error), "periodic checkpoint failed")
            }
            Err(error) => tracing::error!(error = %error, "periodic checkpoint panicked"),
        }
    }
}

/// How long after start `--verify-every` runs its first verification.
const FIRST_VERIFICATION: Duration = Duration::from_secs(60);

/// Verifies the whole ledger a minute after start, then every `every`
/// (skipped while a requested verification runs), so a replica restarted
/// more often than `every` still verifies; returns once `stopped` turns
/// true, cancelling a verification in progress.
async fn verify_periodically(state: AppState, every: Duration, mut stopped: watch::Receiver<bool>) {
    let first = tokio::time::Instant::now() + every.min(FIRST_VERIFICATION);
    let mut ticks = tokio::time::interval_at(first, every);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stopped.wait_for(|s| *s) => return,
            _ = ticks.tick() => {}
        }
        let Ok(_one) = state.verifying() else {
            continue;
        };
        let cancel = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let run = super::tenants::verify_ledger(&state, Arc::clone(&cancel));
        tokio::select! {
            result = run => {
                if let Err(error) = result {
                    tracing::error!(error = %error, "periodic ledger verification could not run");
                }
            }
            _ = stopped.wait_for(|s| *s) => {
                cancel.store(true, std::sync::atomic::Ordering::Relaxed);
                return;
            }
        }
    }
}

/// Whether `error` is a full disk (waiting writes, or a write that found none).
fn out_of_space(error: &LedgerError) -> bool {
    match error {
        LedgerError::Full { .. } => true,
        LedgerError::Io { source, .. } => crate::ledger::is_out_of_space(source),
        _ => false,
    }
}

/// `GOVERNOR_PROCUREMENT_URL`, when `--procurement-url` is not given.
pub const ENV_PROCUREMENT_URL: &str = "GOVERNOR_PROCUREMENT_URL";
/// `GOVERNOR_GCP_TOKEN_URL`, when `--gcp-token-url` is not given.
pub const ENV_GCP_TOKEN_URL: &str = "GOVERNOR_GCP_TOKEN_URL";

/// A flag's value, else the environment variable `env`'s, else `default`.
fn setting(flag: Option<&String>, env: &str, default: &str) -> String {
    flag.cloned()
        .or_else(|| std::env::var(env).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| default.to_owned())
}

/// `GOOGLE_APPLICATION_CREDENTIALS`: a service-account key file, when
/// `--gcp-key-file` is not given (and no token URL is).
pub const ENV_GOOGLE_CREDENTIALS: &str = "GOOGLE_APPLICATION_CREDENTIALS";

/// The key file `serve` gets tokens with, if any: `--gcp-key-file`, else
/// `GOOGLE_APPLICATION_CREDENTIALS` unless a token URL is set.
fn key_file(args: &ServeArgs) -> Option<std::path::PathBuf> {
    let token_url_set = args.gcp_token_url.is_some()
        || std::env::var_os(ENV_GCP_TOKEN_URL).is_some_and(|v| !v.is_empty());
    args.gcp_key_file.clone().or_else(|| {
        (!token_url_set)
            .then(|| std::env::var_os(ENV_GOOGLE_CREDENTIALS))
            .flatten()
            .filter(|v| !v.is_empty())
            .map(std::path::PathBuf::from)
    })
}

/// The Procurement API's and the token endpoint's URLs `serve` uses.
fn marketplace_urls(args: &ServeArgs) -> (String, String) {
    (
        setting(
            args.procurement_url.as_ref(),
            ENV_PROCUREMENT_URL,
            crate::marketplace::PROCUREMENT_URL,
        ),
        setting(
            args.gcp_token_url.as_ref(),
            ENV_GCP_TOKEN_URL,
            crate::marketplace::METADATA_TOKEN_URL,
        ),
    )
}

/// Why `url` may not carry Google access tokens: not `http(s)://`, or
/// plain `http://` to a host that is neither loopback nor (for the token
/// endpoint, `metadata`) the metadata server.
fn token_url_problem(url: &str, metadata: bool) -> Option<String> {
    let Ok(parsed) = reqwest::Url::parse(url) else {
        return Some(format!("`{url}` is not a url"));
    };
    let metadata_hosts: &[&str] = if metadata {
        &["metadata.google.internal", "169.254.169.254"]
    } else {
        &[]
    };
    if crate::actuator::webhook::secure_url(&parsed, metadata_hosts) {
        return None;
    }
    match parsed.scheme() {
        "http" => Some(format!(
            "`{}` is plain `http://`: access tokens would travel in the clear (allowed for loopback{})",
            crate::actuator::webhook::redacted(url),
            if metadata {
                " and the metadata server"
            } else {
                ""
            }
        )),
        other => Some(format!("`{other}://` is not `https://`")),
    }
}

/// The Procurement API client of a SKU sold on Google Cloud Marketplace
/// (`None` for others), from `args` and the environment.
pub fn marketplace_client(
    pack: &'static dyn PolicyPack,
    args: &ServeArgs,
) -> Result<Option<crate::marketplace::Marketplace>, ServeError> {
    let Some(def) = pack.sku().marketplace.as_ref() else {
        return Ok(None);
    };
    let (procurement_url, token_url) = marketplace_urls(args);
    let tokens = match key_file(args) {
        Some(path) => crate::marketplace::Tokens::from_key_file(&path)
            .map_err(|e| ServeError::Marketplace(error_chain(&e)))?,
        None => crate::marketplace::Tokens::new(token_url)
            .map_err(|e| ServeError::Marketplace(error_chain(&e)))?,
    };
    let procurement =
        crate::marketplace::Procurement::new(&procurement_url, def.provider_id, Arc::new(tokens))
            .map_err(|e| ServeError::Marketplace(e.to_string()))?;
    Ok(Some(crate::marketplace::Marketplace {
        procurement,
        retry: crate::marketplace::Retry::default(),
    }))
}

/// Checks `args` against `pack`'s spec before anything is opened, and
/// builds the inbound authentication (fetching a JWKS URL once): every
/// problem of authentication, Pub/Sub, live actions (see
/// [`crate::preflight`]) and the ledger's flags, or the [`Auth`] to serve
/// with. Reads the environment (`env` for what the actions need).
pub async fn configure(
    pack: &'static dyn PolicyPack,
    args: &ServeArgs,
    env: &Environment,
) -> Result<Auth, Problems> {
    let sku = pack.sku();
    let mut problems = Vec::new();
    let auth = match Auth::from_env(
        sku.ingress.pubsub_audience,
        args.jwks.as_ref(),
        args.oidc_email.clone(),
        args.insecure_no_auth,
        MarketplaceFlags {
            audience: args.marketplace_audience.clone(),
            emails: args.marketplace_oidc_email.clone(),
            spec: sku.marketplace.is_some(),
        },
    )
    .await
    {
        Ok(auth) => Some(auth),
        Err(error) => {
            problems.push(Problem::new("auth", error_chain(&error)));
            None
        }
    };
    if let Some(auth) = &auth {
        problems.extend(preflight::pubsub(sku, auth, args.no_pubsub));
    }
    if args.actions == ActionsMode::Live {
        problems.extend(preflight::actions(sku, env));
    }
    if sku.marketplace.is_some() {
        let (procurement_url, token_url) = marketplace_urls(args);
        if let Some(why) = token_url_problem(&procurement_url, false) {
            problems.push(Problem::new(
                "marketplace",
                format!("procurement url {why}"),
            ));
        }
        match key_file(args) {
            Some(path) => {
                if let Err(error) = crate::marketplace::Tokens::from_key_file(&path) {
                    problems.push(Problem::new("marketplace", error_chain(&error)));
                }
            }
            None => {
                if let Some(why) = token_url_problem(&token_url, true) {
                    problems.push(Problem::new("marketplace", format!("gcp token url {why}")));
                }
            }
        }
    }
    if let Err(why) = args.store.location() {
        problems.push(Problem::new("ledger", why));
    }
    if let Some(url) = &args.archive
        && let Err(error) = crate::archive::Archive::preflight(url).await
    {
        problems.push(Problem::new("archive", error_chain(&error)));
    }
    match auth {
        Some(auth) if problems.is_empty() => Ok(auth),
        _ => Err(Problems(problems)),
    }
}

/// `serve --check`: runs [`configure`] (nothing opened, nothing written)
/// and describes what `serve` would start with, one fact per line; a
/// [`ServeError::Preflight`] lists every problem otherwise.
pub fn check(pack: &'static dyn PolicyPack, args: &ServeArgs) -> Result<String, ServeError> {
    let sku = pack.sku();
    // A JWKS URL is fetched as `serve` would: that needs a runtime.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io("starting the tokio runtime"))?;
    let env = Environment::from_env();
    let auth = runtime
        .block_on(configure(pack, args, &env))
        .map_err(ServeError::Preflight)?;
    let location = args.store.location().map_err(ServeError::Store)?;
    let publisher = publisher(args)?;
    let mut text = format!(
        "ok: `serve` can start: sku `{}` {} (spec sha256 {})
",
        sku.id, sku.version, sku.spec_sha256
    );
    text.push_str(&format!(
        "  auth: {}
",
        auth.describe().join(", ")
    ));
    if sku.ingress.pubsub_audience.is_some() && args.no_pubsub {
        text.push_str(
            "  pub/sub: off (`--no-pubsub`)
",
        );
    }
    if let Some(def) = &sku.marketplace {
        let (procurement_url, token_url) = marketplace_urls(args);
        let tokens = match key_file(args) {
            Some(path) => format!("key file `{}`", path.display()),
            None => format!("`{}`", crate::actuator::webhook::redacted(&token_url)),
        };
        let route = if auth.marketplace_push.is_some() {
            "on"
        } else if auth.insecure && auth.token.is_none() && auth.oidc.is_none() {
            "open to anyone (`--insecure-no-auth`)"
        } else {
            "off (no `--marketplace-audience`)"
        };
        text.push_str(&format!(
            "  marketplace: provider `{}`{}, `/marketplace/pubsub` {route}, procurement api `{}`, tokens from {tokens}\n",
            def.provider_id,
            if def.auto_approve { ", auto-approve" } else { "" },
            crate::actuator::webhook::redacted(&procurement_url),
        ));
    }
    match args.actions {
        ActionsMode::Live => {
            for target in preflight::targets(sku, &env) {
                text.push_str(&format!(
                    "  action {target}
"
                ));
            }
        }
        ActionsMode::Log => text.push_str(
            "  actions: log only (`--actions log`), not checked
",
        ),
    }
    if let Some(publisher) = &publisher {
        text.push_str(&format!(
            "  checkpoints: signed as `{}`, published to {}\n",
            publisher.origin(),
            publisher.sinks().join(", ")
        ));
    }
    text.push_str(&format!(
        "  ledger: {} (not opened)
",
        location.display()
    ));
    Ok(text)
}

impl ServeArgs {
    /// The sizes and bounds its flags give the ledger.
    pub fn open_options(&self) -> crate::store::OpenOptions {
        crate::store::OpenOptions {
            segment_bytes: self.segment_size,
            partition_receipts: self.partition_receipts,
            database_timeout: Duration::from_secs(self.database_timeout),
        }
    }
}

/// The checkpoint publisher `args` ask for.
fn publisher(args: &ServeArgs) -> Result<Option<Arc<Publisher>>, ServeError> {
    args.transparency
        .publisher(std::env::var(crate::transparency::publish::KEY_ENV).ok())
        .map(|p| p.map(Arc::new))
        .map_err(ServeError::Transparency)
}

/// Runs `serve` to completion: exit 0 after a graceful shutdown.
pub fn run(pack: &'static dyn PolicyPack, args: ServeArgs) -> ExitCode {
    init_logging(args.log_format);
    // Memory its limit can count on: no transparent huge pages for this
    // process. The allocator marks its regions for them, and khugepaged
    // collapsing those into 2 MiB pages raised a soak's RSS by a quarter at
    // an unforeseeable minute (docs/decisions.md).
    if let Err(error) = rustix::thread::disable_transparent_huge_pages(true) {
        tracing::debug!(%error, "transparent huge pages stay as the system sets them");
    }
    match run_until(pack, args, terminated()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One structured line (JSON with `--log-format json`) on stderr.
            tracing::error!(error = %error_chain(&error), "serve failed");
            ExitCode::from(error.exit_code())
        }
    }
}

/// Runs the service until `shutdown` resolves, then shuts down gracefully.
pub fn run_until(
    pack: &'static dyn PolicyPack,
    args: ServeArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let sku = pack.sku();
    // Built first: fetching a JWKS URL (before the ledger is touched) needs it.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("governor")
        .build()
        .map_err(io("starting the tokio runtime"))?;
    let auth = runtime
        .block_on(configure(pack, &args, &Environment::from_env()))
        .map_err(ServeError::Preflight)?;
    if auth.insecure {
        tracing::warn!(
            "--insecure-no-auth: `/v1`, `/pubsub/push` and `/marketplace/pubsub` accept anyone"
        );
    }
    if args.no_pubsub {
        tracing::info!("--no-pubsub: `/pubsub/push` refuses every push");
    }
    let location = args.store.location().map_err(ServeError::Store)?;
    let publisher = publisher(&args)?;
    let ledger = location
        .open_with(
            crate::store::Writers::Shared,
            args.open_options(),
            &mut |warning| tracing::warn!("{warning}"),
        )
        .map_err(ServeError::Ledger)?;
    tracing::info!(ledger = %location.display(), "ledger open");
    if publisher.is_some() {
        let tree = ledger.tree().ok_or_else(|| {
            ServeError::Transparency(format!(
                "the ledger `{}` keeps no Merkle tree (its first receipts were archived before it kept one)",
                location.display()
            ))
        })?;
        tree.check_buildable()
            .map_err(|e| ServeError::Transparency(error_chain(&e)))?;
    }
    let published_ledger = Arc::clone(&ledger);
    let final_publisher = publisher.clone();
    let archive = match (&args.retain, &args.archive) {
        (Some(retain), Some(url)) => {
            let archive = crate::archive::Archive::open(url)
                .map_err(|e| ServeError::Store(error_chain(&e)))?;
            tracing::info!(archive = %url, retain = ?retain, "retention on: old segments or partitions are archived, then removed");
            Some((archive, *retain))
        }
        _ => None,
    };
    let dedupe = DedupeOptions {
        window: Duration::from_secs(args.dedupe_window),
        capacity: args.dedupe_capacity,
        max_total: args.dedupe_max_ids,
    };
    let registry = Arc::new(Registry::with_dedupe(pack, Arc::clone(&ledger), dedupe));
    // Replicas sharing a database take overtaken decisions again in the
    // ledger's writer rather than refusing them back to each request.
    registry.attach();
    let stats = registry.recover().map_err(ServeError::Registry)?;
    tracing::info!(
        tenants = stats.tenants,
        records = stats.records,
        from_checkpoint = stats.from_checkpoint,
        diverged = stats.diverged,
        "ledger recovered"
    );
    let serving = Arc::clone(&registry);
    let shutdown_timeout = Duration::from_secs(args.shutdown_timeout);
    // When shutdown began: request drain and action drain share one deadline.
    let began = Arc::new(std::sync::OnceLock::<tokio::time::Instant>::new());
    let deadline = {
        let began = Arc::clone(&began);
        move || {
            let began = began
                .get()
                .copied()
                .unwrap_or_else(tokio::time::Instant::now);
            began + shutdown_timeout
        }
    };
    runtime.block_on(async move {
        let registry = serving;
        let mode = match args.actions {
            ActionsMode::Live => ActuatorMode::Live,
            ActionsMode::Log => ActuatorMode::LogOnly,
        };
        let actuator = Dispatcher::new(
            tokio::runtime::Handle::current(),
            Actuators::from_env().map_err(ServeError::Actuator)?,
            DispatcherOptions {
                mode,
                ..DispatcherOptions::default()
            },
        );
        // Refreshes a JWKS URL's keys until the service stops serving (the
        // Marketplace verifier shares the Pub/Sub one's keys when both exist).
        let jwks_refresher = auth
            .oidc
            .as_ref()
            .or(auth.marketplace_push.as_ref())
            .and_then(|oidc| oidc.spawn_refresher());
        let marketplace = marketplace_client(pack, &args)?;
        if let Some(client) = &marketplace {
            // Logged either way; a missing token costs redeliveries, not the start.
            let _ = client.check_token().await;
        }
        let state = AppState::new(
            Arc::clone(&registry),
            auth,
            Options {
                max_in_flight: args.max_in_flight,
                min_free: args.min_free,
                max_connections: usize::try_from(args.max_connections).unwrap_or(usize::MAX),
                header_read_timeout: Duration::from_secs(args.header_read_timeout),
                shutdown_timeout,
                actuator: Some(actuator.clone()),
                no_pubsub: args.no_pubsub,
                marketplace,
                transparency: publisher.clone(),
                ..Options::default()
            },
        );
        let listener = TcpListener::bind(args.listen)
            .await
            .map_err(io(format!("binding `{}`", args.listen)))?;
        let addr = listener
            .local_addr()
            .map_err(io("reading the bound address"))?;
        tracing::info!(
            %addr,
            sku = sku.id,
            version = sku.version,
            auth = %state.auth.describe().join(","),
            actions = match args.actions {
                ActionsMode::Live => "live",
                ActionsMode::Log => "log",
            },
            "listening"
        );
        let (stop_timers, timers_stopped) = watch::channel(false);
        let timers = {
            let actuator = actuator.clone();
            let registry = Arc::clone(&registry);
            let mut stopped = timers_stopped;
            tokio::spawn(async move {
                actuator
                    .run_timers(registry, async move {
                        let _ = stopped.wait_for(|s| *s).await;
                    })
                    .await;
            })
        };
        let (stop_checkpoints, checkpoints_stopped) = watch::channel(false);
        let checkpoints = (args.checkpoint_every > 0).then(|| {
            tokio::spawn(checkpoint_periodically(
                Arc::clone(&registry),
                args.checkpoint_every,
                args.checkpoint_poll,
                checkpoints_stopped,
            ))
        });
        let verifications = (args.verify_every > 0).then(|| {
            tokio::spawn(verify_periodically(
                state.clone(),
                Duration::from_secs(args.verify_every),
                stop_checkpoints.subscribe(),
            ))
        });
        let publishing = publisher.map(|publisher| {
            tracing::info!(origin = publisher.origin(), sinks = %publisher.sinks().join(", "), "signed checkpoints on");
            tokio::spawn(crate::transparency::publish::publish_periodically(
                publisher,
                published_ledger,
                Duration::from_secs(args.transparency.publish_every),
                args.transparency.publish_receipts,
                args.publish_poll,
                stop_checkpoints.subscribe(),
            ))
        });
        let archive_every = Duration::from_secs(args.archive_every);
        let archiver = match (archive, &location) {
            (Some((archive, retain)), Location::Database(url)) => {
                // Replicas: each tenant's state is in its head row.
                let retention = crate::pg::retention::PgRetention::new(
                    url,
                    archive,
                    retain,
                    crate::pg::retention::Recovery::TenantStates,
                )
                .map_err(|e| ServeError::Store(error_chain(&e)))?;
                Some(
                    crate::pg::retention::spawn(
                        retention,
                        archive_every,
                        stop_checkpoints.subscribe(),
                    )
                    .map_err(io("starting the archiver thread".to_owned()))?,
                )
            }
            (Some((archive, retain)), Location::Dir(_)) => Some(
                crate::archive::spawn(
                    Arc::clone(registry.ledger()),
                    archive,
                    retain,
                    archive_every,
                    stop_checkpoints.subscribe(),
                )
                .map_err(io("starting the archiver thread".to_owned()))?,
            ),
            (None, _) => None,
        };
        let draining = state.clone();
        super::serve(listener, state, async move {
            shutdown.await;
            let _ = began.set(tokio::time::Instant::now());
            // Readiness fails at once; new ingest on open connections gets 503.
            draining.begin_shutdown();
        })
        .await
        .map_err(io("serving"))?;
        tracing::info!("requests drained");
        if let Some(refresher) = jwks_refresher {
            refresher.stop();
        }
        let _ = stop_timers.send(true);
        let _ = timers.await;
        // A checkpoint in progress completes first; the final one follows below.
        let _ = stop_checkpoints.send(true);
        if let Some(checkpoints) = checkpoints {
            let _ = checkpoints.await;
        }
        if let Some(verifications) = verifications {
            let _ = verifications.await;
        }
        if let Some(publishing) = publishing {
            let _ = publishing.await;
        }
        // An archiving round in progress finishes its current step first.
        if let Some(archiver) = archiver {
            let _ = tokio::task::spawn_blocking(move || archiver.join()).await;
        }
        // Whatever is left of the shutdown deadline, at most `--drain-timeout`.
        let left = deadline().saturating_duration_since(tokio::time::Instant::now());
        if let Err(error) = actuator
            .drain(Duration::from_secs(args.drain_timeout).min(left))
            .await
        {
            tracing::warn!(error = %error, "actions still running at shutdown; their results are lost and they time out after restart");
        }
        Ok::<(), ServeError>(())
    })?;
    // Blocking tasks still running (a request's flush on a stalled disk)
    // must not hold the final checkpoint back.
    runtime.shutdown_timeout(Duration::from_secs(1));
    let started = std::time::Instant::now();
    let tenants = match registry.checkpoint() {
        Ok(tenants) => tenants,
        // A checkpoint only saves replay time: a full disk costs the next
        // start a longer replay, not this shutdown its exit status.
        Err(RegistryError::Ledger(error)) if out_of_space(&error) => {
            tracing::warn!(error = %error_chain(&error), "final checkpoint not written: the disk is full; the next start replays from the previous one");
            0
        }
        Err(error) => return Err(ServeError::Registry(error)),
    };
    ledger.flush().map_err(ServeError::Ledger)?;
    if let Some(publisher) = final_publisher {
        // The last receipts' checkpoint; a failure here is the next
        // start's to make up for.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(io("starting the tokio runtime"))?;
        // Bounded: a hung sink (a stalled mount, a silent webhook) must not
        // keep the process from exiting.
        // (The timer is made inside the runtime it needs.)
        let published = runtime.block_on(async {
            tokio::time::timeout(FINAL_PUBLISH_TIMEOUT, publisher.publish(&ledger)).await
        });
        runtime.shutdown_timeout(Duration::from_secs(1));
        match published {
            Ok(Ok(published)) => {
                tracing::info!(size = published.size, "final signed checkpoint published")
            }
            Err(_) => tracing::error!(
                "final signed checkpoint not published within {} s",
                FINAL_PUBLISH_TIMEOUT.as_secs()
            ),
            Ok(Err(error)) => {
                tracing::error!(error = %error_chain(&error), "final signed checkpoint not published")
            }
        }
    }
    tracing::info!(
        tenants,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "checkpoint written; ledger flushed; bye"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_are_due_after_every_n_receipts() {
        assert!(!checkpoint_due(0, 0, 100));
        assert!(!checkpoint_due(99, 0, 100));
        assert!(checkpoint_due(100, 0, 100));
        assert!(!checkpoint_due(199, 100, 100));
        assert!(checkpoint_due(250, 100, 100));
        // 0 turns periodic checkpoints off.
        assert!(!checkpoint_due(1_000_000, 0, 0));
        // A count behind `last` (never expected) is not due.
        assert!(!checkpoint_due(5, 10, 1));
    }

    #[test]
    fn a_segment_size_is_bytes_from_4_kib_to_2_gib() {
        assert_eq!(segment_size("64MiB"), Ok(64 << 20));
        assert_eq!(segment_size("4KiB"), Ok(4096));
        assert_eq!(segment_size("2GiB"), Ok(2 << 30));
        for bad in ["4095B", "3GiB", "0B", "7d", "", "-1MiB", "64"] {
            assert!(segment_size(bad).is_err(), "{bad}");
        }
    }
}
