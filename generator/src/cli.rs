//! The `ggen` command line: parse arguments, call one library function per
//! command, print the result and map it to an exit code (0 ok, 1 invalid
//! input or drift, 2 internal error; clap's own usage errors, such as an
//! unknown option or a missing required one, also exit 2, clap's
//! convention). The only module that prints.
//!
//! Standard output goes through `Stdout`: a reader that goes away
//! (`ggen build --dry-run | head`) ends the output quietly and the exit code
//! is the command's own, as with cargo; any other failure to write it is an
//! internal error (exit 2).

use std::io::{self, StdoutLock, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::json;

use crate::bundle::Verdict;
use crate::config::CONFIG_SCHEMA;
use crate::diagnostic;
use crate::init::InitOptions;
use crate::lab::Settle;
use crate::lab::backtest::{Gates, Report as Backtest, Totals};
use crate::lab::recorded::Recorded;
use crate::lab::scenario::SCENARIOS_SCHEMA;
use crate::pipeline::{
    self, BuildError, BuildOptions, BuildReport, BundleOptions, BundleReport, BundleStep, Mode,
    Project,
};
use crate::validate::SKU_SCHEMA;

/// Generates governor service crates from SKU specs.
#[derive(Debug, Parser)]
#[command(name = "ggen", version, about)]
pub struct Cli {
    /// The project config; its folder is the project root (default:
    /// `ggen.toml` in the current folder or the nearest parent that has one).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Output format (text for people, json for machines).
    #[arg(long, global = true, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// For people.
    Text,
    /// One JSON document on stdout, for CI.
    Json,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate specs (default: those named in ggen.toml).
    Validate {
        /// Spec files.
        specs: Vec<PathBuf>,
    },
    /// Generate one crate per spec into the output folder.
    Build {
        /// Spec files (default: those named in ggen.toml; only then are removed specs' folders cleaned up).
        specs: Vec<PathBuf>,
        /// Output folder instead of ggen.toml's `out_dir`.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Write nothing; exit 1 with a diff if anything would change.
        #[arg(long, conflicts_with = "dry_run")]
        check: bool,
        /// Write nothing; print the plan.
        #[arg(long)]
        dry_run: bool,
        /// Overwrite files edited by hand.
        #[arg(long)]
        force: bool,
        /// Rendering threads (default: available cores).
        #[arg(long)]
        jobs: Option<usize>,
    },
    /// Write one reproducible bundle per spec (`<id>-<version>.tar.gz` and
    /// `.bundle.json`): the generated crate with deploy/ and monitoring/,
    /// the spec and a manifest of every file's SHA-256.
    Bundle {
        /// Spec files (default: those named in ggen.toml).
        specs: Vec<PathBuf>,
        /// Folder to write the bundles to.
        #[arg(
            long,
            value_name = "DIR",
            required_unless_present = "check",
            conflicts_with = "check"
        )]
        out: Option<PathBuf>,
        /// Write nothing: re-derive every bundle and compare it with the
        /// one in DIR; exit 1 if any is missing, differs or was tampered with.
        #[arg(long, value_name = "DIR")]
        check: Option<PathBuf>,
        /// Build each crate and run its tests in a temporary workspace first.
        #[arg(long, conflicts_with = "check")]
        verify: bool,
        /// Add the release binary (`bin/<crate>`, recorded by hash; not reproducible).
        #[arg(long, conflicts_with = "check")]
        with_binary: bool,
        /// Rendering threads (default: available cores).
        #[arg(long)]
        jobs: Option<usize>,
    },
    /// Run the scenario file beside each spec (`x.test.json` beside
    /// `x.json`) on the spec's interpreted policy: no crate is built. Exit 1
    /// if an expectation fails.
    Test {
        /// Spec files, or their scenario files (default: the specs ggen.toml
        /// names; those without a scenario file are listed as untested).
        specs: Vec<PathBuf>,
    },
    /// Replay recorded inputs through two versions of a spec and report
    /// what the change does (interventions, refusals, actions, time in each
    /// state, each tenant's first divergence); exit 1 if a gate is crossed.
    Backtest {
        /// The spec before the change: a file, or `REV:PATH` read from git
        /// (`HEAD:specs/cost_guard.json`).
        #[arg(long, value_name = "SPEC")]
        old: String,
        /// The spec after the change (a file, or `REV:PATH`).
        #[arg(long, value_name = "SPEC")]
        new: String,
        /// Recorded inputs: a JSON Lines file in the replay format.
        #[arg(long, value_name = "FILE", group = "recorded")]
        signals: Option<PathBuf>,
        /// Recorded inputs: a governor's ledger directory (its signal and
        /// entitlement receipts), read-only and verified.
        #[arg(long, value_name = "DIR", group = "recorded")]
        ledger: Option<PathBuf>,
        /// Recorded inputs: a governor's PostgreSQL ledger (prefer
        /// `GOVERNOR_DATABASE_URL`: a URL on the command line is visible to `ps`).
        #[arg(long, value_name = "URL", group = "recorded")]
        database_url: Option<String>,
        /// How dispatched actions end in both runs.
        #[arg(long, value_enum, default_value_t = SettleArg::Succeed)]
        actions: SettleArg,
        /// Gate: exit 1 if the new spec refuses more than N more times in total.
        #[arg(long, value_name = "N")]
        max_new_refusals: Option<u64>,
        /// Gate: exit 1 if the new spec intervenes more than N more times in total.
        #[arg(long, value_name = "N")]
        max_new_interventions: Option<u64>,
        /// Gate: exit 1 if the new spec dispatches more than PCT percent more actions.
        #[arg(long, value_name = "PCT")]
        max_action_increase: Option<f64>,
        /// Accept up to N recorded inputs that cannot be read (not JSON,
        /// not UTF-8, not a replay line); past N the backtest exits 1
        /// naming the first. Default 0.
        #[arg(long, value_name = "N", default_value_t = 0)]
        max_unreadable: u64,
    },
    /// Print a JSON Schema.
    Schema {
        /// Which schema.
        #[arg(value_enum, default_value_t = SchemaKind::Spec)]
        kind: SchemaKind,
    },
    /// Print a spec's thresholds per profile and its state machine (Mermaid).
    Explain {
        /// The spec file.
        spec: PathBuf,
    },
    /// Print a shell completion script for `ggen` (e.g. `ggen completions bash >
    /// ~/.local/share/bash-completion/completions/ggen`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the `ggen(1)` man page (roff), e.g. `ggen man > ggen.1`.
    Man,
    /// Check a receipt against a governor's signed checkpoint, with its
    /// inclusion proof and the governor's public key: no service, no ledger.
    /// Exit 1 naming the input at fault.
    VerifyReceipt {
        /// The receipt, its bytes exactly as the ledger stores them.
        #[arg(long, value_name = "FILE")]
        receipt: PathBuf,
        /// The inclusion proof (`{"leaf_index","tree_size","hashes"}`).
        #[arg(long, value_name = "FILE")]
        proof: PathBuf,
        /// The signed checkpoint (a C2SP signed note).
        #[arg(long, value_name = "FILE")]
        checkpoint: PathBuf,
        /// The governor's public key (`<name>+<key id>+<key>`).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
    },
    /// Check that a newer signed checkpoint extends an older one (nothing
    /// recorded was changed, removed or reordered), with the consistency
    /// proof between them. Exit 1 naming the input at fault.
    VerifyConsistency {
        /// The older signed checkpoint.
        old: PathBuf,
        /// The newer signed checkpoint.
        new: PathBuf,
        /// The consistency proof (`{"first","second","hashes"}`).
        proof: PathBuf,
        /// The governor's public key (`<name>+<key id>+<key>`).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
    },
    /// Make a project here (ggen.toml, a starter spec, schemas, a cargo
    /// workspace, .gitignore), or add a starter spec to the project here.
    Init {
        /// The SKU id (`^[a-z][a-z0-9_]{1,39}$`).
        id: String,
        /// Generated crates use the ggen-runtime in this folder (written to
        /// ggen.toml as given, so relative to the project folder); default:
        /// ggen-runtime from crates.io, by version.
        #[arg(long, value_name = "DIR")]
        runtime_path: Option<PathBuf>,
        /// Overwrite files init writes (never an existing Cargo.toml or .gitignore, nor through a link).
        #[arg(long)]
        force: bool,
    },
}

