//! The command line of every generated governor binary.
//!
//! A generated `main.rs` is one line: `ggen_runtime::cli::main(&PACK)`.

use crate::report::error_chain;
use std::fmt::Write as _;
use std::io::{self, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};

use crate::actuator::{Actuators, Clock, Dispatcher, DispatcherOptions};
use crate::clock::Timestamp;
use crate::ledger::file;
use crate::ledger::{CheckpointProblem, Ledger as _, LedgerError, Record, VerifyOptions};
use crate::pg::PgLedger;
use crate::pg::copy::CopyError;
use crate::registry::{
    CheckpointMismatch, Registry, RegistryError, checkpoint_judge, replay_checkpoint,
};
use crate::replay;
use crate::sku::{PolicyPack, Sku};
use crate::store::{Location, StoreArgs, Writers};
use crate::tenant::TenantId;

/// The command line; its name, version and about come from the SKU
/// ([`command`]), not from this crate.
#[derive(Debug, Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the policy pack: thresholds per profile and the actions.
    Policy,
    /// Feed recorded signals (JSON Lines) through the governor offline.
    ///
    /// The clock is taken from the signals; every action goes through the
    /// `log` adapter unless `--live-actions` is given. Prints one JSON line
    /// per tenant with its final state.
    Replay {
        /// The JSON Lines file of signals and entitlement events.
        #[arg(long, value_name = "FILE")]
        signals: PathBuf,
        #[command(flatten)]
        store: StoreArgs,
        /// Really run the actions (webhooks, commands) and record their
        /// results; webhooks use `GOVERNOR_WEBHOOK_URL` / `GOVERNOR_WEBHOOK_SECRET`.
        #[arg(long)]
        live_actions: bool,
        /// Signed checkpoints: one is published at the end of the replay.
        #[command(flatten)]
        transparency: crate::transparency::publish::PublishArgs,
    },
    /// Run the HTTP service (secrets from `GOVERNOR_*` environment variables).
    Serve(Box<crate::ingress::service::ServeArgs>),
    /// Inspect a ledger.
    Ledger {
        #[command(subcommand)]
        command: LedgerCommand,
    },
    /// Make an Ed25519 key for signing ledger checkpoints: the private key
    /// to FILE (mode 0600, never overwritten), the public key, for
    /// auditors, to FILE.pub.
    Keygen {
        /// Where to write the private key.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// The key's name, which verifiers see (default: the SKU's id).
        #[arg(long)]
        name: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum LedgerCommand {
    /// Verify every chain and the checkpoint against them; exit 1 naming
    /// the first bad tenant and seq, or the first tenant the checkpoint
    /// contradicts.
    Verify {
        #[command(flatten)]
        store: StoreArgs,
        /// The archive retention moved the oldest segments (a PostgreSQL
        /// ledger: partitions) to (`s3://bucket/prefix`, `gs://bucket/prefix`,
        /// a directory or `file:///dir`): the archived ones and the local
        /// log are verified as one log from genesis, and the checkpoint's
        /// states replayed from it.
        #[arg(long, value_name = "URL")]
        archive: Option<String>,
        /// Also check the ledger against every signed checkpoint file in
        /// DIR (published earlier, see `ledger checkpoint`): exit 1 naming
        /// the first one it contradicts (truncated, restored from an older
        /// copy, or receipts changed, removed or reordered). Needs `--key`.
        #[arg(long, value_name = "DIR", requires = "key")]
        checkpoints: Option<PathBuf>,
        /// The public key the checkpoints are signed with (`keygen`'s FILE.pub).
        #[arg(long, value_name = "FILE", requires = "checkpoints")]
        key: Option<PathBuf>,
    },
    /// Print the ledger's signed checkpoint (C2SP signed note: origin, tree
    /// size, Merkle root), to publish where the ledger's operator cannot
    /// change it.
    Checkpoint {
        #[command(flatten)]
        store: StoreArgs,
        /// The archive retention moved the oldest segments (partitions) to:
        /// the tree is built from genesis over the archived ones and the local log.
        #[arg(long, value_name = "URL")]
        archive: Option<String>,
        /// The private key (`keygen`); its name is the checkpoint's origin.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
    },
    /// Print the inclusion proof (JSON) of one receipt in the ledger's
    /// Merkle tree, for `ggen verify-receipt`.
    Prove {
        #[command(flatten)]
        store: StoreArgs,
        /// The archive retention moved the oldest segments (partitions) to:
        /// the tree is built from genesis over the archived ones and the local log.
        #[arg(long, value_name = "URL")]
        archive: Option<String>,
        /// The receipt's tenant.
        #[arg(long)]
        tenant: String,
        /// The receipt's seq.
        #[arg(long)]
        seq: u64,
        /// The tree size to prove against (a published checkpoint's;
        /// default: the whole ledger).
        #[arg(long, value_name = "N")]
        size: Option<u64>,
        /// Also write the receipt's stored bytes to FILE.
        #[arg(long, value_name = "FILE")]
        receipt_out: Option<PathBuf>,
    },
    /// Print the consistency proof (JSON) between two tree sizes, for
    /// `ggen verify-consistency`.
    Consistency {
        #[command(flatten)]
        store: StoreArgs,
        /// The archive retention moved the oldest segments (partitions) to:
        /// the tree is built from genesis over the archived ones and the local log.
        #[arg(long, value_name = "URL")]
        archive: Option<String>,
        /// The older tree size.
        #[arg(long, value_name = "N")]
        from: u64,
        /// The newer tree size.
        #[arg(long, value_name = "N")]
        to: u64,
    },
    /// Print the stored receipts, one JSON object per line.
    Show {
        #[command(flatten)]
        store: StoreArgs,
        /// Only this tenant's receipts, in seq order.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Copy every receipt into an empty ledger, verifying each chain on
    /// the way and the copy at the end: a directory into PostgreSQL (to
    /// scale out) or back. Stop the governor writing the destination first.
    Copy {
        /// The source: a ledger directory or a `postgres://` URL (read-only).
        #[arg(long, value_name = "DIR|URL")]
        from: String,
        /// The destination, empty: a directory or a `postgres://` URL.
        #[arg(long, value_name = "DIR|URL")]
        to: String,
    },
}

/// What a command failed with: (exit code, message for stderr).
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    /// Input rejected: a bad file, a tampered ledger (exit 1).
    fn rejected(message: impl Into<String>) -> Failure {
        Failure {
            code: 1,
            message: message.into(),
        }
    }

    /// Something unexpected: I/O, a bug (exit 2).
    fn internal(error: &dyn std::error::Error) -> Failure {
        Failure {
            code: 2,
            message: error_chain(error),
        }
    }
}

fn ledger_failure(error: &LedgerError) -> Failure {
    match error {
        LedgerError::Io { .. } => Failure::internal(error),
        _ => Failure::rejected(error_chain(error)),
    }
}

/// The governor's command line, named for its SKU: `--version` prints the
/// binary name, the SKU's version, its id and the SHA-256 of the spec it was
/// generated from, so a running binary can be matched to its spec.
pub fn command(sku: &'static Sku) -> clap::Command {
    let name = format!("{}-governor", sku.id.replace('_', "-"));
    let version = format!(
        "{} (sku {}, spec sha256 {})",
        sku.version, sku.id, sku.spec_sha256
    );
    let about = format!(
        "{}: a ggen-generated governor service for SKU `{}`.",
        sku.name, sku.id
    );
    // The shared `--ledger` help speaks for the commands that write; the
    // read-only ones refuse a missing folder.
    let read_only = |command: clap::Command| {
        command.mut_arg("ledger", |arg| {
            arg.help("The ledger directory (read-only: it must exist)")
        })
    };
    Cli::command()
        .name(name)
        .version(version)
        .about(about)
        .mut_subcommand("ledger", |ledger| {
            ["verify", "checkpoint", "prove", "consistency", "show"]
                .into_iter()
                .fold(ledger, |ledger, name| {
                    ledger.mut_subcommand(name, read_only)
                })
        })
}

/// Parses the process arguments and runs the command.
pub fn main<P: PolicyPack>(pack: &'static P) -> ExitCode {
    run(pack, std::env::args_os())
}

/// [`main`] with the arguments given (the first is the program name):
/// what tests run in-process. A usage error prints clap's message and
/// exits, as from the command line.
pub fn run<P: PolicyPack>(
    pack: &'static P,
    args: impl IntoIterator<Item = impl Into<std::ffi::OsString> + Clone>,
) -> ExitCode {
    let cli = match command(pack.sku()).try_get_matches_from(args) {
        Ok(matches) => Cli::from_arg_matches(&matches),
        Err(error) => Err(error),
    }
    .unwrap_or_else(|error| error.exit());
    let result = match cli.command {
        Command::Policy => emit(&policy_table(pack.sku())).map(|()| ExitCode::SUCCESS),
        Command::Replay {
            signals,
            store,
            live_actions,
            transparency,
        } => located(&store).and_then(|ledger| {
            let publisher = transparency
                .publisher(std::env::var(crate::transparency::publish::KEY_ENV).ok())
                .map_err(Failure::rejected)?;
            run_replay(pack, &signals, &ledger, live_actions, publisher)
        }),
        Command::Serve(args) if args.check => serve_check(pack, &args),
        Command::Serve(args) => Ok(crate::ingress::service::run(pack, *args)),
        Command::Ledger {
            command:
                LedgerCommand::Verify {
                    store,
                    archive,
                    checkpoints,
                    key,
                },
        } => located(&store).and_then(|ledger| {
            let verified = verify(pack, &ledger, archive.as_deref())?;
            match (checkpoints, key) {
                (Some(dir), Some(key)) if verified == ExitCode::SUCCESS => {
                    check_checkpoints(&ledger, archive.as_deref(), &dir, &key)
                }
                _ => Ok(verified),
            }
        }),
        Command::Ledger {
            command:
                LedgerCommand::Checkpoint {
                    store,
                    archive,
                    key,
                },
        } => located(&store).and_then(|ledger| {
            let signer = crate::transparency::signer(&key).map_err(|e| rejected_chain(&e))?;
            let archive = open_archive(archive.as_deref())?;
            let (_, note) = crate::transparency::checkpoint(source(&ledger, &archive), &signer)
                .map_err(|e| rejected_chain(&e))?;
            emit(&note).map(|()| ExitCode::SUCCESS)
        }),
        Command::Ledger {
            command:
                LedgerCommand::Prove {
                    store,
                    archive,
                    tenant,
                    seq,
                    size,
                    receipt_out,
                },
        } => located(&store).and_then(|ledger| {
            let tenant = TenantId::new(&tenant).map_err(|e| Failure::rejected(e.to_string()))?;
            let archive = open_archive(archive.as_deref())?;
            let (proof, bytes) =
                crate::transparency::prove(source(&ledger, &archive), &tenant, seq, size)
                    .map_err(|e| rejected_chain(&e))?;
            if let Some(path) = receipt_out {
                fs_err::write(&path, &bytes).map_err(|e| Failure::rejected(e.to_string()))?;
            }
            let text = serde_json::to_string_pretty(&proof).map_err(|e| Failure::internal(&e))?;
            emit(&format!("{text}\n")).map(|()| ExitCode::SUCCESS)
        }),
        Command::Ledger {
            command:
                LedgerCommand::Consistency {
                    store,
                    archive,
                    from,
                    to,
                },
        } => located(&store).and_then(|ledger| {
            let archive = open_archive(archive.as_deref())?;
            let proof = crate::transparency::consistency(source(&ledger, &archive), from, to)
                .map_err(|e| rejected_chain(&e))?;
            let text = serde_json::to_string_pretty(&proof).map_err(|e| Failure::internal(&e))?;
            emit(&format!("{text}\n")).map(|()| ExitCode::SUCCESS)
        }),
        Command::Ledger {
            command: LedgerCommand::Show { store, tenant },
        } => located(&store).and_then(|ledger| show(&ledger, tenant.as_deref())),
        Command::Keygen { out, name } => keygen(&out, name.as_deref().unwrap_or(pack.sku().id)),
        Command::Ledger {
            command: LedgerCommand::Copy { from, to },
        } => Location::parse(&from)
            .and_then(|from| Ok((from, Location::parse(&to)?)))
            .map_err(Failure::rejected)
            .and_then(|(from, to)| copy(&from, &to)),
    };
    result.unwrap_or_else(|failure| report(&mut io::stderr(), &failure))
}

/// Writes `failure` to `err` and returns its exit code. A stderr that
/// cannot be written (a closed pipe: `… 2>&1 | head -c5`) does not change
/// the exit code, and never panics as `eprintln!` would.
fn report(err: &mut dyn io::Write, failure: &Failure) -> ExitCode {
    let _ = writeln!(err, "error: {}", failure.message);
    ExitCode::from(failure.code)
}

/// The archive at `url`, if one is given.
fn open_archive(url: Option<&str>) -> Result<Option<crate::archive::Archive>, Failure> {
    url.map(crate::archive::Archive::open)
        .transpose()
        .map_err(|e| rejected_chain(&e))
}

/// The ledger at `location` read from genesis, with its `archive`.
fn source<'a>(
    location: &'a Location,
    archive: &'a Option<crate::archive::Archive>,
) -> crate::transparency::Source<'a> {
    crate::transparency::Source {
        location,
        archive: archive.as_ref(),
    }
}

