//! `ggen explain`'s state diagram against the runtime's transition table:
//! every transition that can happen for the SKU is drawn, nothing else.

use std::collections::BTreeSet;
use std::path::Path;

use ggen_runtime_core::fsm;

/// The diagram's arrows as `(from, to, label)`, after the start arrow.
fn arrows(text: &str) -> Vec<(String, String, String)> {
    let diagram = text
        .split_once("```mermaid\nstateDiagram-v2\n")
        .expect("a mermaid state diagram")
        .1
        .split_once("```")
        .expect("a closed fence")
        .0;
    diagram
        .lines()
        .filter(|line| !line.contains("[*]"))
        .map(|line| {
            let (states, label) = line.trim().split_once(": ").expect("a labelled arrow");
            let (from, to) = states.split_once(" --> ").expect("an arrow");
            (from.to_owned(), to.to_owned(), label.to_owned())
        })
        .collect()
}

#[test]
fn the_diagram_draws_every_transition_the_sku_can_make() {
    let specs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../specs");
    // cost_guard requires an entitlement; rollback_guard does not.
    for (spec, required) in [("cost_guard.json", true), ("rollback_guard.json", false)] {
        let text = ggen::pipeline::explain(&specs.join(spec)).unwrap();
        let arrows = arrows(&text);
        let drawn: BTreeSet<(&str, &str)> = arrows
            .iter()
            .map(|(from, to, _)| (from.as_str(), to.as_str()))
            .collect();
        let expected: BTreeSet<(&str, &str)> =
            fsm::transitions(required).map(|t| (t.from, t.to)).collect();
        assert_eq!(drawn, expected, "{spec}:\n{text}");
        assert_eq!(drawn.len(), arrows.len(), "one arrow per pair: {text}");
        for (from, to, label) in &arrows {
            // Mermaid ends a label at `;` or `#`.
            assert!(!label.contains([';', '#']), "{from} --> {to}: {label}");
        }
        let label = |from: &str, to: &str| {
            let (_, _, label) = arrows
                .iter()
                .find(|(f, t, _)| f == from && t == to)
                .unwrap_or_else(|| panic!("{spec}: no arrow {from} --> {to}"));
            label.clone()
        };
        // The cases DESIGN §5 names that the hand-drawn diagram missed.
        assert!(label("intervening", "stable").contains("operator reset"));
        assert!(label("stable", "warning").contains("blocked"));
        assert_eq!(
            label("degraded", "refusing").contains("entitlement not active"),
            required,
            "{spec}"
        );
        assert_eq!(text.contains("entitlement not active"), required, "{spec}");
    }
}
