//! Human views of a model: the thresholds of every profile as Markdown tables
//! and the governor state machine as a Mermaid diagram. `ggen explain`
//! prints them; the generated README embeds the same text.

use std::fmt::Write as _;

use ggen_runtime_core::fsm::{self, Reason, Transition};

use crate::escape::md;
use crate::model::{Model, Profile};
use crate::spec::Direction;

fn number(value: Option<f64>) -> String {
    value.map_or_else(|| "–".to_owned(), |v| v.to_string())
}

fn profile_heading(model: &Model, profile: &Profile) -> String {
    let mut notes = Vec::new();
    if profile.id == u16::try_from(model.default_profile).unwrap_or(u16::MAX) {
        notes.push("default".to_owned());
    }
    if let Some(parent) = &profile.extends {
        notes.push(format!("extends `{parent}`"));
    }
    let notes = if notes.is_empty() {
        String::new()
    } else {
        format!(" ({})", notes.join(", "))
    };
    format!("### Profile `{}`{notes}", profile.name)
}

/// The thresholds of every profile as Markdown: one heading and table per profile.
pub fn thresholds_markdown(model: &Model) -> String {
    let mut out = String::new();
    for (i, profile) in model.profiles.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let _ = writeln!(out, "{}\n", profile_heading(model, profile));
        let budget = profile
            .max_actions_per_hour
            .map_or_else(|| "unlimited".to_owned(), |n| n.to_string());
        let _ = writeln!(
            out,
            "Cooldown {} s; at most {budget} actions per tenant per hour.\n",
            profile.cooldown_s
        );
        if profile.rules.is_empty() {
            out.push_str("No rules: signals never escalate under this profile.\n");
            continue;
        }
        out.push_str(
            "| signal | worse when | warn | intervene | refuse | clear | dwell | actions on intervene | from |\n",
        );
        out.push_str("|---|---|---:|---:|---:|---:|---:|---|---|\n");
        for rule in &profile.rules {
            let signal = &model.signals[rule.signal];
            let actions: Vec<String> = rule
                .actions
                .iter()
                .map(|a| format!("`{}`", model.actions[*a].name))
                .collect();
            let _ = writeln!(
                out,
                "| `{}` | {} {} | {} | {} | {} | {} | {} | {} | `{}` |",
                signal.name,
                match rule.direction {
                    Direction::Above => "above",
                    Direction::Below => "below",
                },
                md(&signal.unit),
                number(rule.warn),
                number(rule.intervene),
                number(rule.refuse),
                rule.clear,
                rule.dwell,
                if actions.is_empty() {
                    "–".to_owned()
                } else {
                    actions.join(", ")
                },
                rule.defined_in,
            );
        }
    }
    out
}

/// The label of a charted transition, with this SKU's timings.
///
/// An exhaustive match: a reason added to the runtime needs a label here.
fn label(model: &Model, transition: &Transition) -> String {
    let n = model.recovery_evaluations;
    match transition.reason {
        Reason::Evaluated if transition.to == "warning" => "warn (dwell met)".to_owned(),
        Reason::Evaluated => "reading below warn".to_owned(),
        Reason::EntitlementInactive => "entitlement not active".to_owned(),
        Reason::RefuseLevel => "refuse level".to_owned(),
        Reason::Dispatched => "intervene (dwell met) / dispatch actions".to_owned(),
        Reason::Blocked if transition.from == "degraded" => {
            "retry due but blocked (cooldown, hourly budget or no action)".to_owned()
        }
        Reason::Blocked => {
            "intervene (dwell met) but blocked (cooldown, hourly budget or no action)".to_owned()
        }
        Reason::StormGuard => "further breaching signals / no re-dispatch".to_owned(),
        Reason::RetryWait => "retry not due yet".to_owned(),
        Reason::Recovered => format!("{n} evaluations past clear"),
        Reason::RefusalLifted => {
            let entitled = if model.entitlement_required {
                "entitlement active, "
            } else {
                ""
            };
            if transition.to == "warning" {
                format!("{entitled}below refuse, a rule still past warn")
            } else {
                format!("{entitled}below refuse, every rule normal")
            }
        }
        Reason::StillRefusing => "still refusing".to_owned(),
        Reason::Confirmed => "an action confirmed".to_owned(),
        Reason::AllConfirmed => "all actions confirmed".to_owned(),
        Reason::ActionFailed => "an action failed after its retries".to_owned(),
        Reason::StaleResult => "stale action result".to_owned(),
        Reason::InterventionTimeout => {
            format!("no confirmation in {} s", model.intervention_timeout_s)
        }
        Reason::DegradedRetry => format!(
            "still breaching after {} s / dispatch again",
            model.degraded_retry_s
        ),
        Reason::EntitlementRecorded => "entitlement recorded".to_owned(),
        Reason::OperatorReset => "operator reset".to_owned(),
    }
}

/// The governor state machine (DESIGN §5) with this SKU's timings, as a
/// fenced Mermaid `stateDiagram-v2` block.
///
/// Drawn from the runtime's transition table (`ggen_runtime_core::fsm`), which
/// the runtime's tests prove equal to its transition function; transitions
/// that cannot happen for this SKU (entitlement refusals without an
/// entitlement requirement, a new tenant acting before it is entitled) are
/// left out. One arrow per pair of states, its reasons joined by ` | `
/// (Mermaid ends a label at `;` or `#`).
pub fn fsm_mermaid(model: &Model) -> String {
    let mut arrows: Vec<((&str, &str), Vec<String>)> = Vec::new();
    for transition in fsm::transitions(model.entitlement_required) {
        let pair = (transition.from, transition.to);
        let text = label(model, transition);
        match arrows.iter_mut().find(|(p, _)| *p == pair) {
            Some((_, labels)) => labels.push(text),
            None => arrows.push((pair, vec![text])),
        }
    }
    let mut out = String::from("```mermaid\nstateDiagram-v2\n    [*] --> boot: new tenant\n");
    for ((from, to), labels) in arrows {
        // Every move into `stable` from a state that may have applied
        // actions runs their undo.
        let undo = if to == "stable" && from != "boot" {
            " / undo actions"
        } else {
            ""
        };
        let _ = writeln!(out, "    {from} --> {to}: {}{undo}", labels.join(" | "));
    }
    out.push_str("```\n");
    out
}

/// What `ggen explain` prints: a title, the thresholds and the FSM diagram.
pub fn explain(model: &Model) -> String {
    format!(
        "# {} {} (`{}`, from `{}`)\n\n## Thresholds\n\n{}\n## State machine\n\n{}",
        md(&model.name),
        model.version,
        model.id,
        model.spec_path,
        thresholds_markdown(model),
        fsm_mermaid(model),
    )
}
