//! What `serve` checks before it touches the ledger, so that a service that
//! cannot work as configured refuses to start, naming the fix, instead of
//! failing its first action or push hours later.
//!
//! Each check returns every [`Problem`] it finds (never only the first), so
//! `serve --check` can list them all at once:
//! - [`actions`]: a live `webhook` action needs a URL (`params.url`, else
//!   `GOVERNOR_WEBHOOK_URL`) that is an `http(s)://` URL; a live `command`
//!   action needs valid params and a program that exists and is executable
//!   (found on `PATH` when it names no directory, as the actuator runs it);
//! - [`pubsub`]: a spec naming a Pub/Sub audience needs a JWKS and the
//!   service accounts allowed to push, unless the operator says this
//!   instance takes no pushes (`--no-pubsub`) or runs `--insecure-no-auth`.
//!
//! The checks read nothing themselves: what they need of the process
//! environment comes in an [`Environment`], so tests can vary it.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::actuator::webhook::{URL_ENV, redacted};
use crate::ingress::auth::{Auth, ENV_OIDC_EMAIL, ENV_OIDC_JWKS};
use crate::sku::{ActionDef, Adapter, Sku};

/// One reason `serve` cannot work as configured, with how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// What it concerns: ``action `throttle` ``, `pub/sub`, `auth`, `ledger`.
    pub subject: String,
    /// What is wrong, then the fix.
    pub message: String,
}

impl Problem {
    /// A problem of `subject`.
    pub fn new(subject: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            subject: subject.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.subject, self.message)
    }
}

/// Every problem the checks found (at least one), in the order checked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.0.len();
        let plural = if count == 1 { "" } else { "s" };
        write!(f, "{count} configuration problem{plural}")?;
        for (i, problem) in self.0.iter().enumerate() {
            write!(f, "{} {problem}", if i == 0 { ":" } else { ";" })?;
        }
        Ok(())
    }
}

/// What the checks need of the process environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Environment {
    /// `GOVERNOR_WEBHOOK_URL` (an empty value counts as unset, as the
    /// webhook adapter reads it).
    pub webhook_url: Option<String>,
    /// `PATH`, which a command's program is looked up on.
    pub path: Option<OsString>,
}

impl Environment {
    /// This process's environment.
    pub fn from_env() -> Environment {
        Environment {
            webhook_url: std::env::var(URL_ENV).ok().filter(|v| !v.is_empty()),
            path: std::env::var_os("PATH"),
        }
    }
}

/// The subject of `action`'s problems.
fn subject(action: &ActionDef) -> String {
    format!("action `{}`", action.name)
}

/// The problems of `sku`'s actions when they run live (webhooks and
/// commands; `log` actions cannot fail to start).
pub fn actions(sku: &Sku, env: &Environment) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut env_url_checked = false;
    for action in sku.actions {
        if action.adapter == Adapter::Log {
            continue;
        }
        let params = match serde_json::from_str(action.params) {
            Ok(Value::Object(params)) => params,
            _ => {
                problems.push(Problem::new(
                    subject(action),
                    "`params` is not a json object: fix the spec",
                ));
                continue;
            }
        };
        match action.adapter {
            Adapter::Log => {}
            Adapter::Webhook => webhook(action, &params, env, &mut env_url_checked, &mut problems),
            Adapter::Command => problems.extend(command(action, &params, env)),
        }
    }
    problems
}

/// Why `url` cannot be a webhook target, if it cannot.
fn not_http(url: &str) -> Option<String> {
    match reqwest::Url::parse(url) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.has_host() => None,
        Ok(_) => Some(format!("`{}` is not an http(s) url", redacted(url))),
        Err(e) => Some(format!("`{}` is not a url ({e})", redacted(url))),
    }
}

/// The problems of one webhook action; the environment's URL is reported
/// once however many actions rely on it.
fn webhook(
    action: &ActionDef,
    params: &Map<String, Value>,
    env: &Environment,
    env_url_checked: &mut bool,
    problems: &mut Vec<Problem>,
) {
    match (params.get("url"), &env.webhook_url) {
        (Some(Value::String(url)), _) => {
            if let Some(why) = not_http(url) {
                problems.push(Problem::new(
                    subject(action),
                    format!("`params.url` {why}: fix the spec"),
                ));
            }
        }
        (Some(_), _) => problems.push(Problem::new(
            subject(action),
            "`params.url` must be a string: fix the spec",
        )),
        (None, None) => problems.push(Problem::new(
            subject(action),
            format!(
                "a webhook with no `params.url` and `{URL_ENV}` unset has nowhere to go: set `{URL_ENV}`, add `params.url` to the action in the spec, or run with `--actions log`"
            ),
        )),
        (None, Some(url)) => {
            if !std::mem::replace(env_url_checked, true)
                && let Some(why) = not_http(url)
            {
                problems.push(Problem::new(
                    URL_ENV,
                    format!("{why}: set it to the `https://` url webhooks go to"),
                ));
            }
        }
    }
}

/// The problems of one command action: its params, then its program.
fn command(action: &ActionDef, params: &Map<String, Value>, env: &Environment) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut problem = |message: String| problems.push(Problem::new(subject(action), message));
    let args_ok = match params.get("args") {
        None => true,
        Some(Value::Array(items)) => items.iter().all(Value::is_string),
        Some(_) => false,
    };
    if !args_ok {
        problem("`params.args` must be an array of strings: fix the spec".to_owned());
    }
    if let Err(why) = crate::sku::command_env_names(params) {
        problem(format!("{why}: fix the spec"));
    }
    match params.get("program") {
        Some(Value::String(program)) if !program.is_empty() => {
            if let Err(why) = find_program(program, env.path.as_deref()) {
                problem(why);
            }
        }
        _ => problem("`params.program` must be a non-empty string: fix the spec".to_owned()),
    }
    problems
}