/// A refusal with `error`'s whole cause chain (exit 1).
fn rejected_chain(error: &(dyn std::error::Error + 'static)) -> Failure {
    Failure::rejected(error_chain(error))
}

/// `ledger verify --checkpoints DIR --key FILE`: after the chains, the
/// ledger against every published checkpoint.
fn check_checkpoints(
    location: &Location,
    archive: Option<&str>,
    dir: &Path,
    key: &Path,
) -> Result<ExitCode, Failure> {
    let verifier = crate::transparency::verifier(key).map_err(|e| rejected_chain(&e))?;
    let archive = open_archive(archive)?;
    match crate::transparency::check(source(location, &archive), dir, &verifier) {
        Ok(count) => {
            emit(&format!(
                "ok: the ledger extends every one of the {count} checkpoint(s) in `{}`\n",
                dir.display()
            ))?;
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => Err(rejected_chain(&error)),
    }
}

/// `keygen`: a fresh Ed25519 key named `name`, its private half to `out`
/// (0600, created, fsynced), its public half to `out.pub`.
fn keygen(out: &std::path::Path, name: &str) -> Result<ExitCode, Failure> {
    use fs_err::os::unix::fs::OpenOptionsExt as _;
    use std::io::{Read as _, Write as _};
    crate::note::check_name(name)
        .map_err(|e| Failure::rejected(format!("key name `{name}`: {e}")))?;
    let public = {
        let mut path = out.as_os_str().to_owned();
        path.push(".pub");
        PathBuf::from(path)
    };
    for path in [out, public.as_path()] {
        if fs_err::symlink_metadata(path).is_ok() {
            return Err(Failure::rejected(format!(
                "`{}` already exists: keygen never overwrites a key",
                path.display()
            )));
        }
    }
    let mut seed = [0u8; 32];
    fs_err::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut seed))
        .map_err(|e| Failure::internal(&e))?;
    let signer = crate::note::NoteSigner::from_seed(name, seed)
        .map_err(|e| Failure::rejected(format!("key name `{name}`: {e}")))?;
    seed.fill(0);
    let write = |path: &std::path::Path, text: String, mode: u32| -> Result<(), Failure> {
        let mut file = fs_err::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .map_err(|e| Failure::rejected(e.to_string()))?;
        file.write_all(format!("{text}\n").as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| Failure::internal(&e))
    };
    write(out, signer.to_text(), 0o600)?;
    write(&public, signer.verifier().to_text(), 0o644)?;
    emit(&format!(
        "wrote {} (the private key: keep it secret) and {} (the public key, for auditors):\n{}\n",
        out.display(),
        public.display(),
        signer.verifier().to_text()
    ))?;
    Ok(ExitCode::SUCCESS)
}

