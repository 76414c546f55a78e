//! The `log` adapter: records what it would do and succeeds.
//!
//! The default for local runs and for `replay` without `--live-actions`: no
//! side effect leaves the process.

use super::{ActionCall, Actuator, BoxFuture, Outcome};

/// Logs each action through `tracing` (target `ggen_runtime::actuator`) and succeeds.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogActuator;

impl Actuator for LogActuator {
    fn attempt<'a>(&'a self, call: &'a ActionCall, attempt: u32) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            ::tracing::info!(
                target: "ggen_runtime::actuator",
                sku = call.sku,
                tenant = %call.tenant,
                action = call.action.name,
                adapter = %call.action.adapter,
                key = %call.idempotency_key,
                undo = call.undo,
                at = %call.at,
                attempt,
                "log adapter: would run action"
            );
            Outcome::Ok {
                detail: format!("log adapter: `{}` recorded", call.action.name),
            }
        })
    }
}
