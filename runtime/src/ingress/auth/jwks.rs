//! Where Pub/Sub OIDC keys come from ([`JwksSource`]: a file or a URL),
//! fetching a URL's JWK set, and the background task that keeps it fresh
//! ([`JwksRefresher`]): on `Cache-Control: max-age`, early (rate-limited)
//! when a token names an unknown `kid`, keeping the previous keys on failure.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use axum::http::HeaderMap;
use axum::http::header::{AGE, CACHE_CONTROL};
use jsonwebtoken::DecodingKey;
use jsonwebtoken::jwk::JwkSet;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::AuthError;
use crate::report::error_chain;

/// Timeout of one JWKS fetch (connect, headers and body).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// The shortest interval between two scheduled JWKS refreshes.
pub const MIN_REFRESH: Duration = Duration::from_secs(60);
/// The longest interval between two scheduled JWKS refreshes.
pub const MAX_REFRESH: Duration = Duration::from_secs(24 * 60 * 60);
/// The refresh interval when the response has no usable `Cache-Control: max-age`.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(60 * 60);
/// The shortest interval between two refreshes forced by unknown `kid`s.
pub const MIN_FORCED_REFRESH: Duration = Duration::from_secs(30);
/// When a failed refresh is retried (the previous keys stay in use meanwhile).
pub const RETRY_REFRESH: Duration = MIN_REFRESH;

/// Where the keys that sign Pub/Sub OIDC tokens come from (`--jwks`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    /// A JWKS file, read once at startup.
    File(PathBuf),
    /// A JWKS URL, fetched at startup and refreshed while serving.
    Url(reqwest::Url),
}

impl JwksSource {
    /// A value of `--jwks` or `GOVERNOR_OIDC_JWKS`: a URL when it starts with
    /// `https://` or `http://` (any case), else a file path. A plain
    /// `http://` URL is refused unless its host is loopback (`127.0.0.0/8`,
    /// `::1`, `localhost`).
    pub fn parse(text: &str) -> Result<JwksSource, AuthError> {
        let is_url = ["https://", "http://"].iter().any(|scheme| {
            text.get(..scheme.len())
                .is_some_and(|prefix| prefix.eq_ignore_ascii_case(scheme))
        });
        if !is_url {
            return Ok(JwksSource::File(PathBuf::from(text)));
        }
        let url = reqwest::Url::parse(text).map_err(|source| AuthError::JwksUrl {
            url: text.to_owned(),
            source: Box::new(source),
        })?;
        check_url(&url)?;
        Ok(JwksSource::Url(url))
    }

    /// Like [`JwksSource::parse`]; a value that is not UTF-8 is a file path.
    pub fn from_os(value: OsString) -> Result<JwksSource, AuthError> {
        match value.into_string() {
            Ok(text) => JwksSource::parse(&text),
            Err(path) => Ok(JwksSource::File(PathBuf::from(path))),
        }
    }
}

impl std::str::FromStr for JwksSource {
    type Err = AuthError;

    fn from_str(text: &str) -> Result<JwksSource, AuthError> {
        JwksSource::parse(text)
    }
}

impl std::fmt::Display for JwksSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JwksSource::File(path) => write!(f, "{}", path.display()),
            JwksSource::Url(url) => write!(f, "{url}"),
        }
    }
}

/// Whether `url` may serve keys: `https://`, or plain `http://` to a
/// loopback host (`127.0.0.0/8`, `::1`, `localhost`; for tests and local
/// sidecars). Keys fetched in the clear from anywhere else could be swapped
/// by anyone on the path, and with them every token forged.
pub(crate) fn check_url(url: &reqwest::Url) -> Result<(), AuthError> {
    if crate::actuator::webhook::secure_url(url, &[]) {
        Ok(())
    } else {
        Err(AuthError::InsecureJwksUrl {
            url: url.to_string(),
        })
    }
}

/// The `(kid, key)` pairs of one JWK set.
pub(super) type Keys = Vec<(Option<String>, DecodingKey)>;