/// `serve --check`: what `serve` would start with on stdout (exit 0), or
/// every problem on stderr, one a line (exit 1). Opens nothing.
fn serve_check(
    pack: &'static dyn PolicyPack,
    args: &crate::ingress::service::ServeArgs,
) -> Result<ExitCode, Failure> {
    use crate::ingress::service::{ServeError, check};
    match check(pack, args) {
        Ok(text) => emit(&text).map(|()| ExitCode::SUCCESS),
        Err(ServeError::Preflight(problems)) => {
            let mut text = format!(
                "error: `serve` would refuse to start: {} problem{}\n",
                problems.0.len(),
                if problems.0.len() == 1 { "" } else { "s" }
            );
            for problem in &problems.0 {
                let _ = writeln!(text, "  - {problem}");
            }
            eprint!("{text}");
            Ok(ExitCode::from(1))
        }
        Err(error) => Err(Failure {
            code: error.exit_code(),
            message: error_chain(&error),
        }),
    }
}

/// Where the ledger of a command is; a usage error (exit 1) when unnamed.
fn located(store: &StoreArgs) -> Result<Location, Failure> {
    store.location().map_err(Failure::rejected)
}

fn run_replay<P: PolicyPack>(
    pack: &'static P,
    signals: &Path,
    location: &Location,
    live_actions: bool,
    publisher: Option<crate::transparency::publish::Publisher>,
) -> Result<ExitCode, Failure> {
    let input = fs_err::File::open(signals).map_err(|e| Failure::rejected(e.to_string()))?;
    let ledger = location
        .open(Writers::Exclusive, &mut |warning| {
            eprintln!("warning: {warning}")
        })
        .map_err(|e| ledger_failure(&e))?;
    if publisher.is_some() && ledger.tree().is_none() {
        return Err(Failure::rejected(format!(
            "signed checkpoints need a ledger that keeps its Merkle tree: `{}` does not (its first receipts were archived before it kept one)",
            location.display()
        )));
    }
    let registry = Arc::new(Registry::new(pack, ledger));
    let stats = registry
        .recover()
        .map_err(|e| Failure::rejected(error_chain(&e)))?;
    if let Some(mismatch) = &stats.checkpoint_rejected {
        eprintln!(
            "warning: checkpoint contradicts the ledger ({mismatch}): replayed every receipt instead"
        );
    }
    for tenant in &stats.quarantined {
        let why = registry.quarantined(tenant).unwrap_or_default();
        eprintln!("warning: tenant `{tenant}` quarantined, its lines are refused: {why}");
    }
    let summary = if live_actions {
        replay_live(&registry, BufReader::new(input))?
    } else {
        replay::run(&registry, BufReader::new(input)).map_err(|e| Failure::internal(&e))?
    };
    if summary.unsettled > 0 {
        eprintln!(
            "warning: {} actions still running when the replay stopped waiting",
            summary.unsettled
        );
    }
    // A checkpoint makes the next open of this ledger fast.
    registry.checkpoint().map_err(|e| Failure::internal(&e))?;
    if let Some(publisher) = publisher {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Failure::internal(&e))?;
        let published = runtime
            .block_on(async {
                tokio::time::timeout(
                    Duration::from_secs(30),
                    publisher.publish(registry.ledger()),
                )
                .await
            })
            .map_err(|_| Failure {
                code: 2,
                message: "the signed checkpoint was not published within 30 s".to_owned(),
            })?
            .map_err(|e| Failure::internal(&e))?;
        eprintln!(
            "signed checkpoint of {} receipts published to {}",
            published.size,
            publisher.sinks().join(", ")
        );
    }
    for bad in &summary.bad_lines {
        eprintln!("{}: {bad}", signals.display());
    }
    let mut text = String::new();
    for tenant in &summary.tenants {
        let line = serde_json::to_string(tenant).map_err(|e| Failure::internal(&e))?;
        let _ = writeln!(text, "{line}");
    }
    emit(&text)?;
    Ok(if summary.bad_lines.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `replay --live-actions`: a tokio runtime for the dispatcher, whose clock
/// follows the replayed lines.
fn replay_live(
    registry: &Arc<Registry>,
    input: impl std::io::BufRead,
) -> Result<replay::Summary, Failure> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::internal(&e))?;
    let actuators = Actuators::from_env().map_err(|e| Failure::internal(&e))?;
    let options = DispatcherOptions {
        clock: Clock::manual(Timestamp(0)),
        ..DispatcherOptions::default()
    };
    // Long enough for any action's attempts and backoffs, and its undo's.
    let backoff = options.backoff;
    let wait = registry
        .pack()
        .sku()
        .actions
        .iter()
        .map(|action| backoff.worst_case(action))
        .max()
        .unwrap_or_default()
        .saturating_mul(2)
        + Duration::from_secs(1);
    let dispatcher = Dispatcher::new(runtime.handle().clone(), actuators, options);
    runtime
        .block_on(replay::run_live(registry, input, &dispatcher, wait))
        .map_err(|e| Failure::internal(&e))
}

