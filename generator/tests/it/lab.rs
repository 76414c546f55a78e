//! `ggen test`: scenario files run on a spec's interpreted pack — passing,
//! failing (located, with the trail), invalid (located before anything
//! runs), and the timers and action results the lab drives.

use serde_json::Value;

use super::support::{ggen, repo};

/// A temp project with `specs/cost_guard.json` and the scenario file `scenarios`.
fn project(scenarios: &str) -> tempfile::TempDir {
    let temp = tempfile::tempdir().expect("temp dir");
    let specs = temp.path().join("specs");
    fs_err::create_dir_all(&specs).expect("specs folder");
    fs_err::copy(
        repo().join("specs/cost_guard.json"),
        specs.join("cost_guard.json"),
    )
    .expect("copy spec");
    fs_err::copy(
        repo().join("specs/queue_valve.json"),
        specs.join("queue_valve.json"),
    )
    .expect("copy spec");
    fs_err::write(specs.join("cost_guard.test.json"), scenarios).expect("scenarios");
    fs_err::write(
        temp.path().join("ggen.toml"),
        "version = 1\nspecs = [\"specs/*.json\"]\nout_dir = \"generated\"\n",
    )
    .expect("config");
    temp
}

/// Passes on cost_guard: two readings at `intervene` dispatch `throttle`.
const PASSING: &str = r#"{
  "scenarios": [
    {
      "name": "throttles after two readings past intervene",
      "inputs": [
        { "signal": "spend_rate", "value": 120, "at": "+1m", "expect": { "state": "stable", "dispatched": [] } },
        { "signal": "spend_rate", "value": 120, "at": "+1m",
          "expect": { "state": "warning", "dispatched": ["throttle"], "receipts": { "action": 1, "action_result": 1 }, "reason": "dispatched" } }
      ]
    }
  ]
}
"#;

#[test]
fn a_passing_file_exits_0_and_untested_specs_are_listed() {
    let p = project(PASSING);
    let (stdout, _) = ggen(p.path(), &["test"], 0);
    assert!(
        stdout.contains("specs/cost_guard.test.json: 1 of 1 scenario(s) passed, 7 check(s): ok"),
        "{stdout}"
    );
    assert!(
        stdout.contains("specs/queue_valve.json: untested (no specs/queue_valve.test.json)"),
        "{stdout}"
    );
    assert!(
        stdout.ends_with("test result: ok. 1 passed; 0 failed\n"),
        "{stdout}"
    );
    // Named, a spec without scenarios is an error; so is its scenario file.
    let (_, stderr) = ggen(p.path(), &["test", "specs/queue_valve.json"], 1);
    assert!(
        stderr.contains(
            "specs/queue_valve.test.json: no scenario file beside `specs/queue_valve.json`"
        ),
        "{stderr}"
    );
    // The scenario file names its spec.
    ggen(p.path(), &["test", "specs/cost_guard.test.json"], 0);
}