/// How dispatched actions end in a backtest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SettleArg {
    /// Every action succeeds at once (as `replay`'s `log` adapter).
    Succeed,
    /// Every action fails at once.
    Fail,
}

/// The schemas `ggen schema` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SchemaKind {
    /// The SKU spec.
    Spec,
    /// ggen.toml.
    Config,
    /// A scenario file of `ggen test`.
    Test,
}

/// Runs `ggen` with the process arguments.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    ExitCode::from(run(&cli))
}

/// Standard output that stops writing at its first error and keeps it, so
/// that printing never panics (`println!` does on a closed pipe) and the
/// command still ends with its own exit code.
struct Stdout {
    inner: StdoutLock<'static>,
    error: Option<io::Error>,
}

impl Stdout {
    fn new() -> Stdout {
        Stdout {
            inner: io::stdout().lock(),
            error: None,
        }
    }

    /// `code`, or 2 after a write error other than a closed pipe (reported on stderr).
    fn finish(mut self, code: u8) -> u8 {
        let _ = self.flush();
        match self.error {
            None => code,
            Some(e) if e.kind() == io::ErrorKind::BrokenPipe => code,
            Some(e) => {
                eprintln!("error: writing to stdout failed: {e}");
                2
            }
        }
    }
}

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.error.is_none()
            && let Err(e) = self.inner.write_all(buf)
        {
            self.error = Some(e);
        }
        // Swallowed: the error is reported once, by `finish`.
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.error.is_none()
            && let Err(e) = self.inner.flush()
        {
            self.error = Some(e);
        }
        Ok(())
    }
}

