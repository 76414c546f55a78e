//! The `command` adapter: runs `params.program` with `params.args`.
//!
//! Never through a shell: the program is executed directly and every
//! argument is passed as one literal `argv` entry after substituting
//! `{tenant}`, `{action}`, `{idempotency_key}` and `{sku}` (one pass; a
//! substituted value is never expanded again; other braces stay as written).
//! The child's environment is **cleared**: it gets `PATH` (when the service
//! has one), the variables the action's `params.env` names (an array of
//! variable names, copied from the service's environment when set there; a
//! `GOVERNOR_*` name is refused, those are the service's own secrets) and
//! `GGEN_TENANT`, `GGEN_ACTION`, `GGEN_IDEMPOTENCY_KEY`, `GGEN_SKU` and
//! `GGEN_UNDO` (`true`/`false`). It gets no stdin and its stdout is
//! discarded; the **last** [`STDERR_KEPT`] bytes of its stderr (trimmed, cut
//! on a character boundary, control characters escaped) go into the result's
//! detail, which lands in a permanent receipt.
//!
//! Exit status 0 is ok; any other exit (or death by signal) is retryable; a
//! program that cannot be started, or invalid params, is permanent. The child
//! runs in a process group of its own, and the whole group is killed when
//! the attempt is dropped before the child exited (per-attempt timeout): a
//! program that forked (`jobctl` running `sleep`, a shell script's
//! commands) must not go on acting after its result says it timed out. What
//! a program leaves behind when it exits by itself is its own business.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::process::Stdio;

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use super::{ActionCall, Actuator, BoxFuture, Outcome};

/// Most bytes of the child's stderr that reach the result's detail (after escaping).
pub const STDERR_KEPT: usize = 200;

/// Raw bytes of stderr read into memory: the tail that can fill [`STDERR_KEPT`]
/// (escaping only grows text), plus room to find a character boundary.
const STDERR_READ: usize = STDERR_KEPT + 4;

/// How long stderr is still read after the program exited (a background
/// process it started may hold the pipe open for good).
const STDERR_GRACE: std::time::Duration = std::time::Duration::from_millis(200);

/// Variables a child gets from the service's environment whatever the spec says.
const INHERITED: &[&str] = &["PATH"];

/// Runs programs as actions.
#[derive(Debug, Clone, Copy, Default)]
pub struct CommandActuator;