#[test]
fn every_failure_is_located_with_the_trail() {
    let failing = PASSING
        .replace(
            r#""expect": { "state": "stable", "dispatched": [] }"#,
            r#""expect": { "state": "warning", "dispatched": ["pause_jobs"] }"#,
        )
        .replace(r#""reason": "dispatched""#, r#""reason": "blocked""#);
    let p = project(&failing);
    let (stdout, _) = ggen(p.path(), &["test"], 1);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[..3],
        [
            "specs/cost_guard.test.json:6:83: scenario \"throttles after two readings past intervene\": after input 1 expected state warning, got stable",
            "specs/cost_guard.test.json:6:108: scenario \"throttles after two readings past intervene\": after input 1 expected dispatched [pause_jobs], got []",
            "specs/cost_guard.test.json:8:130: scenario \"throttles after two readings past intervene\": after input 2 expected reason blocked, got dispatched",
        ],
        "{stdout}"
    );
    // The trail names every receipt and the input that wrote it.
    assert!(
        stdout.contains("input   0  #1 2026-01-01T00:00:00Z entitlement approved: boot → stable (entitlement_recorded)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("input   2  #3 2026-01-01T00:02:00Z signal spend_rate=120: stable → intervening (dispatched) dispatches throttle"),
        "{stdout}"
    );
    assert!(
        stdout.ends_with("test result: FAILED. 0 passed; 1 failed\n"),
        "{stdout}"
    );

    let (json, _) = ggen(p.path(), &["--format", "json", "test"], 1);
    let doc: Value = serde_json::from_str(&json).expect("json");
    assert_eq!(doc["ok"], false);
    assert_eq!(doc["failed"], 1);
    let scenario = &doc["specs"][0]["scenarios"][0];
    assert_eq!(scenario["failures"].as_array().map(Vec::len), Some(3));
    assert_eq!(
        scenario["failures"][0]["pointer"],
        "/scenarios/0/inputs/0/expect/state"
    );
    assert_eq!(scenario["failures"][0]["expected"], "warning");
    assert_eq!(scenario["failures"][0]["got"], "stable");
    assert_eq!(scenario["trail"][2]["input"], 2);
    assert_eq!(scenario["trail"][2]["receipt"]["kind"], "signal");
}

#[test]
fn an_invalid_file_is_reported_whole_before_anything_runs() {
    let bad = r#"{
  "scenarios": [
    { "name": "one", "profile": "gold",
      "inputs": [
        { "signal": "spend_rat", "value": 1 },
        { "signal": "spend_rate", "at": "+5 minutes", "value": 1 },
        { "result": "throttle", "ok": true },
        { "signal": "spend_rate", "value": 1, "at": "2025-01-01T00:00:00Z" },
        { "entitlement": "approved", "plan": "gold" },
        { "signal": "spend_rate", "value": 1, "ok": true },
        { "note": "nothing" },
        { "at": "+1m", "expect": { "dispatched": ["pause"], "statee": "warning" } }
      ] },
    { "name": "one", "inputs": [ { "signal": "spend_rate", "value": 1 } ] }
  ]
}
"#;
    let p = project(bad);
    let (stdout, stderr) = ggen(p.path(), &["test"], 1);
    assert!(stdout.is_empty(), "nothing ran: {stdout}");
    // A file whose shape is wrong is not read further: names are checked
    // on a file the schema accepts.
    assert_eq!(
        stderr,
        "specs/cost_guard.test.json:12:71: /scenarios/0/inputs/7/expect/statee: unknown key `statee`; did you mean `state`?\nerror: 1 problem(s) found\n"
    );
    let expected = [
        "specs/cost_guard.test.json:3:33: /scenarios/0/profile: unknown profile `gold`; the spec has `enterprise`, `standard`",
        "specs/cost_guard.test.json:5:21: /scenarios/0/inputs/0/signal: unknown signal `spend_rat`; the spec has `spend_rate`, `spend_spike`",
        "specs/cost_guard.test.json:6:41: /scenarios/0/inputs/1/at: `+5 minutes` is not a time: expected RFC 3339 or `+` and a duration such as `+90s`, `+5m`, `+1h30m`, `+2d`, `+250ms`",
        "specs/cost_guard.test.json:7:21: /scenarios/0/inputs/2/result: actions are settled at once in this scenario (`actions: succeed`); `result` inputs need `\"actions\": \"manual\"`",
        "specs/cost_guard.test.json:8:53: /scenarios/0/inputs/3/at: `2025-01-01T00:00:00Z` is before the previous input's time `2026-01-01T00:00:00Z`",
        "specs/cost_guard.test.json:9:46: /scenarios/0/inputs/4/plan: unknown profile `gold`; the spec has `enterprise`, `standard`",
        "specs/cost_guard.test.json:10:53: /scenarios/0/inputs/5/ok: `ok` has no meaning for a signal",
        "specs/cost_guard.test.json:11:9: /scenarios/0/inputs/6: an input needs `signal`, `entitlement` or `result`, or only `at` to move the clock",
        "specs/cost_guard.test.json:12:51: /scenarios/0/inputs/7/expect/dispatched/0: unknown action `pause`; the spec has `throttle`, `unthrottle`, `pause_jobs`",
        "specs/cost_guard.test.json:14:15: /scenarios/1/name: scenario `one` is named twice (first at /scenarios/0)",
    ];
    let p = project(&bad.replace("statee", "state"));
    let (_, stderr) = ggen(p.path(), &["test"], 1);
    for line in expected {
        assert!(stderr.contains(line), "missing {line}\nin:\n{stderr}");
    }
}

