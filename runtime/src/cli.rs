//! The command line of every generated governor binary.
//!
//! A generated `main.rs` is one line: `ggen_runtime::cli::main(&PACK)`.

use std::fmt::Write as _;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::sku::{PolicyPack, Sku};

#[derive(Debug, Parser)]
#[command(about = "A ggen-generated governor service.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the policy pack: thresholds per profile and the actions.
    Policy,
}

/// Parses the process arguments and runs the command.
pub fn main<P: PolicyPack>(pack: &'static P) -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Policy => {
            print!("{}", policy_table(pack.sku()));
            ExitCode::SUCCESS
        }
    }
}

fn threshold(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// The thresholds of every profile as aligned text.
pub fn policy_table(sku: &Sku) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{} {} ({})", sku.name, sku.version, sku.id);
    for profile in sku.profiles {
        let budget = profile
            .max_actions_per_hour
            .map_or_else(|| "unlimited".to_owned(), |n| n.to_string());
        let _ = writeln!(
            out,
            "\nprofile {}: cooldown {}s, at most {budget} actions per hour",
            profile.name, profile.cooldown_s
        );
        let _ = writeln!(
            out,
            "  {:<24} {:>6} {:>12} {:>12} {:>12} {:>12} {:>5}  actions",
            "signal", "dir", "warn", "intervene", "refuse", "clear", "dwell"
        );
        for rule in profile.rules {
            let signal = sku.signal(rule.signal);
            let actions: Vec<&str> = rule.actions.iter().map(|a| sku.action(*a).name).collect();
            let _ = writeln!(
                out,
                "  {:<24} {:>6} {:>12} {:>12} {:>12} {:>12} {:>5}  {}",
                signal.name,
                rule.direction.as_str(),
                threshold(rule.warn),
                threshold(rule.intervene),
                threshold(rule.refuse),
                rule.clear,
                rule.dwell,
                actions.join(", ")
            );
        }
    }
    out
}