/// Why a path cannot be run as a program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unusable {
    /// Nothing there (or it cannot be looked at).
    Missing,
    /// A directory or another non-file.
    NotFile,
    /// A file without any execute permission.
    NotExecutable,
}

impl Unusable {
    fn as_str(self) -> &'static str {
        match self {
            Unusable::Missing => "does not exist",
            Unusable::NotFile => "is not a file",
            Unusable::NotExecutable => "is not executable",
        }
    }
}

/// Whether `path` is a file someone may execute; why not otherwise.
fn executable(path: &Path) -> Result<(), Unusable> {
    // Metadata only: nothing is opened, run or changed.
    match std::fs::metadata(path) {
        Err(_) => Err(Unusable::Missing),
        Ok(meta) if !meta.is_file() => Err(Unusable::NotFile),
        Ok(meta) if meta.permissions().mode() & 0o111 == 0 => Err(Unusable::NotExecutable),
        Ok(_) => Ok(()),
    }
}

/// Where the actuator would find `program`: as given when it names a
/// directory, else the first executable file of that name on `path` (an
/// empty entry is the working directory); the problem otherwise.
pub fn find_program(program: &str, path: Option<&OsStr>) -> Result<PathBuf, String> {
    if program.contains('/') {
        let given = PathBuf::from(program);
        return executable(&given).map(|()| given).map_err(|why| {
            format!(
                "program `{program}` {}: install it there, or fix `params.program` in the spec",
                why.as_str()
            )
        });
    }
    let Some(path) = path.filter(|p| !p.is_empty()) else {
        return Err(format!(
            "program `{program}` cannot be found: `PATH` is unset; set `PATH`, or give `params.program` as an absolute path in the spec"
        ));
    };
    let mut not_executable = None;
    for dir in std::env::split_paths(path) {
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        let candidate = dir.join(program);
        match executable(&candidate) {
            Ok(()) => return Ok(candidate),
            Err(Unusable::NotExecutable) => {
                not_executable.get_or_insert(candidate);
            }
            Err(Unusable::Missing | Unusable::NotFile) => {}
        }
    }
    let shown = path.to_string_lossy();
    Err(match not_executable {
        Some(found) => format!(
            "program `{program}` at `{}` is not executable (`PATH` is `{shown}`): make it executable (`chmod +x`)",
            found.display()
        ),
        None => format!(
            "program `{program}` is not found on `PATH` (`{shown}`): install it, add its directory to `PATH`, or give its absolute path as `params.program` in the spec"
        ),
    })
}

/// Where each live action of `sku` goes, one line each (`serve --check`
/// prints them): a webhook's target as `scheme://host[:port]`, a command's
/// program as found. Call once [`actions`] found no problem.
pub fn targets(sku: &Sku, env: &Environment) -> Vec<String> {
    sku.actions
        .iter()
        .map(|action| {
            let params: Map<String, Value> =
                serde_json::from_str(action.params).unwrap_or_default();
            let target = match action.adapter {
                Adapter::Log => "log".to_owned(),
                Adapter::Webhook => {
                    let url = match params.get("url") {
                        Some(Value::String(url)) => Some(url.as_str()),
                        _ => env.webhook_url.as_deref(),
                    };
                    format!("webhook `{}`", url.map(redacted).unwrap_or_default())
                }
                Adapter::Command => {
                    let program = params.get("program").and_then(Value::as_str);
                    let found = program.and_then(|p| find_program(p, env.path.as_deref()).ok());
                    format!(
                        "command `{}`",
                        found.map(|p| p.display().to_string()).unwrap_or_default()
                    )
                }
            };
            format!("{}: {target}", action.name)
        })
        .collect()
}

/// The problem of a spec that names a Pub/Sub audience `auth` cannot verify
/// pushes for: without a JWKS, `/pubsub/push` would refuse every push.
/// None when `no_pubsub` says this instance takes no pushes, or when
/// `--insecure-no-auth` opened the route.
pub fn pubsub(sku: &Sku, auth: &Auth, no_pubsub: bool) -> Option<Problem> {
    let audience = sku.ingress.pubsub_audience?;
    let open = auth.insecure && auth.token.is_none();
    if no_pubsub || auth.oidc.is_some() || open {
        return None;
    }
    Some(Problem::new(
        "pub/sub",
        format!(
            "the spec sets pub/sub audience `{audience}`, so pushes need a google-signed oidc token, but no jwks is configured: pass `--jwks FILE|URL` (or set `{ENV_OIDC_JWKS}`) and `--oidc-email EMAIL` (or set `{ENV_OIDC_EMAIL}`), or `--no-pubsub` if this service takes no pushes"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_list_every_one_on_one_line() {
        let problems = Problems(vec![
            Problem::new("action `a`", "x"),
            Problem::new("pub/sub", "y"),
        ]);
        assert_eq!(
            problems.to_string(),
            "2 configuration problems: action `a`: x; pub/sub: y"
        );
        let one = Problems(vec![Problem::new("auth", "z")]);
        assert_eq!(one.to_string(), "1 configuration problem: auth: z");
    }

    #[test]
    fn webhook_targets_must_be_http_urls() {
        assert_eq!(not_http("https://hooks.example.com/x"), None);
        assert_eq!(not_http("http://127.0.0.1:9/x"), None);
        for bad in [
            "ftp://example.com/x",
            "hooks.example.com",
            "mailto:a@b",
            "http://",
        ] {
            assert!(not_http(bad).is_some(), "{bad}");
        }
        // The reason never shows a credential the url carries.
        let why = not_http("ftp://user:s3cret@example.com/s3cret").unwrap();
        assert!(!why.contains("s3cret"), "{why}");
    }
}
