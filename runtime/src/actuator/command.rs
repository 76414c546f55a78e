//! The `command` adapter: runs `params.program` with `params.args`.
//!
//! Never through a shell: the program is executed directly and every
//! argument is passed as one literal `argv` entry after substituting
//! `{tenant}`, `{action}`, `{idempotency_key}` and `{sku}` (one pass; a
//! substituted value is never expanded again; other braces stay as written).
//! The child gets `GGEN_TENANT`, `GGEN_ACTION`, `GGEN_IDEMPOTENCY_KEY`,
//! `GGEN_SKU` and `GGEN_UNDO` (`true`/`false`) in its environment, no stdin,
//! and its stdout discarded; the first bytes of its stderr go into the
//! result's detail.
//!
//! Exit status 0 is ok; any other exit (or death by signal) is retryable; a
//! program that cannot be started, or invalid params, is permanent. The child
//! is killed when the attempt is dropped (per-attempt timeout).

use std::process::Stdio;

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use super::{ActionCall, Actuator, BoxFuture, Outcome};

/// Bytes of the child's stderr kept for the result's detail.
const STDERR_KEPT: usize = 512;

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

/// Reads `reader` to its end, keeping only the first [`STDERR_KEPT`] bytes
/// (the child must never block on a full pipe).
async fn read_head(mut reader: impl AsyncRead + Unpin) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                let room = STDERR_KEPT.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}

impl CommandActuator {
    async fn run(&self, call: &ActionCall) -> Outcome {
        let (program, args) = match argv(call) {
            Ok(argv) => argv,
            Err(detail) => return Outcome::permanent(detail),
        };
        let mut command = Command::new(&program);
        command
            .args(&args)
            .env("GGEN_TENANT", call.tenant.as_str())
            .env("GGEN_ACTION", call.action.name)
            .env("GGEN_IDEMPOTENCY_KEY", &call.idempotency_key)
            .env("GGEN_SKU", call.sku)
            .env("GGEN_UNDO", if call.undo { "true" } else { "false" })
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => return Outcome::permanent(format!("cannot start `{program}`: {e}")),
        };
        let stderr = child.stderr.take();
        let read = async {
            match stderr {
                Some(stderr) => read_head(stderr).await,
                None => Vec::new(),
            }
        };
        let (status, stderr) = tokio::join!(child.wait(), read);
        let stderr = String::from_utf8_lossy(&stderr);
        let stderr = stderr.trim();
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
}