/// Divergences a terminal shows (JSON has them all).
const DIVERGENCES_SHOWN: usize = 20;

/// Prints a backtest report: a table on a terminal, one JSON document for machines.
fn print_backtest(out: &mut Stdout, format: Format, report: &Backtest) {
    if format == Format::Json {
        let mut doc = serde_json::to_value(report).unwrap_or_default();
        doc["ok"] = json!(!report.crossed());
        let _ = writeln!(out, "{doc:#}");
        return;
    }
    let span = match (report.from, report.to) {
        (Some(from), Some(to)) => format!(", {from} … {to}"),
        _ => String::new(),
    };
    let _ = writeln!(out, "backtest: {} → {}", report.old, report.new);
    for warning in &report.warnings {
        let _ = writeln!(out, "warning: {warning}");
    }
    let _ = writeln!(
        out,
        "inputs: {} {}(s) from {}, {} tenant(s){span}",
        report.inputs, report.unit, report.recorded, report.tenants
    );
    if report.bad_inputs > 0 {
        let _ = writeln!(
            out,
            "{} {}(s) could not be replayed under one spec or both; the first:",
            report.bad_inputs, report.unit
        );
        for bad in &report.bad {
            let _ = writeln!(out, "  {} {}: {}", report.unit, bad.input, bad.message);
        }
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<24}{:>12}{:>12}{:>10}{:>10}{:>10}",
        "", "old", "new", "change", "added", "removed"
    );
    for (name, change) in [
        ("interventions", report.interventions),
        ("refusals", report.refusals),
        ("actions", report.actions),
    ] {
        let _ = writeln!(
            out,
            "{name:<24}{:>12}{:>12}{:>+10}{:>10}{:>10}",
            change.old,
            change.new,
            change.new as i128 - change.old as i128,
            change.added,
            change.removed
        );
    }
    let actions: std::collections::BTreeSet<&String> = report
        .old_totals
        .by_action
        .keys()
        .chain(report.new_totals.by_action.keys())
        .collect();
    for action in actions {
        let count = |t: &Totals| t.by_action.get(action).copied().unwrap_or(0);
        let (a, b) = (count(&report.old_totals), count(&report.new_totals));
        let _ = writeln!(
            out,
            "  {action:<22}{a:>12}{b:>12}{:>+10}",
            b as i128 - a as i128
        );
    }
    let _ = writeln!(out, "time in state (tenant-hours)");
    let hours = |ms: u64| ms as f64 / 3_600_000.0;
    for state in ggen_runtime_core::fsm::State::NAMES {
        let ms = |t: &Totals| t.state_ms.get(state).copied().unwrap_or(0);
        let (a, b) = (hours(ms(&report.old_totals)), hours(ms(&report.new_totals)));
        let _ = writeln!(out, "  {state:<22}{a:>12.1}{b:>12.1}{:>+10.1}", b - a);
    }
    let _ = writeln!(
        out,
        "per profile (interventions, refusals, actions: old → new)"
    );
    for (name, p) in &report.profiles {
        let _ = writeln!(
            out,
            "  {name:<22}{} → {}, {} → {}, {} → {}",
            p.old.interventions,
            p.new.interventions,
            p.old.refusals,
            p.new.refusals,
            p.old.actions,
            p.new.actions
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "tenants whose state diverged: {} of {}",
        report.diverged, report.tenants
    );
    for d in report.divergences.iter().take(DIVERGENCES_SHOWN) {
        let _ = writeln!(
            out,
            "  {:<24}{} {:<8} {}  {} → {}",
            d.tenant, report.unit, d.input, d.at, d.old, d.new
        );
    }
    if report.diverged > DIVERGENCES_SHOWN {
        let _ = writeln!(
            out,
            "  … {} more (all with --format json)",
            report.diverged - DIVERGENCES_SHOWN
        );
    }
    for gate in &report.gates {
        let percent = gate.name == "max-action-increase";
        let unit = if percent { "%" } else { "" };
        let value = gate.value.map_or_else(
            || "from none".to_owned(),
            |v| {
                if percent {
                    format!("{v:+.1}")
                } else {
                    format!("{v:+.0}")
                }
            },
        );
        if gate.crossed {
            let shown: Vec<&str> = gate.tenants.iter().take(10).map(String::as_str).collect();
            let more = gate.tenants.len().saturating_sub(shown.len());
            let _ = writeln!(
                out,
                "gate --{} {}{unit}: CROSSED ({value}{unit}) by {}{}",
                gate.name,
                gate.limit,
                shown.join(", "),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                }
            );
        } else {
            let _ = writeln!(
                out,
                "gate --{} {}{unit}: ok ({value}{unit})",
                gate.name, gate.limit
            );
        }
    }
}

