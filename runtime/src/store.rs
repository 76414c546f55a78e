//! Which ledger a command works on: a file ledger directory (`--ledger DIR`,
//! the embedded default) or a PostgreSQL database (`--database-url URL`,
//! or `GOVERNOR_DATABASE_URL`), and opening it for writing.

use std::path::PathBuf;
use std::sync::Arc;

use crate::ledger::file::{FileLedger, FileOptions};
use crate::ledger::{Ledger, LedgerError};
use crate::pg::shared::SharedPgLedger;
use crate::pg::{PgLedger, PgOptions};

/// Whether other processes may write a database ledger at the same time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Writers {
    /// This process alone.
    Exclusive,
    /// Several replicas at once (each decision committed conditionally).
    Shared,
}

/// A ledger's location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A file ledger directory.
    Dir(PathBuf),
    /// A PostgreSQL URL (`postgres://…` or `postgresql://…`).
    Database(String),
}

impl Location {
    /// A `postgres://` or `postgresql://` URL (any case) is a database, a
    /// plain path a directory; any other `scheme://` is refused rather
    /// than taken for a folder name (which would also echo a password).
    pub fn parse(text: &str) -> Result<Location, String> {
        match text.split_once("://") {
            Some((scheme, _))
                if scheme.eq_ignore_ascii_case("postgres")
                    || scheme.eq_ignore_ascii_case("postgresql") =>
            {
                Ok(Location::Database(text.to_owned()))
            }
            Some((scheme, _)) => Err(format!(
                "`{scheme}://…` is neither a ledger directory nor a postgres:// URL"
            )),
            None => Ok(Location::Dir(PathBuf::from(text))),
        }
    }

    /// How to name it in messages (a database without its credentials).
    pub fn display(&self) -> String {
        match self {
            Location::Dir(dir) => dir.display().to_string(),
            Location::Database(url) => crate::pg::redacted(url),
        }
    }

    /// Opens it for writing (a directory is created if missing, a
    /// database's tables too); `warn` hears what was repaired or set aside.
    ///
    /// A database is opened as `writers` says: [`Writers::Shared`] beside
    /// other replicas (how `serve` runs), [`Writers::Exclusive`] alone (a
    /// `replay` into it). A directory always has one writer.
    pub fn open(
        &self,
        writers: Writers,
        warn: &mut dyn FnMut(String),
    ) -> Result<Arc<dyn Ledger>, LedgerError> {
        self.open_with(writers, OpenOptions::default(), warn)
    }

    /// [`Location::open`] with the sizes in `options`.
    pub fn open_with(
        &self,
        writers: Writers,
        options: OpenOptions,
        warn: &mut dyn FnMut(String),
    ) -> Result<Arc<dyn Ledger>, LedgerError> {
        Ok(match self {
            Location::Dir(dir) => {
                let ledger = FileLedger::open(
                    dir,
                    FileOptions {
                        segment_bytes: options.segment_bytes,
                        ..FileOptions::default()
                    },
                )?;
                if let Some(repair) = ledger.repair() {
                    warn(format!(
                        "truncated a torn final ledger record (it was never acknowledged): {} bytes at offset {} of `{}`",
                        repair.dropped,
                        repair.offset,
                        repair.path.display()
                    ));
                }
                if let Some(why) = ledger.rejected_checkpoint() {
                    warn(format!(
                        "the CHECKPOINT file is unusable ({why}): replaying the whole ledger (the next checkpoint replaces it)"
                    ));
                }
                Arc::new(ledger)
            }
            Location::Database(url) => {
                let options = PgOptions {
                    partition_receipts: options.partition_receipts,
                    answer_within: options.database_timeout,
                    ..PgOptions::default()
                };
                match writers {
                    Writers::Exclusive => Arc::new(PgLedger::open(url, options)?),
                    Writers::Shared => Arc::new(SharedPgLedger::open(url, options)?),
                }
            }
        })
    }
}

/// The sizes and bounds a ledger is opened with (`serve --segment-size`,
/// `--partition-receipts`, `--database-timeout`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenOptions {
    /// A file ledger's segment size in bytes.
    pub segment_bytes: u64,
    /// A PostgreSQL ledger's positions per partition.
    pub partition_receipts: u64,
    /// Replicas on PostgreSQL: longest a request waits for the database
    /// on its behalf (`PgOptions::answer_within`).
    pub database_timeout: std::time::Duration,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            segment_bytes: FileOptions::default().segment_bytes,
            partition_receipts: crate::pg::DEFAULT_PARTITION_RECEIPTS,
            database_timeout: PgOptions::default().answer_within,
        }
    }
}