/// Decodes every key of `jwks`; an unusable key is named by its `kid` (or index).
pub(super) fn decode_keys(jwks: &JwkSet) -> Result<Keys, (String, jsonwebtoken::errors::Error)> {
    jwks.keys
        .iter()
        .enumerate()
        .map(|(index, jwk)| {
            let kid = jwk.common.key_id.clone();
            DecodingKey::from_jwk(jwk)
                .map(|key| (kid.clone(), key))
                .map_err(|source| (kid.unwrap_or_else(|| index.to_string()), source))
        })
        .collect()
}

/// A JWKS URL and what its refresher shares with the verifier.
#[derive(Debug)]
pub(super) struct Remote {
    pub(super) url: reqwest::Url,
    client: reqwest::Client,
    /// Notified by a token whose `kid` is not in the current set.
    pub(super) wake: Notify,
    /// When the startup fetch said to refresh.
    first_refresh: Duration,
    /// Refresh attempts completed so far (successful or not; startup excluded).
    attempts: AtomicU64,
}

impl Remote {
    /// Fetches the JWK set at `url` (an error names the URL): the keys, and
    /// the state the refresher needs to keep them fresh.
    pub(super) async fn connect(url: &reqwest::Url) -> Result<(Remote, Keys), AuthError> {
        // reqwest is built without a rustls provider (nothing needs aws-lc-rs);
        // this fails only if one is installed already, and that one is used.
        let _ = rustls::crypto::ring::default_provider().install_default();
        check_url(url)?;
        // A redirect must not lead somewhere `check_url` would refuse.
        let redirects = reqwest::redirect::Policy::custom(|attempt| {
            if attempt.previous().len() > 5 {
                attempt.error("too many redirects")
            } else if check_url(attempt.url()).is_err() {
                attempt.error("redirect to a url that is not `https://`")
            } else {
                attempt.follow()
            }
        });
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .redirect(redirects)
            .user_agent(concat!("ggen-runtime/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(AuthError::Client)?;
        let (keys, refresh) = fetch(&client, url).await?;
        tracing::info!(
            %url,
            keys = keys.len(),
            refresh_in_s = refresh.as_secs(),
            "jwks fetched"
        );
        let remote = Remote {
            url: url.clone(),
            client,
            wake: Notify::new(),
            first_refresh: refresh,
            attempts: AtomicU64::new(0),
        };
        Ok((remote, keys))
    }

    /// Starts refreshing `keys` from this URL on the current tokio runtime.
    pub(super) fn spawn(self: Arc<Remote>, keys: Arc<RwLock<Arc<Keys>>>) -> JwksRefresher {
        JwksRefresher(tokio::spawn(refresh_periodically(self, keys)))
    }

    /// Refresh attempts completed so far.
    pub(super) fn attempts(&self) -> u64 {
        self.attempts.load(Ordering::Acquire)
    }
}

/// The background task refreshing a JWKS URL's keys; aborted when stopped or dropped.
#[derive(Debug)]
pub struct JwksRefresher(JoinHandle<()>);

impl JwksRefresher {
    /// Stops the refresher (a fetch in progress is abandoned; the keys stay).
    pub fn stop(self) {
        self.0.abort();
    }
}

impl Drop for JwksRefresher {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// GETs the JWK set at `url`: its keys and when to refresh them.
async fn fetch(
    client: &reqwest::Client,
    url: &reqwest::Url,
) -> Result<(Keys, Duration), AuthError> {
    let failed = |source| AuthError::FetchJwks {
        url: url.clone(),
        source,
    };
    let response = client
        .get(url.clone())
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(failed)?;
    let refresh = refresh_interval(response.headers());
    let body = response.bytes().await.map_err(failed)?;
    let jwks: JwkSet =
        serde_json::from_slice(&body).map_err(|source| AuthError::ParseRemoteJwks {
            url: url.clone(),
            source,
        })?;
    // An empty set would refuse every token: keep the previous keys instead.
    if jwks.keys.is_empty() {
        return Err(AuthError::EmptyJwks { url: url.clone() });
    }
    let keys = decode_keys(&jwks).map_err(|(kid, source)| AuthError::BadRemoteKey {
        url: url.clone(),
        kid,
        source,
    })?;
    Ok((keys, refresh))
}

/// How long a fetched JWK set stays fresh: its `Cache-Control: max-age`
/// less its `Age`, clamped to [[`MIN_REFRESH`], [`MAX_REFRESH`]];
/// [`DEFAULT_REFRESH`] without a valid `max-age`.
fn refresh_interval(headers: &HeaderMap) -> Duration {
    let max_age = headers
        .get_all(CACHE_CONTROL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .find_map(|directive| {
            let (name, seconds) = directive.split_once('=')?;
            if !name.trim().eq_ignore_ascii_case("max-age") {
                return None;
            }
            seconds.trim().trim_matches('"').parse::<u64>().ok()
        });
    let Some(max_age) = max_age else {
        return DEFAULT_REFRESH;
    };
    let age = headers
        .get(AGE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok())
        .unwrap_or(0);
    Duration::from_secs(max_age.saturating_sub(age)).clamp(MIN_REFRESH, MAX_REFRESH)
}

/// When a refresh woken by an unknown `kid` at `now` may run: at once, unless
/// the previous forced one ran less than [`MIN_FORCED_REFRESH`] before; never
/// later than the scheduled refresh at `due`.
fn forced_refresh_at(
    last_forced: Option<tokio::time::Instant>,
    now: tokio::time::Instant,
    due: tokio::time::Instant,
) -> tokio::time::Instant {
    last_forced
        .map_or(now, |last| (last + MIN_FORCED_REFRESH).max(now))
        .min(due)
}

/// Refetches `remote`'s keys when they go stale or an unknown `kid` wakes it,
/// and swaps them into `keys`; a failed fetch keeps the previous keys.
async fn refresh_periodically(remote: Arc<Remote>, keys: Arc<RwLock<Arc<Keys>>>) {
    let mut wait = remote.first_refresh;
    let mut last_forced = None;
    loop {
        let due = tokio::time::Instant::now() + wait;
        let forced = tokio::select! {
            () = tokio::time::sleep_until(due) => false,
            () = remote.wake.notified() => true,
        };
        if forced {
            let now = tokio::time::Instant::now();
            tokio::time::sleep_until(forced_refresh_at(last_forced, now, due)).await;
            last_forced = Some(tokio::time::Instant::now());
        }
        wait = match fetch(&remote.client, &remote.url).await {
            Ok((fresh, refresh)) => {
                tracing::info!(
                    url = %remote.url,
                    keys = fresh.len(),
                    forced,
                    refresh_in_s = refresh.as_secs(),
                    "jwks refreshed"
                );
                *keys.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(fresh);
                refresh
            }
            Err(error) => {
                tracing::warn!(
                    error = %error_chain(&error),
                    retry_in_s = RETRY_REFRESH.as_secs(),
                    "jwks refresh failed; keeping the previous keys"
                );
                RETRY_REFRESH
            }
        };
        remote.attempts.fetch_add(1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, HeaderValue::from_str(v).unwrap());
        }
        map
    }

    #[test]
    fn refresh_follows_max_age_clamped_to_a_minute_and_a_day() {
        let interval = |pairs: &[(&'static str, &str)]| refresh_interval(&headers(pairs));
        let secs = Duration::from_secs;
        // Google's certs endpoint.
        let google = "public, max-age=21555, must-revalidate, no-transform";
        assert_eq!(interval(&[("cache-control", google)]), secs(21555));
        assert_eq!(interval(&[("cache-control", "MAX-AGE = 600")]), secs(600));
        assert_eq!(interval(&[("cache-control", "max-age=\"600\"")]), secs(600));
        // Clamped to [60 s, 24 h].
        assert_eq!(interval(&[("cache-control", "max-age=0")]), MIN_REFRESH);
        assert_eq!(interval(&[("cache-control", "max-age=59")]), MIN_REFRESH);
        assert_eq!(interval(&[("cache-control", "max-age=86401")]), MAX_REFRESH);
        let huge = "max-age=99999999999999999999";
        assert_eq!(interval(&[("cache-control", huge)]), DEFAULT_REFRESH);
        // What is left of the freshness after `Age`.
        let aged = [("cache-control", "max-age=3600"), ("age", "600")];
        assert_eq!(interval(&aged), secs(3000));
        let stale = [("cache-control", "max-age=3600"), ("age", "7200")];
        assert_eq!(interval(&stale), MIN_REFRESH);
        // No usable max-age: one hour.
        assert_eq!(interval(&[]), DEFAULT_REFRESH);
        assert_eq!(interval(&[("cache-control", "no-cache")]), DEFAULT_REFRESH);
        assert_eq!(
            interval(&[("cache-control", "s-maxage=600")]),
            DEFAULT_REFRESH
        );
        assert_eq!(
            interval(&[("cache-control", "max-age=soon")]),
            DEFAULT_REFRESH
        );
        assert_eq!(
            interval(&[("cache-control", "max-age=-5")]),
            DEFAULT_REFRESH
        );
    }

    #[test]
    fn forced_refreshes_run_at_most_once_per_30_seconds() {
        let now = tokio::time::Instant::now();
        let due = now + DEFAULT_REFRESH;
        // The first forced refresh runs at once.
        assert_eq!(forced_refresh_at(None, now, due), now);
        // Another within 30 s waits for the 30 s to pass...
        let last = now - Duration::from_secs(10);
        assert_eq!(
            forced_refresh_at(Some(last), now, due),
            now + Duration::from_secs(20)
        );
        // ...unless the scheduled refresh comes first.
        let soon = now + Duration::from_secs(5);
        assert_eq!(forced_refresh_at(Some(last), now, soon), soon);
        // After 30 s, at once again.
        let long_ago = now - MIN_FORCED_REFRESH;
        assert_eq!(forced_refresh_at(Some(long_ago), now, due), now);
    }

    #[test]
    fn jwks_sources_starting_with_a_scheme_are_urls() {
        let url = |text: &str| match JwksSource::parse(text) {
            Ok(JwksSource::Url(url)) => url.to_string(),
            other => panic!("{text}: {other:?}"),
        };
        let google = "https://www.googleapis.com/oauth2/v3/certs";
        assert_eq!(url(google), google);
        assert_eq!(url("Http://127.0.0.1:9/k"), "http://127.0.0.1:9/k");
        // Plain http only to loopback hosts.
        for loopback in [
            "http://127.0.0.1:9/k",
            "http://127.8.9.10/k",
            "http://[::1]:9/k",
            "http://localhost:9/k",
            "http://LOCALHOST/k",
        ] {
            assert!(url(loopback).starts_with("http://"), "{loopback}");
        }
        for remote in [
            "http://www.googleapis.com/oauth2/v3/certs",
            "http://10.0.0.1/k",
            "http://[::2]/k",
            "http://localhost.evil.example/k",
            "http://128.0.0.1/k",
        ] {
            let error = JwksSource::parse(remote).unwrap_err();
            assert!(
                matches!(error, AuthError::InsecureJwksUrl { .. }),
                "{remote}: {error:?}"
            );
            assert!(error.to_string().contains("https://"), "{error}");
        }
        for path in ["jwks.json", "./https/jwks.json", "ftp://host/jwks", ""] {
            assert_eq!(
                JwksSource::parse(path).unwrap(),
                JwksSource::File(PathBuf::from(path))
            );
        }
        let error = JwksSource::parse("https://exa mple.com/").unwrap_err();
        assert!(
            error.to_string().contains("`https://exa mple.com/`"),
            "{error}"
        );
    }
}