/// Prints what `ggen test` did; returns the exit code (1 if a scenario failed).
fn print_tests(out: &mut Stdout, format: Format, report: &pipeline::TestReport) -> u8 {
    let (passed, failed) = report.counts();
    if format == Format::Json {
        let doc = json!({
            "ok": failed == 0,
            "passed": passed,
            "failed": failed,
            "specs": report.specs,
        });
        let _ = writeln!(out, "{doc:#}");
        return u8::from(failed > 0);
    }
    for spec in &report.specs {
        if !spec.found {
            let _ = writeln!(out, "{}: untested (no {})", spec.spec, spec.file);
            continue;
        }
        for scenario in spec.scenarios.iter().filter(|s| !s.passed()) {
            for failure in &scenario.failures {
                let _ = writeln!(out, "{failure}");
            }
            let _ = writeln!(
                out,
                "  decision trail of scenario \"{}\":",
                scenario.name.escape_debug()
            );
            let _ = write!(out, "{}", scenario.trail_text());
        }
        let ok = spec.scenarios.iter().filter(|s| s.passed()).count();
        let checks: usize = spec.scenarios.iter().map(|s| s.checks).sum();
        let verdict = if ok == spec.scenarios.len() {
            "ok"
        } else {
            "FAILED"
        };
        let _ = writeln!(
            out,
            "{}: {ok} of {} scenario(s) passed, {checks} check(s): {verdict}",
            spec.file,
            spec.scenarios.len()
        );
    }
    let verdict = if failed == 0 { "ok" } else { "FAILED" };
    let _ = writeln!(
        out,
        "test result: {verdict}. {passed} passed; {failed} failed"
    );
    u8::from(failed > 0)
}

fn print_error(out: &mut Stdout, format: Format, error: &BuildError) {
    match (format, error) {
        (Format::Json, _) => {
            let diagnostics = match error {
                BuildError::Invalid(found) => json!(found),
                _ => json!([]),
            };
            let doc = json!({
                "ok": false,
                "error": diagnostic::error_chain(error),
                "diagnostics": diagnostics,
            });
            let _ = writeln!(out, "{doc:#}");
        }
        (Format::Text, BuildError::Invalid(found)) => {
            let mut err = std::io::stderr().lock();
            // On a terminal, each problem shows its source line and a caret;
            // piped (CI logs, scripts), one plain line each.
            let snippets = std::io::IsTerminal::is_terminal(&err);
            let mut texts = std::collections::BTreeMap::new();
            for d in found {
                if snippets {
                    let text = texts
                        .entry(d.file.clone())
                        .or_insert_with(|| fs_err::read_to_string(&d.file).unwrap_or_default());
                    let _ = writeln!(err, "{}", diagnostic::with_snippet(d, text));
                } else {
                    let _ = writeln!(err, "{d}");
                }
            }
            let _ = writeln!(err, "error: {} problem(s) found", found.len());
        }
        (Format::Text, other) => {
            eprintln!("error: {}", diagnostic::error_chain(other));
        }
    }
}