/// The variable a database URL may come from instead of `--database-url`.
pub const DATABASE_URL_ENV: &str = "GOVERNOR_DATABASE_URL";

/// `--ledger DIR` or `--database-url URL` (at most one; without either,
/// `GOVERNOR_DATABASE_URL`). The variable is read only when no flag names
/// the ledger, so an exported URL never blocks `--ledger DIR`.
#[derive(Clone, Debug, Default, clap::Args)]
#[group(multiple = false)]
pub struct StoreArgs {
    /// The ledger directory (created if missing; appended to if not).
    #[arg(long, value_name = "DIR")]
    pub ledger: Option<PathBuf>,
    /// A PostgreSQL ledger instead of a directory: its tables live in the
    /// URL's `search_path` schema (`?options=-c%20search_path%3Dname`) and
    /// are created or migrated at start. Prefer `GOVERNOR_DATABASE_URL`
    /// (used when neither flag is given): a URL on the command line, with
    /// its password, is visible to `ps`.
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
}

impl StoreArgs {
    /// A directory ledger.
    pub fn dir(dir: impl Into<PathBuf>) -> StoreArgs {
        StoreArgs {
            ledger: Some(dir.into()),
            database_url: None,
        }
    }

    /// Where the ledger is: the flag given, else `GOVERNOR_DATABASE_URL`.
    pub fn location(&self) -> Result<Location, String> {
        self.location_with(std::env::var(DATABASE_URL_ENV).ok())
    }

    /// [`StoreArgs::location`] with the variable's value given.
    pub fn location_with(&self, env_url: Option<String>) -> Result<Location, String> {
        match (&self.ledger, &self.database_url, env_url) {
            (Some(dir), ..) => Ok(Location::Dir(dir.clone())),
            (None, Some(url), _) => Location::parse(url),
            (None, None, Some(url)) if !url.is_empty() => Location::parse(&url),
            _ => Err(format!(
                "no ledger given: pass `--ledger DIR` or `--database-url URL`, or set {DATABASE_URL_ENV}"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flag_wins_over_the_variable_and_the_variable_over_nothing() {
        let url = || Some("postgres://u:p@h/db".to_owned());
        let dir = StoreArgs::dir("ledger");
        assert_eq!(dir.location_with(url()), Ok(Location::Dir("ledger".into())));
        let flag = StoreArgs {
            database_url: Some("postgresql://h/other".to_owned()),
            ledger: None,
        };
        assert_eq!(
            flag.location_with(url()),
            Ok(Location::Database("postgresql://h/other".to_owned()))
        );
        let none = StoreArgs::default();
        assert_eq!(
            none.location_with(url()),
            Ok(Location::Database("postgres://u:p@h/db".to_owned()))
        );
        assert!(
            none.location_with(None)
                .unwrap_err()
                .contains("--ledger DIR")
        );
        assert!(none.location_with(Some(String::new())).is_err());
    }

    /// clap itself never reads the variable (it would then count as given
    /// and conflict with `--ledger`): only [`StoreArgs::location`] does.
    /// (The workspace builds clap without its `env` feature, so an `env`
    /// attribute would not even compile.)
    #[test]
    fn clap_leaves_the_variable_to_location() {
        use clap::Parser;
        #[derive(Debug, Parser)]
        struct Cli {
            #[command(flatten)]
            store: StoreArgs,
        }
        let both = Cli::try_parse_from(["x", "--ledger", "d", "--database-url", "postgres://h/db"]);
        assert!(both.is_err(), "--ledger and --database-url together");
        let dir = Cli::try_parse_from(["x", "--ledger", "d"]).unwrap();
        assert_eq!(
            dir.store.location_with(Some("postgres://h/db".to_owned())),
            Ok(Location::Dir("d".into()))
        );
    }

    #[test]
    fn only_postgres_urls_are_databases_and_other_schemes_are_refused() {
        assert!(matches!(
            Location::parse("POSTGRES://u:secret@h/db"),
            Ok(Location::Database(_))
        ));
        assert!(matches!(
            Location::parse("PostgreSQL://h/db"),
            Ok(Location::Database(_))
        ));
        assert_eq!(Location::parse("a/dir"), Ok(Location::Dir("a/dir".into())));
        let refused = Location::parse("mysql://u:secret@h/db").unwrap_err();
        assert!(!refused.contains("secret"), "{refused}");
    }
}