#[test]
fn timers_fire_at_their_due_time_and_results_answer_what_is_in_flight() {
    // cost_guard: intervention_timeout_s 120, degraded_retry_s 600.
    let scenarios = r#"{
  "scenarios": [
    {
      "name": "a throttle that never answers times out, is retried, then confirmed",
      "actions": "manual",
      "inputs": [
        { "signal": "spend_rate", "value": 120, "at": "+1m" },
        { "signal": "spend_rate", "value": 120, "at": "+1m", "expect": { "state": "intervening", "in_flight": ["throttle"] } },
        { "at": "+12m", "expect": { "state": "intervening", "receipts": { "timeout": 2, "action": 1 }, "dispatched": ["throttle"] } },
        { "result": "throttle", "ok": true, "at": "+5s", "expect": { "state": "warning", "reason": "all_confirmed", "in_flight": [] } }
      ]
    },
    {
      "name": "a failed throttle degrades at once",
      "actions": "fail",
      "inputs": [
        { "signal": "spend_rate", "value": 120, "at": "+1m" },
        { "signal": "spend_rate", "value": 120, "at": "+1m", "expect": { "state": "degraded", "receipts": { "action_result": 1 } } }
      ]
    }
  ]
}
"#;
    let p = project(scenarios);
    let (json, _) = ggen(p.path(), &["--format", "json", "test"], 0);
    let doc: Value = serde_json::from_str(&json).expect("json");
    assert_eq!(doc["passed"], 2, "{json}");
    // The receipts: the timeout at the deadline (2 min after the dispatch),
    // the retry 10 min after that: at the input's own time only because
    // the input came exactly then.
    let broken = scenarios.replace(
        r#""state": "warning", "reason""#,
        r#""state": "stable", "reason""#,
    );
    let p = project(&broken);
    let (json, _) = ggen(p.path(), &["--format", "json", "test"], 1);
    let doc: Value = serde_json::from_str(&json).expect("json");
    let trail = doc["specs"][0]["scenarios"][0]["trail"]
        .as_array()
        .expect("trail");
    let timers: Vec<(&str, &str)> = trail
        .iter()
        .filter(|e| e["receipt"]["kind"] == "timeout")
        .map(|e| {
            (
                e["receipt"]["at"].as_str().unwrap_or(""),
                e["receipt"]["to"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        timers,
        [
            ("2026-01-01T00:04:00Z", "degraded"),
            ("2026-01-01T00:14:00Z", "intervening"),
        ]
    );
}

#[test]
fn the_scenario_schema_is_published() {
    let (stdout, _) = ggen(&repo(), &["schema", "test"], 0);
    let schema: Value = serde_json::from_str(&stdout).expect("json");
    assert_eq!(schema["$id"], "urn:ggen:schema:scenarios:1");
    assert_eq!(schema["required"], serde_json::json!(["scenarios"]));
}

#[test]
fn the_shipped_specs_pass_their_scenarios() {
    let specs = ["cost_guard", "queue_valve", "rollback_guard"]
        .map(|id| repo().join(format!("specs/{id}.json")));
    let report = ggen::pipeline::test(&specs, true).expect("the scenario files load");
    for spec in &report.specs {
        assert!(
            spec.scenarios.len() >= 20,
            "{}: too few scenarios",
            spec.file
        );
        for scenario in &spec.scenarios {
            assert!(
                scenario.passed(),
                "{}: {}\n{}",
                spec.file,
                scenario
                    .failures
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n"),
                scenario.trail_text()
            );
        }
    }
}

/// The shipped scenarios pin each edge: moving one threshold, the dwell or
/// the cooldown of cost_guard by the smallest step fails some scenario.
#[test]
fn the_shipped_scenarios_notice_a_moved_edge() {
    let spec = fs_err::read_to_string(repo().join("specs/cost_guard.json")).expect("spec");
    let scenarios =
        fs_err::read_to_string(repo().join("specs/cost_guard.test.json")).expect("scenarios");
    let edges = [
        (r#""warn": 50,"#, r#""warn": 50.01,"#),
        (r#""intervene": 100,"#, r#""intervene": 99.99,"#),
        (r#""refuse": 500,"#, r#""refuse": 500.01,"#),
        (r#""clear": 40,"#, r#""clear": 39.99,"#),
        (r#""dwell": 2,"#, r#""dwell": 3,"#),
        (r#""cooldown_s": 300,"#, r#""cooldown_s": 299,"#),
        (
            r#""max_actions_per_hour": 6"#,
            r#""max_actions_per_hour": 7"#,
        ),
        (r#""degraded_retry_s": 600"#, r#""degraded_retry_s": 601"#),
    ];
    for (from, to) in edges {
        assert_eq!(spec.matches(from).count(), 1, "{from}");
        let p = project(&scenarios);
        fs_err::write(
            p.path().join("specs/cost_guard.json"),
            spec.replace(from, to),
        )
        .expect("spec");
        let (stdout, _) = ggen(p.path(), &["test", "specs/cost_guard.json"], 1);
        assert!(stdout.contains("test result: FAILED."), "{to}: {stdout}");
    }
}

#[test]
fn a_clock_move_that_fires_too_many_timers_fails_the_scenario_not_the_machine() {
    // Failing actions degrade and retry every 10 minutes: ten years of
    // retries is half a million timers, refused at the input that asks.
    let scenarios = r#"{
  "scenarios": [
    {
      "name": "ten years of retries",
      "actions": "fail",
      "inputs": [
        { "signal": "spend_rate", "value": 120, "at": "+1m" },
        { "signal": "spend_rate", "value": 120, "at": "+1m", "expect": { "state": "degraded" } },
        { "at": "+3650d", "expect": { "state": "degraded" } },
        { "signal": "spend_rate", "value": 1, "at": "+1m" }
      ]
    }
  ]
}
"#;
    let p = project(scenarios);
    let (stdout, _) = ggen(p.path(), &["test"], 1);
    assert!(
        stdout.starts_with("specs/cost_guard.test.json:9:17: scenario \"ten years of retries\": after input 3 expected a clock move that fires at most 10000, got more than 10000 timers fall due before 2035-12-30T00:02:00Z"),
        "{stdout}"
    );
}

#[test]
fn an_input_the_service_would_refuse_fails_where_it_stands() {
    // A tenant's dedupe window holds 100,000 event ids: the next new id is
    // refused before anything is decided, as the service refuses it.
    let mut inputs = String::new();
    for i in 0..100_001 {
        inputs.push_str(&format!(
            "{{ \"signal\": \"spend_rate\", \"value\": 1, \"id\": \"m{i}\" }},\n"
        ));
    }
    let scenarios = format!(
        "{{ \"scenarios\": [ {{ \"name\": \"many ids\", \"inputs\": [\n{}\n] }} ] }}\n",
        inputs.trim_end().trim_end_matches(',')
    );
    let p = project(&scenarios);
    let (stdout, _) = ggen(p.path(), &["test"], 1);
    assert!(
        stdout.starts_with("specs/cost_guard.test.json:100002:1: scenario \"many ids\": after input 100001 expected the input accepted, got refused: "),
        "{}",
        &stdout[..stdout.len().min(2000)]
    );
}