/// A verifier input's bytes, or a message naming the file.
fn read_input(path: &std::path::Path) -> Result<Vec<u8>, String> {
    fs_err::read(path).map_err(|e| e.to_string())
}

/// A verifier input's text, or a message naming the file.
fn read_text(path: &std::path::Path) -> Result<String, String> {
    fs_err::read_to_string(path).map_err(|e| e.to_string())
}

/// Prints a verification's result: exit 0 when it holds, 1 otherwise.
fn print_audit(
    out: &mut Stdout,
    format: Format,
    result: Result<(String, serde_json::Value), String>,
) -> u8 {
    match (result, format) {
        (Ok((text, _)), Format::Text) => {
            let _ = writeln!(out, "{text}");
            0
        }
        (Ok((_, doc)), Format::Json) => {
            let _ = writeln!(out, "{doc:#}");
            0
        }
        (Err(why), Format::Text) => {
            eprintln!("error: {why}");
            1
        }
        (Err(why), Format::Json) => {
            let _ = writeln!(out, "{:#}", json!({ "ok": false, "error": why }));
            1
        }
    }
}

/// Runs one parsed command line; returns the exit code.
pub fn run(cli: &Cli) -> u8 {
    let mut out = Stdout::new();
    let code = match execute(cli, &mut out) {
        Ok(code) => code,
        Err(error) => {
            print_error(&mut out, cli.format, &error);
            error.exit_code()
        }
    };
    out.finish(code)
}

/// The config `--config` names, or the one found from the current folder up.
fn config_path(cli: &Cli) -> Result<PathBuf, BuildError> {
    match &cli.config {
        Some(path) => Ok(path.clone()),
        None => {
            let here = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
            pipeline::discover_config(&here)
        }
    }
}