fn verify(
    pack: &'static dyn PolicyPack,
    location: &Location,
    archive: Option<&str>,
) -> Result<ExitCode, Failure> {
    if let Location::Dir(dir) = location {
        ledger_dir(dir)?;
    }
    let (text, ok) = match (location, archive) {
        (Location::Dir(dir), Some(url)) => {
            let archive = crate::archive::Archive::open(url)
                .map_err(|e| Failure::rejected(error_chain(&e)))?;
            return verify_archived(pack, dir, &archive);
        }
        (Location::Dir(dir), None) => verify_report(pack, dir),
        (Location::Database(url), Some(archive)) => {
            let archive = crate::archive::Archive::open(archive)
                .map_err(|e| Failure::rejected(error_chain(&e)))?;
            verify_database_report(pack, url, Some(&archive))
        }
        (Location::Database(url), None) => verify_database_report(pack, url, None),
    }
    .map_err(|e| ledger_failure(&e))?;
    emit(&text)?;
    Ok(verdict(ok))
}

/// `ledger verify`'s exit: 0 when everything verified, else 1.
fn verdict(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// What `ledger verify` prints for the ledger in `dir` (read-only, without
/// its lock): one line on the chains, and one more when the checkpoint
/// contradicts them; and whether everything verified (exit 0, else 1).
pub fn verify_report(
    pack: &'static dyn PolicyPack,
    dir: &Path,
) -> Result<(String, bool), LedgerError> {
    // After retention the log before the anchor is archived: the chains
    // verify from the anchor's heads, the checkpoint's states cannot be
    // replayed without the archive.
    let anchor = file::read_anchor(dir)?;
    let stored = match &anchor {
        Some(_) => None,
        None => crate::ledger::inspect::stored_checkpoint(dir)?,
    };
    let (mut text, ok) = verify_text(
        pack,
        stored,
        |visit| file::scan_dir(dir, visit),
        |options| file::verify_dir_with(dir, options),
    )?;
    if let Some(anchor) = anchor {
        text.push_str(&format!(
            "note: segments before {} ({} receipts) are archived: chains verified from the anchor's heads, checkpoint states not replayed (give --archive URL to verify from genesis)\n",
            anchor.segment, anchor.records
        ));
    }
    leftovers_note(dir, &mut text)?;
    Ok((text, ok))
}

/// Names the segment files older than the anchor left in `dir`: not part
/// of the log, so neither verified nor shown (the next open removes them).
fn leftovers_note(dir: &Path, text: &mut String) -> Result<(), LedgerError> {
    let leftovers = crate::ledger::inspect::leftovers(dir)?;
    if !leftovers.is_empty() {
        let names: Vec<String> = leftovers
            .iter()
            .map(|path| format!("`{}`", path.display()))
            .collect();
        let _ = writeln!(
            text,
            "note: {} older than the anchor's first local segment: not part of the log (left by an interrupted retention cut, or planted), not verified nor shown; the next start removes it",
            names.join(", ")
        );
    }
    Ok(())
}

/// `ledger verify --archive`: the archived segments and the local log of
/// the ledger in `dir` as one log from genesis, and the checkpoint's
/// states replayed from it.
fn verify_archived(
    pack: &'static dyn PolicyPack,
    dir: &Path,
    archive: &crate::archive::Archive,
) -> Result<ExitCode, Failure> {
    let failed = |e: crate::archive::ArchiveError| Failure::internal(&e);
    let mut scan_fetch = archive.fetcher().map_err(failed)?;
    let mut verify_fetch = archive.fetcher().map_err(failed)?;
    let (text, ok) = verify_text(
        pack,
        crate::ledger::inspect::stored_checkpoint(dir).map_err(|e| ledger_failure(&e))?,
        |visit| file::scan_with_archive(dir, &mut scan_fetch, visit),
        |options| file::verify_with_archive(dir, options, &mut verify_fetch),
    )
    .map_err(|e| ledger_failure(&e))?;
    let mut text = text;
    leftovers_note(dir, &mut text).map_err(|e| ledger_failure(&e))?;
    emit(&text)?;
    Ok(verdict(ok))
}

/// [`verify_report`] for a PostgreSQL ledger (read-only, beside a running
/// governor): the same chains, checkpoint judge and replay.
pub fn verify_database_report(
    pack: &'static dyn PolicyPack,
    url: &str,
    archive: Option<&crate::archive::Archive>,
) -> Result<(String, bool), LedgerError> {
    let ledger = PgLedger::open_read_only(url)?;
    let anchor = ledger.anchor()?;
    let fetcher = || {
        archive
            .map(crate::archive::Archive::fetcher)
            .transpose()
            .map_err(|e| LedgerError::Io {
                path: PathBuf::from("archive"),
                source: std::io::Error::other(error_chain(&e)),
            })
    };
    let (mut scan_fetch, mut verify_fetch, mut states_fetch) = (fetcher()?, fetcher()?, fetcher()?);
    // From genesis: the archived partitions (when given) and the local log.
    let scan = |fetch: &mut Option<_>,
                visit: &mut dyn FnMut(&Record) -> Result<(), LedgerError>| {
        match fetch {
            Some(fetch) => ledger.scan_with_archive(fetch, visit),
            None => ledger.scan(visit),
        }
    };
    // After retention without the archive: the chains verify from the
    // anchor's heads, states cannot be replayed.
    let replayable = anchor.is_none() || archive.is_some();
    let (mut text, mut ok) = verify_text(
        pack,
        if replayable { ledger.stored()? } else { None },
        |visit| scan(&mut scan_fetch, visit),
        |options| match &mut verify_fetch {
            Some(fetch) => ledger.verify_with_archive(options, fetch),
            None => ledger.verify_with(options),
        },
    )?;
    if let Some(anchor) = anchor.as_ref().filter(|_| !replayable) {
        text.push_str(&format!(
            "note: partitions before {} ({} receipts) are archived: chains verified from the anchor's heads, checkpoint and tenant states not replayed (give --archive URL to verify from genesis)\n",
            anchor.partition, anchor.records
        ));
    }
    // The states replicas stored beside the heads, against what each
    // tenant's receipts replay to (only where the chains hold).
    let states = if replayable {
        ledger.stored_states()?
    } else {
        Default::default()
    };
    if ok && !states.is_empty() {
        let judged =
            crate::registry::replay_states(pack, &states, |visit| scan(&mut states_fetch, visit));
        let problem = match judged {
            Ok(Ok(())) => None,
            Ok(Err(mismatch)) => Some(mismatch.to_string()),
            Err(error) => Some(format!(
                "cannot replay the receipts: {}",
                error_chain(&error)
            )),
        };
        if let Some(problem) = problem {
            let _ = writeln!(
                text,
                "a stored tenant state contradicts the chains: {problem} (replicas refuse that tenant until it is repaired)"
            );
            ok = false;
        }
    }
    Ok((text, ok))
}

/// The text and verdict of `ledger verify` for a ledger with the `stored`
/// checkpoint, read by `scan` and verified by `verify`.
///
/// Since this is the auditor's tool, besides the heads and ids (the judge)
/// the log is replayed up to the checkpoint's mark and every tenant's state
/// compared, which catches a blob that keeps every head but rewrites a
/// state. The replay runs on its own thread beside the chain verification
/// (it needs the blob, not the heads).
fn verify_text(
    pack: &'static dyn PolicyPack,
    stored: Option<crate::ledger::StoredCheckpoint>,
    scan: impl FnOnce(&mut dyn FnMut(&Record) -> Result<(), LedgerError>) -> Result<(), LedgerError>
    + Send,
    verify: impl FnOnce(&VerifyOptions<'_>) -> Result<crate::ledger::VerifyReport, LedgerError>,
) -> Result<(String, bool), LedgerError> {
    std::thread::scope(|threads| {
        let replay =
            stored.map(|stored| threads.spawn(move || replay_checkpoint(pack, &stored, scan)));
        let judge = checkpoint_judge(pack);
        let options = VerifyOptions {
            cancel: None,
            checkpoint: Some(&judge),
            sku: Some(pack.sku().id),
        };
        let report = verify(&options)?;
        Ok(report_text(report, replay.map(|thread| thread.join())))
    })
}

/// The text and verdict of `ledger verify`, given the chains' report and
/// the joined replay up to the checkpoint (if there is one).
fn report_text(
    mut report: crate::ledger::VerifyReport,
    replay: Option<std::thread::Result<Result<Result<(), CheckpointMismatch>, RegistryError>>>,
) -> (String, bool) {
    let replayed = replay.map(|joined| match joined {
        Ok(Ok(outcome)) => outcome.err(),
        Ok(Err(error)) => Some(CheckpointMismatch {
            tenant: None,
            reason: format!(
                "cannot replay the log up to the checkpoint: {}",
                error_chain(&error)
            ),
        }),
        Err(_) => Some(CheckpointMismatch {
            tenant: None,
            reason: "the replay up to the checkpoint panicked".to_owned(),
        }),
    });
    // Only where the chains hold up to the mark does the replay prove anything.
    if report.first_bad.is_none() && report.checkpoint.is_none() {
        report.checkpoint = replayed.flatten().map(CheckpointProblem::from);
    }
    let mut out = String::new();
    match &report.first_bad {
        None => {
            let _ = writeln!(
                out,
                "ok: {} receipts in {} tenant chains verify",
                report.receipts, report.tenants
            );
        }
        Some(bad) => {
            let _ = writeln!(
                out,
                "tampered: tenant `{}` seq {}: {}",
                bad.tenant, bad.seq, bad.reason
            );
        }
    }
    if let Some(problem) = &report.checkpoint {
        let tenant = match problem.tenant.as_str() {
            "" => String::new(),
            tenant => format!(" at tenant `{tenant}`"),
        };
        let _ = writeln!(
            out,
            "checkpoint contradicts the chains{tenant}: {} (the next start replays the whole log)",
            problem.reason
        );
    }
    let ok = report.first_bad.is_none() && report.checkpoint.is_none();
    (out, ok)
}

/// Refuses (exit 1) a folder that is missing or holds no ledger (see
/// [`crate::ledger::inspect::is_ledger_dir`]): reading it would report
/// `0 receipts`, as if an empty ledger were there.
fn ledger_dir(dir: &Path) -> Result<(), Failure> {
    if !dir.is_dir() {
        return Err(Failure::rejected(format!(
            "no ledger at `{}`",
            dir.display()
        )));
    }
    if !crate::ledger::inspect::is_ledger_dir(dir).map_err(|e| ledger_failure(&e))? {
        return Err(Failure::rejected(format!(
            "`{}` is not a ledger folder: it holds no LOCK, segment, CHECKPOINT or ANCHOR",
            dir.display()
        )));
    }
    Ok(())
}

fn show(location: &Location, tenant: Option<&str>) -> Result<ExitCode, Failure> {
    if let Location::Dir(dir) = location {
        ledger_dir(dir)?;
    }
    let tenant = tenant
        .map(TenantId::new)
        .transpose()
        .map_err(|e| Failure::rejected(e.to_string()))?;
    let mut out = io::BufWriter::new(io::stdout().lock());
    // Read-only and lock-free, so it works beside a running governor; a
    // tenant's records come in seq order because the log is append-only.
    let mut print = |record: &Record| -> Result<(), LedgerError> {
        if tenant.as_ref().is_some_and(|t| *t != record.tenant) {
            return Ok(());
        }
        // The stored bytes are canonical JSON: print them as they are.
        out.write_all(&record.bytes)
            .and_then(|()| out.write_all(b"\n"))
            .map_err(stdout_error)
    };
    let scanned = match location {
        Location::Dir(dir) => file::scan_dir(dir, &mut print),
        Location::Database(url) => {
            PgLedger::open_read_only(url).and_then(|ledger| ledger.scan(&mut print))
        }
    };
    match scanned {
        // The reader went away (`ledger show | head`): stop quietly.
        Err(LedgerError::Interrupted) => return Ok(ExitCode::SUCCESS),
        result => result.map_err(|e| ledger_failure(&e))?,
    }
    match out.flush() {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        result => result
            .map(|()| ExitCode::SUCCESS)
            .map_err(|e| Failure::internal(&e)),
    }
}

/// `ledger copy`: one line saying what was copied; exit 1 when the source
/// does not verify or the destination is not empty.
fn copy(from: &Location, to: &Location) -> Result<ExitCode, Failure> {
    let copied = crate::pg::copy::copy(from, to).map_err(|error| match error {
        CopyError::Ledger(error) => ledger_failure(&error),
        other => Failure::rejected(error_chain(&other)),
    })?;
    emit(&format!(
        "copied {} receipts in {} tenant chains from {} to {}; the copy verifies\n",
        copied.receipts,
        copied.tenants,
        from.display(),
        to.display()
    ))?;
    Ok(ExitCode::SUCCESS)
}

/// Writes `text` to stdout. A reader that went away (`… | head`) ends the
/// output quietly, as cargo does: the command keeps its own exit code. Any
/// other write failure (a full disk) is an internal error.
fn emit(text: &str) -> Result<(), Failure> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(Failure::internal(&e)),
        _ => Ok(()),
    }
}

/// A failed write of `ledger show`: a closed pipe stops the scan
/// ([`LedgerError::Interrupted`]); anything else is an I/O error.
fn stdout_error(source: io::Error) -> LedgerError {
    if source.kind() == io::ErrorKind::BrokenPipe {
        LedgerError::Interrupted
    } else {
        LedgerError::Io {
            path: PathBuf::from("<stdout>"),
            source,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A stderr that fails (a closed pipe) keeps the failure's exit code.
    #[test]
    fn a_closed_stderr_keeps_the_exit_code_without_a_panic() {
        struct Closed;
        impl io::Write for Closed {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
        }
        let code = report(&mut Closed, &Failure::rejected("no ledger at `/nonexist`"));
        assert_eq!(code, ExitCode::from(1));
    }
}