/// `template` with `{tenant}`, `{action}`, `{idempotency_key}` and `{sku}` taken from `call`, in one pass.
pub fn expand(template: &str, call: &ActionCall) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open..];
        let value = [
            ("{tenant}", call.tenant.as_str()),
            ("{action}", call.action.name),
            ("{idempotency_key}", call.idempotency_key.as_str()),
            ("{sku}", call.sku),
        ]
        .into_iter()
        .find(|(name, _)| after.starts_with(name));
        match value {
            Some((name, value)) => {
                out.push_str(value);
                rest = &after[name.len()..];
            }
            None => {
                out.push('{');
                rest = &after[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The program and expanded arguments of `call`, or why the params are invalid.
pub fn argv(call: &ActionCall) -> Result<(String, Vec<String>), String> {
    let program = match call.params.get("program") {
        Some(Value::String(p)) if !p.is_empty() => p.clone(),
        Some(_) => return Err("`params.program` must be a non-empty string".to_owned()),
        None => return Err("command action needs `params.program`".to_owned()),
    };
    let args = match call.params.get("args") {
        None => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(arg) => Ok(expand(arg, call)),
                _ => Err("`params.args` must be an array of strings".to_owned()),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("`params.args` must be an array of strings".to_owned()),
    };
    Ok((program, args))
}

pub use crate::sku::command_env_names as env_names;

/// The child's inherited variables: `PATH` and `names`, as `lookup` finds them
/// in the service's environment (unset ones are left out).
fn inherited_env(
    names: &[String],
    lookup: impl Fn(&str) -> Option<OsString>,
) -> Vec<(String, OsString)> {
    INHERITED
        .iter()
        .map(|name| (*name).to_owned())
        .chain(names.iter().cloned())
        .filter_map(|name| lookup(&name).map(|value| (name, value)))
        .collect()
}

/// Reads `reader` to its end, keeping only the last [`STDERR_READ`] bytes
/// (the child must never block on a full pipe), and whether any were dropped.
async fn read_tail(mut reader: impl AsyncRead + Unpin) -> (Vec<u8>, bool) {
    let mut kept = VecDeque::with_capacity(STDERR_READ);
    let mut dropped = false;
    let mut buf = [0u8; 4096];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => return (kept.into(), dropped),
            Ok(n) => {
                let chunk = &buf[n.saturating_sub(STDERR_READ)..n];
                let overflow = (kept.len() + chunk.len()).saturating_sub(STDERR_READ);
                dropped |= overflow > 0 || chunk.len() < n;
                kept.drain(..overflow);
                kept.extend(chunk);
            }
        }
    }
}

/// `c` as it may appear in a receipt or a log line: control characters and
/// bidirectional/zero-width formatting characters escaped (`\n`, `\u{1b}`,
/// `\u{202e}`), so that a child can neither forge lines nor hide text.
fn escaped(c: char, into: &mut String) {
    let format =
        matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    if c.is_control() || format {
        let _ = write!(into, "{}", c.escape_default());
    } else {
        into.push(c);
    }
}

/// The end of a child's stderr as it goes into a receipt: trimmed, at most
/// [`STDERR_KEPT`] bytes, cut on a character boundary (invalid UTF-8 shows as
/// `U+FFFD`), control and bidirectional-formatting characters escaped; a
/// leading `…` says the start was cut.
/// `dropped` says bytes before `tail` were already thrown away.
pub fn stderr_tail(tail: &[u8], dropped: bool) -> String {
    // After a drop, leading continuation bytes end a character that was cut.
    let skip = if dropped {
        tail.iter()
            .take(3)
            .take_while(|b| (0x80..0xc0).contains(*b))
            .count()
    } else {
        0
    };
    let text = String::from_utf8_lossy(&tail[skip..]);
    let text = text.trim();
    // Escaped characters from the end, as many as fit in `budget` bytes.
    let fit = |budget: usize| {
        let mut pieces = Vec::new();
        let mut len = 0;
        for c in text.chars().rev() {
            let mut piece = String::new();
            escaped(c, &mut piece);
            if len + piece.len() > budget {
                return (pieces, false);
            }
            len += piece.len();
            pieces.push(piece);
        }
        (pieces, true)
    };
    let mut out = String::new();
    let pieces = match fit(STDERR_KEPT) {
        (pieces, true) if !dropped => pieces,
        _ => {
            out.push('…');
            fit(STDERR_KEPT - '…'.len_utf8()).0
        }
    };
    out.extend(pieces.into_iter().rev());
    out
}

impl CommandActuator {
    async fn run(&self, call: &ActionCall) -> Outcome {
        let (program, args) = match argv(call) {
            Ok(argv) => argv,
            Err(detail) => return Outcome::permanent(detail),
        };
        let names = match env_names(&call.params) {
            Ok(names) => names,
            Err(detail) => return Outcome::permanent(detail),
        };
        let mut command = Command::new(&program);
        command
            .args(&args)
            // Nothing of the service's environment (its tokens above all)
            // reaches the child unless listed.
            .env_clear()
            .envs(inherited_env(&names, |name| std::env::var_os(name)))
            .env("GGEN_TENANT", call.tenant.as_str())
            .env("GGEN_ACTION", call.action.name)
            .env("GGEN_IDEMPOTENCY_KEY", &call.idempotency_key)
            .env("GGEN_SKU", call.sku)
            .env("GGEN_UNDO", if call.undo { "true" } else { "false" })
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // Its own group (id = its pid), so a timeout kills what it forked.
            .process_group(0)
            .kill_on_drop(true);
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => return Outcome::permanent(format!("cannot start `{program}`: {e}")),
        };
        let group = GroupKiller(child.id());
        let stderr = child.stderr.take();
        let read = async {
            match stderr {
                Some(stderr) => read_tail(stderr).await,
                None => (Vec::new(), false),
            }
        };
        // Read stderr while the child runs, but do not wait for its end past
        // the child's exit: a background process the program started keeps
        // the pipe open, and the action's outcome is the program's exit.
        tokio::pin!(read);
        let mut finished = None;
        let status = loop {
            tokio::select! {
                status = child.wait() => break status,
                out = &mut read, if finished.is_none() => finished = Some(out),
            }
        };
        // Exited (and reaped): its group is no longer the attempt's to kill.
        group.disarm();
        let (stderr, dropped) = match finished {
            Some(out) => out,
            None => tokio::time::timeout(STDERR_GRACE, &mut read)
                .await
                .unwrap_or_else(|_elapsed| (Vec::new(), false)),
        };
        let stderr = stderr_tail(&stderr, dropped);
        let with_stderr = |detail: String| {
            if stderr.is_empty() {
                detail
            } else {
                format!("{detail}: {stderr}")
            }
        };
        match status {
            Ok(status) if status.success() => Outcome::Ok {
                detail: format!("`{program}` exited 0"),
            },
            Ok(status) => match status.code() {
                Some(code) => Outcome::transient(with_stderr(format!("`{program}` exited {code}"))),
                None => Outcome::transient(with_stderr(format!("`{program}` killed by a signal"))),
            },
            Err(e) => Outcome::transient(format!("waiting for `{program}` failed: {e}")),
        }
    }
}