fn execute(cli: &Cli, out: &mut Stdout) -> Result<u8, BuildError> {
    match &cli.command {
        Command::Validate { specs } => {
            let paths = if specs.is_empty() {
                Project::open(&config_path(cli)?)?.spec_files(&[])?
            } else {
                specs.clone()
            };
            let sources = pipeline::validate(&paths)?;
            let names: Vec<&str> = sources.iter().map(|s| s.path.as_str()).collect();
            match cli.format {
                Format::Json => {
                    let doc = json!({ "ok": true, "specs": names, "diagnostics": [] });
                    let _ = writeln!(out, "{doc:#}");
                }
                Format::Text => {
                    for name in names {
                        let _ = writeln!(out, "{name}: ok");
                    }
                }
            }
            Ok(0)
        }
        Command::Build {
            specs,
            out: out_dir,
            check,
            dry_run,
            force,
            jobs,
        } => {
            let project = Project::open(&config_path(cli)?)?;
            let options = BuildOptions {
                specs: specs.clone(),
                out_dir: out_dir.clone(),
                mode: if *check {
                    Mode::Check
                } else if *dry_run {
                    Mode::DryRun
                } else {
                    Mode::Write
                },
                force: *force,
                jobs: jobs.unwrap_or_else(|| {
                    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
                }),
            };
            let report = pipeline::build(&project, &options)?;
            print_report(out, cli.format, &report);
            Ok(u8::from(report.mode == Mode::Check && report.has_drift()))
        }
        Command::Bundle {
            specs,
            out: out_dir,
            check,
            verify,
            with_binary,
            jobs,
        } => {
            let project = Project::open(&config_path(cli)?)?;
            let options = BundleOptions {
                specs: specs.clone(),
                dir: check
                    .clone()
                    .or_else(|| out_dir.clone())
                    .unwrap_or_default(),
                check: check.is_some(),
                verify: *verify,
                with_binary: *with_binary,
                jobs: jobs.unwrap_or_else(|| {
                    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
                }),
            };
            let mut progress = Progress::new();
            let report = pipeline::bundle(&project, &options, &mut |done, total, id, step| {
                progress.show(done, total, id, step);
            })?;
            Ok(print_bundles(out, cli.format, &report))
        }
        Command::Test { specs } => {
            let paths = if specs.is_empty() {
                Project::open(&config_path(cli)?)?.spec_files(&[])?
            } else {
                specs.clone()
            };
            let report = pipeline::test(&paths, !specs.is_empty())?;
            Ok(print_tests(out, cli.format, &report))
        }
        Command::Backtest {
            old,
            new,
            signals,
            ledger,
            database_url,
            actions,
            max_new_refusals,
            max_new_interventions,
            max_action_increase,
            max_unreadable,
        } => {
            let recorded = match (signals, ledger, database_url) {
                (Some(file), ..) => Recorded::Signals(file.clone()),
                (_, Some(dir), _) => Recorded::Ledger(dir.clone()),
                (.., Some(url)) => Recorded::Database(url.clone()),
                (None, None, None) => match std::env::var("GOVERNOR_DATABASE_URL") {
                    Ok(url) if !url.is_empty() => Recorded::Database(url),
                    _ => {
                        return Err(BuildError::Usage(
                            "name the recorded inputs: --signals FILE, --ledger DIR or --database-url URL (or GOVERNOR_DATABASE_URL)".to_owned(),
                        ));
                    }
                },
            };
            if max_action_increase.is_some_and(|pct| !pct.is_finite() || pct < 0.0) {
                return Err(BuildError::Usage(
                    "--max-action-increase takes a finite percentage of 0 or more".to_owned(),
                ));
            }
            let settle = match actions {
                SettleArg::Succeed => Settle::Succeed,
                SettleArg::Fail => Settle::Fail,
            };
            let gates = Gates {
                max_new_refusals: *max_new_refusals,
                max_new_interventions: *max_new_interventions,
                max_action_increase: *max_action_increase,
                max_unreadable: *max_unreadable,
            };
            let report = pipeline::backtest(old, new, &recorded, settle, &gates)?;
            print_backtest(out, cli.format, &report);
            Ok(u8::from(report.crossed()))
        }
        Command::Schema { kind } => {
            let text = match kind {
                SchemaKind::Spec => SKU_SCHEMA,
                SchemaKind::Config => CONFIG_SCHEMA,
                SchemaKind::Test => SCENARIOS_SCHEMA,
            };
            let _ = writeln!(out, "{}", text.trim_end());
            Ok(0)
        }
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut command, "ggen", out);
            Ok(0)
        }
        Command::VerifyReceipt {
            receipt,
            proof,
            checkpoint,
            key,
        } => {
            let result = (|| {
                let receipt = read_input(receipt)?;
                let (proof, checkpoint, key) =
                    (read_text(proof)?, read_text(checkpoint)?, read_text(key)?);
                ggen_runtime_core::audit::verify_receipt(&receipt, &proof, &checkpoint, &key)
                    .map_err(|e| e.to_string())
            })();
            Ok(print_audit(out, cli.format, result.map(|(checkpoint, index)| {
                (
                    format!(
                        "ok: the receipt is entry {index} of `{}`, as its signed checkpoint of {} entries commits",
                        checkpoint.origin, checkpoint.size
                    ),
                    json!({ "ok": true, "origin": checkpoint.origin, "tree_size": checkpoint.size, "leaf_index": index }),
                )
            })))
        }
        Command::VerifyConsistency {
            old,
            new,
            proof,
            key,
        } => {
            let result = (|| {
                let (old, new) = (read_text(old)?, read_text(new)?);
                let (proof, key) = (read_text(proof)?, read_text(key)?);
                ggen_runtime_core::audit::verify_consistency(&old, &new, &proof, &key)
                    .map_err(|e| e.to_string())
            })();
            Ok(print_audit(out, cli.format, result.map(|(old, new)| {
                (
                    format!(
                        "ok: `{}` at {} entries extends itself at {} entries: nothing recorded was changed, removed or reordered",
                        new.origin, new.size, old.size
                    ),
                    json!({ "ok": true, "origin": new.origin, "first": old.size, "second": new.size }),
                )
            })))
        }
        Command::Man => {
            // A write error is kept by `out` and decides the exit code.
            let _ = clap_mangen::Man::new(<Cli as clap::CommandFactory>::command()).render(out);
            Ok(0)
        }
        Command::Explain { spec } => {
            match cli.format {
                Format::Text => {
                    let _ = write!(out, "{}", pipeline::explain(spec)?);
                }
                Format::Json => {
                    let _ = writeln!(out, "{:#}", pipeline::explain_json(spec)?);
                }
            }
            Ok(0)
        }
        Command::Init {
            id,
            runtime_path,
            force,
        } => {
            // A project is made here (or beside an explicit `--config`),
            // never in a parent that has a ggen.toml.
            let root = cli
                .config
                .as_deref()
                .and_then(std::path::Path::parent)
                .unwrap_or(std::path::Path::new(""));
            let done = pipeline::init(&InitOptions {
                root: root.to_owned(),
                id: id.clone(),
                runtime_path: runtime_path.clone(),
                force: *force,
            })?;
            if cli.format == Format::Json {
                let doc = json!({
                    "ok": true,
                    "new_project": done.new_project,
                    "written": done.written,
                    "next_steps": done.next_steps,
                });
                let _ = writeln!(out, "{doc:#}");
                return Ok(0);
            }
            for path in &done.written {
                let _ = writeln!(out, "wrote {path}");
            }
            if !done.new_project {
                let config = crate::load::display_path(&root.join(crate::config::FILE_NAME));
                let _ = writeln!(out, "`{config}` exists: added a spec to its project");
            }
            let _ = writeln!(out, "\nnext steps:");
            for step in &done.next_steps {
                let _ = writeln!(out, "  {step}");
            }
            Ok(0)
        }
    }
}

