//! Replay (`ggen_runtime_core::replay`, re-exported), plus replay with live
//! actions: the same lines through the same registry, with each line's
//! dispatches run by the actuator.

use std::io::BufRead;
use std::sync::Arc;
use std::time::Duration;

pub use ggen_runtime_core::replay::*;

#[cfg(doc)]
use crate::actuator::Clock;
use crate::actuator::{ActuatorError, Dispatcher};
use crate::clock::Timestamp;
use crate::registry::{Applied, Registry};

/// Like [`run`], but the actions really run (`replay --live-actions`).
///
/// Each line's dispatches go through `dispatcher` (its adapters, retries and
/// timeouts) and the replay waits for them, and for what their results
/// dispatch in turn, at most `wait` per line, before reading the next line.
/// The dispatcher's clock should be a [`Clock::Manual`]: the replay moves it
/// to each line's time, so results are applied at the time of the line that
/// caused them, as in the `log` replay. Actions still running at the end
/// are counted in [`Summary::unsettled`].
pub async fn run_live(
    registry: &Arc<Registry>,
    input: impl BufRead,
    dispatcher: &Dispatcher,
    wait: Duration,
) -> Result<Summary, ReplayError> {
    let mut replay = Replay::default();
    let mut spawn = |_: &Registry, applied: Applied, at: Timestamp| {
        dispatcher.clock().advance_to(at);
        dispatcher.spawn_when_durable(registry, applied.dispatches, applied.ticket);
        Ok(())
    };
    let mut lines = Lines::new(input);
    while let Some((number, text)) = lines.next_line()? {
        replay.line(registry, number, text, &mut spawn)?;
        if dispatcher.in_flight() > 0 {
            // A timeout here is counted below if the actions never finish.
            let _ = dispatcher.drain(wait).await;
        }
    }
    let unsettled = match dispatcher.drain(wait).await {
        Ok(()) => 0,
        Err(ActuatorError::DrainTimeout { pending }) => pending,
        Err(_) => dispatcher.in_flight(),
    };
    let mut summary = replay.finish(registry)?;
    summary.unsettled = unsettled;
    Ok(summary)
}
