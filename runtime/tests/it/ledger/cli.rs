//! The ledger commands' refusals of folders that are not ledgers, and
//! their help.

use std::process::ExitCode;

use ggen_runtime::sku::PolicyPack as _;

use super::{fast_options, populated, tenant};
use crate::governor::sku::OPEN;

fn run(args: &[&str]) -> ExitCode {
    let mut all = vec!["governor", "ledger"];
    all.extend_from_slice(args);
    ggen_runtime::cli::run(&OPEN, all)
}

/// A folder with no ledger files is refused by verify and show (it would
/// read as `ok: 0 receipts`); an empty ledger a start created is not.
#[test]
fn verify_and_show_refuse_a_folder_that_is_not_a_ledger() {
    let other = tempfile::tempdir().unwrap();
    fs_err::write(other.path().join("passwd"), "root:x:0:0\n").unwrap();
    let path = other.path().to_str().unwrap();
    assert_eq!(run(&["verify", "--ledger", path]), ExitCode::from(1));
    assert_eq!(run(&["show", "--ledger", path]), ExitCode::from(1));
    let empty = tempfile::tempdir().unwrap();
    drop(ggen_runtime::ledger::file::FileLedger::open(empty.path(), fast_options()).unwrap());
    let path = empty.path().to_str().unwrap();
    assert_eq!(run(&["verify", "--ledger", path]), ExitCode::SUCCESS);
}

/// `ledger copy` refuses a destination inside the source's folder, and a
/// folder holding files but no ledger; a new folder is fine.
#[test]
fn copy_refuses_a_destination_inside_the_source_or_holding_other_files() {
    let source = populated(&["acme"], 2);
    let from = source.path().to_str().unwrap();
    let inside = source.path().join("copy");
    assert_eq!(
        run(&["copy", "--from", from, "--to", inside.to_str().unwrap()]),
        ExitCode::from(1)
    );
    assert!(!inside.exists());
    let other = tempfile::tempdir().unwrap();
    fs_err::write(other.path().join("notes.txt"), "mine\n").unwrap();
    assert_eq!(
        run(&[
            "copy",
            "--from",
            from,
            "--to",
            other.path().to_str().unwrap()
        ]),
        ExitCode::from(1)
    );
    assert!(!other.path().join("LOCK").exists());
    let fresh = tempfile::tempdir().unwrap();
    let to = fresh.path().join("copy");
    assert_eq!(
        run(&["copy", "--from", from, "--to", to.to_str().unwrap()]),
        ExitCode::SUCCESS
    );
    let copy = ggen_runtime::ledger::file::FileLedger::open(&to, fast_options()).unwrap();
    use ggen_runtime::ledger::Ledger as _;
    assert_eq!(copy.head(&tenant("acme")).seq, 2);
}

/// The read-only commands' `--ledger` help does not promise to create it.
#[test]
fn read_only_commands_do_not_promise_to_create_the_ledger() {
    for name in ["verify", "checkpoint", "prove", "consistency", "show"] {
        let mut command = ggen_runtime::cli::command(OPEN.sku());
        let ledger = command.find_subcommand_mut("ledger").unwrap();
        let help = ledger
            .find_subcommand_mut(name)
            .unwrap()
            .render_long_help()
            .to_string();
        assert!(!help.contains("created if missing"), "{name}: {help}");
        assert!(help.contains("read-only: it must exist"), "{name}: {help}");
    }
}