fn print_report(out: &mut Stdout, format: Format, report: &BuildReport) {
    let mut err = std::io::stderr().lock();
    for warning in &report.warnings {
        let _ = writeln!(err, "warning: {warning}");
    }
    if format == Format::Json {
        let drift = report.has_drift();
        let doc = json!({
            "ok": report.mode != Mode::Check || !drift,
            "mode": match report.mode { Mode::Write => "write", Mode::Check => "check", Mode::DryRun => "dry_run" },
            "drift": drift,
            "crates": report.plans,
            "foreign": report.foreign,
            "warnings": report.warnings,
            "diff": if report.mode == Mode::Check { report.diffs() } else { String::new() },
        });
        let _ = writeln!(out, "{doc:#}");
        return;
    }
    match report.mode {
        Mode::Check => {
            if report.has_drift() {
                let _ = write!(out, "{}", report.diffs());
                for plan in &report.plans {
                    for change in plan.changes.iter().filter(|c| c.op.is_drift()) {
                        let _ = writeln!(
                            err,
                            "stale: {}/{} ({})",
                            plan.dir,
                            change.path,
                            change.op.as_str()
                        );
                    }
                }
                for path in &report.foreign {
                    let _ = writeln!(err, "stale: {path} (not written by ggen)");
                }
                if report.crates_drift() {
                    let _ = writeln!(
                        err,
                        "error: generated files are out of date; run `ggen build`"
                    );
                }
                if !report.foreign.is_empty() {
                    let _ = writeln!(
                        err,
                        "error: the output folder holds what ggen did not write; move it out (`ggen build` leaves it alone)"
                    );
                }
            } else {
                let _ = writeln!(err, "{} crate(s) up to date", report.plans.len());
            }
        }
        Mode::DryRun => {
            for plan in &report.plans {
                for change in &plan.changes {
                    let hash = |h: &Option<String>| {
                        h.as_deref()
                            .map_or("-", |h| &h[..12.min(h.len())])
                            .to_owned()
                    };
                    let _ = writeln!(
                        out,
                        "{:<9} {}/{}  {} -> {}",
                        change.op.as_str(),
                        plan.dir,
                        change.path,
                        hash(&change.sha256_before),
                        hash(&change.sha256_after),
                    );
                }
            }
            for path in &report.foreign {
                let _ = writeln!(
                    out,
                    "{:<9} {path}  (not written by ggen: left alone)",
                    "foreign"
                );
            }
        }
        Mode::Write => {
            let applied = report.applied.unwrap_or_default();
            let _ = writeln!(
                err,
                "{} crate(s): {} file(s) written, {} deleted",
                report.plans.len(),
                applied.written,
                applied.deleted
            );
        }
    }
}