/// Kills a child's process group when dropped, unless disarmed once the
/// child exited (its id may then be reused).
struct GroupKiller(Option<u32>);

impl GroupKiller {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for GroupKiller {
    fn drop(&mut self) {
        let group = self
            .0
            .and_then(|id| i32::try_from(id).ok())
            // Never 0 or 1: `kill(-1)` would signal every process.
            .filter(|&id| id > 1)
            .and_then(rustix::process::Pid::from_raw);
        if let Some(group) = group {
            // Already gone (ESRCH) is fine.
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
    }
}

impl Actuator for CommandActuator {
    fn attempt<'a>(&'a self, call: &'a ActionCall, _attempt: u32) -> BoxFuture<'a, Outcome> {
        Box::pin(self.run(call))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Timestamp;
    use crate::sku::{ActionDef, Adapter};
    use crate::tenant::TenantId;

    static ACTION: ActionDef = ActionDef {
        name: "pause_jobs",
        adapter: Adapter::Command,
        undo: None,
        params: r#"{"args":["pause","{tenant}","--key={idempotency_key}","{sku}/{action}","{nope}","{","$(touch /tmp/x)"],"program":"jobctl"}"#,
        timeout_ms: 1000,
        retries: 0,
    };

    fn call_params(params: &str) -> serde_json::Map<String, Value> {
        call(params).params
    }

    fn call(params: &str) -> ActionCall {
        let Value::Object(params) = serde_json::from_str(params).unwrap() else {
            panic!("params must be an object");
        };
        ActionCall {
            sku: "cost_guard",
            tenant: TenantId::new("acme").unwrap(),
            action: &ACTION,
            idempotency_key: "acme:7:pause_jobs".into(),
            undo: false,
            at: Timestamp(0),
            params,
        }
    }

    #[test]
    fn args_are_templated_once_and_otherwise_literal() {
        let (program, args) = argv(&call(ACTION.params)).unwrap();
        assert_eq!(program, "jobctl");
        assert_eq!(
            args,
            [
                "pause",
                "acme",
                "--key=acme:7:pause_jobs",
                "cost_guard/pause_jobs",
                "{nope}",
                "{",
                "$(touch /tmp/x)"
            ]
        );
    }

    #[test]
    fn invalid_params_are_explained() {
        for (params, expected) in [
            (r#"{}"#, "command action needs `params.program`"),
            (
                r#"{"program":""}"#,
                "`params.program` must be a non-empty string",
            ),
            (
                r#"{"program":"x","args":"a b"}"#,
                "`params.args` must be an array of strings",
            ),
            (
                r#"{"program":"x","args":[1]}"#,
                "`params.args` must be an array of strings",
            ),
        ] {
            assert_eq!(argv(&call(params)).unwrap_err(), expected, "{params}");
        }
    }

    #[test]
    fn substituted_values_are_not_expanded_again() {
        let mut c = call(r#"{"program":"x"}"#);
        c.idempotency_key = "{tenant}".into();
        assert_eq!(expand("{idempotency_key}", &c), "{tenant}");
    }

    #[test]
    fn env_names_are_checked_and_governor_secrets_refused() {
        let names = env_names(&call_params(
            r#"{"program":"x","env":["JOBCTL_TOKEN","HOME"]}"#,
        ));
        assert_eq!(names.unwrap(), ["JOBCTL_TOKEN", "HOME"]);
        assert!(
            env_names(&call_params(r#"{"program":"x"}"#))
                .unwrap()
                .is_empty()
        );
        for params in [
            r#"{"program":"x","env":"HOME"}"#,
            r#"{"program":"x","env":[1]}"#,
            r#"{"program":"x","env":[""]}"#,
            r#"{"program":"x","env":["A=B"]}"#,
        ] {
            assert_eq!(
                env_names(&call_params(params)).unwrap_err(),
                "`params.env` must be an array of variable names",
                "{params}"
            );
        }
        let error = env_names(&call_params(
            r#"{"program":"x","env":["GOVERNOR_AUTH_TOKEN"]}"#,
        ));
        assert!(
            error.unwrap_err().contains("`GOVERNOR_AUTH_TOKEN`"),
            "a listed secret must be refused"
        );
    }

    #[test]
    fn only_path_and_listed_variables_are_inherited() {
        let parent = |name: &str| match name {
            "PATH" => Some(OsString::from("/usr/bin")),
            "JOBCTL_TOKEN" => Some(OsString::from("t")),
            "GOVERNOR_AUTH_TOKEN" => Some(OsString::from("secret")),
            _ => None,
        };
        let names = ["JOBCTL_TOKEN".to_owned(), "UNSET".to_owned()];
        assert_eq!(
            inherited_env(&names, parent),
            [
                ("PATH".to_owned(), OsString::from("/usr/bin")),
                ("JOBCTL_TOKEN".to_owned(), OsString::from("t")),
            ]
        );
    }

    #[test]
    fn short_stderr_is_kept_whole_but_escaped() {
        assert_eq!(stderr_tail(b"  locked\n", false), "locked");
        assert_eq!(
            stderr_tail(b"line one\nfake: line\x1b[2J\xe2\x80\xae", false),
            "line one\\nfake: line\\u{1b}[2J\\u{202e}"
        );
        assert_eq!(stderr_tail(b"bad \xff byte", false), "bad \u{fffd} byte");
        assert_eq!(stderr_tail(b"", false), "");
    }

    #[test]
    fn long_stderr_keeps_its_last_bytes_on_a_char_boundary() {
        // 2-byte characters after a 1-byte one: any cut lands inside one.
        let mut text = String::from("x");
        text.push_str(&"é".repeat(300));
        text.push_str("the end");
        let tail = stderr_tail(text.as_bytes(), false);
        assert!(tail.len() <= STDERR_KEPT, "{}", tail.len());
        assert!(tail.len() >= STDERR_KEPT - 4, "{}", tail.len());
        assert!(
            tail.starts_with("…é") && tail.ends_with("éthe end"),
            "{tail}"
        );

        // A tail whose first bytes end a character cut off by the reader.
        let bytes = "é".repeat(10).into_bytes();
        assert_eq!(
            stderr_tail(&bytes[1..], true),
            format!("…{}", "é".repeat(9))
        );
        assert_eq!(
            stderr_tail(&bytes[1..], false),
            format!("\u{fffd}{}", "é".repeat(9))
        );

        // Escapes are never split: `\u{1b}` is kept whole or not at all.
        let escapes = "\x1b".repeat(100);
        let tail = stderr_tail(escapes.as_bytes(), false);
        assert_eq!(tail, format!("…{}", "\\u{1b}".repeat(32)));
    }
}