/// Progress of `bundle` on stderr: a bar redrawn in place on a terminal
/// when there are several specs, else one line per long step.
struct Progress {
    terminal: bool,
    drawn: bool,
}

impl Progress {
    fn new() -> Progress {
        use std::io::IsTerminal;
        Progress {
            terminal: std::io::stderr().is_terminal(),
            drawn: false,
        }
    }

    fn show(&mut self, done: usize, total: usize, id: &str, step: BundleStep) {
        let mut err = std::io::stderr().lock();
        if self.terminal && total > 1 {
            const WIDTH: usize = 24;
            let filled = WIDTH * done / total.max(1);
            let bar = format!("{}{}", "#".repeat(filled), "-".repeat(WIDTH - filled));
            // `\r` and erase-line: the bar replaces itself.
            let id = if id.is_empty() {
                String::new()
            } else {
                format!(" {id}")
            };
            let _ = write!(err, "\r\x1b[2K[{bar}] {done}/{total}{id} {}", step.as_str());
            if step == BundleStep::Done {
                let _ = writeln!(err);
            }
            let _ = err.flush();
            self.drawn = true;
        } else if matches!(step, BundleStep::Testing | BundleStep::BuildingBinary) {
            let _ = writeln!(
                err,
                "bundle: {id}: {} ({}/{total})",
                step.as_str(),
                done + 1
            );
        }
    }
}

/// Prints what `bundle` did; the exit code (1 when a check found a difference).
fn print_bundles(out: &mut Stdout, format: Format, report: &BundleReport) -> u8 {
    let outcomes = &report.outcomes;
    let verdict = |v: &Verdict| match v {
        Verdict::Same => ("same", String::new()),
        Verdict::Missing(detail) => ("missing", detail.clone()),
        Verdict::Tampered(detail) => ("tampered", detail.clone()),
        Verdict::Differs(detail) => ("differs", detail.clone()),
    };
    let failed = !report.extra.is_empty()
        || outcomes
            .iter()
            .any(|o| o.verdict.as_ref().is_some_and(|v| *v != Verdict::Same));
    if format == Format::Json {
        let bundles: Vec<serde_json::Value> = outcomes
            .iter()
            .map(|o| {
                let mut doc = json!({
                    "id": o.id, "name": o.name, "spec": o.spec,
                    "verified": o.verified, "binary": o.binary,
                });
                if let Some(w) = &o.written {
                    doc["tarball"] = json!(crate::load::display_path(&w.tarball));
                    doc["manifest"] = json!(crate::load::display_path(&w.manifest));
                    doc["sha256"] = json!(w.sha256);
                    doc["size"] = json!(w.size);
                }
                if let Some(v) = &o.verdict {
                    let (status, detail) = verdict(v);
                    doc["status"] = json!(status);
                    doc["detail"] = json!(detail);
                    // `--check` never rebuilds a binary (it is not reproducible).
                    doc["binary_rebuilt"] = json!(false);
                }
                doc
            })
            .collect();
        let doc = json!({ "ok": !failed, "bundles": bundles, "extra": report.extra });
        let _ = writeln!(out, "{doc:#}");
    } else {
        for o in outcomes {
            if let Some(w) = &o.written {
                let _ = writeln!(
                    out,
                    "{}  {} ({} bytes{})",
                    w.sha256,
                    crate::load::display_path(&w.tarball),
                    w.size,
                    if o.verified { ", tested" } else { "" }
                );
            }
            if let Some(v) = &o.verdict {
                let (status, detail) = verdict(v);
                let sep = if detail.is_empty() { "" } else { ": " };
                // A binary is recorded by hash, never rebuilt: say so, so
                // `same` is not read as "the binary is what the spec gives".
                let note = if o.binary && *v == Verdict::Same {
                    " (its binary is not rebuilt: only the sources, manifests and the binary's recorded hash were compared)"
                } else {
                    ""
                };
                let _ = writeln!(out, "{status}: {}{sep}{detail}{note}", o.name);
            }
        }
        for name in &report.extra {
            let _ = writeln!(out, "extra: {name}: no spec makes this file");
        }
        if failed {
            let _ = writeln!(
                std::io::stderr(),
                "error: bundles differ from the specs; run `ggen bundle --out DIR` again"
            );
        }
    }
    u8::from(failed)
}
