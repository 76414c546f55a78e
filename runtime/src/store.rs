//! Which ledger a command works on: a file ledger directory (`--ledger DIR`,
//! the embedded default) or a PostgreSQL database (`--database-url URL`,
//! or `GOVERNOR_DATABASE_URL`), and opening it for writing.

use std::path::PathBuf;
use std::sync::Arc;

use crate::ledger::file::{FileLedger, FileOptions};
use crate::ledger::{Ledger, LedgerError};
use crate::pg::{PgLedger, PgOptions};

/// A ledger's location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A file ledger directory.
    Dir(PathBuf),
    /// A PostgreSQL URL (`postgres://…` or `postgresql://…`).
    Database(String),
}

impl Location {
    /// A `postgres://` or `postgresql://` URL is a database; anything else a directory.
    pub fn parse(text: &str) -> Location {
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            Location::Database(text.to_owned())
        } else {
            Location::Dir(PathBuf::from(text))
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
    pub fn open(&self, warn: &mut dyn FnMut(String)) -> Result<Arc<dyn Ledger>, LedgerError> {
        Ok(match self {
            Location::Dir(dir) => {
                let ledger = FileLedger::open(dir, FileOptions::default())?;
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
            Location::Database(url) => Arc::new(PgLedger::open(url, PgOptions::default())?),
        })
    }
}

/// `--ledger DIR` or `--database-url URL`: exactly one.
#[derive(Clone, Debug, Default, clap::Args)]
#[group(required = true, multiple = false)]
pub struct StoreArgs {
    /// The ledger directory (created if missing; appended to if not).
    #[arg(long, value_name = "DIR")]
    pub ledger: Option<PathBuf>,
    /// A PostgreSQL ledger instead of a directory: its tables live in the
    /// URL's `search_path` schema (`?options=-c%20search_path%3Dname`) and
    /// are created or migrated at start. Prefer the environment variable:
    /// a URL with a password is visible to `ps` on the command line.
    #[arg(
        long,
        value_name = "URL",
        env = "GOVERNOR_DATABASE_URL",
        hide_env_values = true
    )]
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

    /// Where the ledger is (clap makes sure exactly one is given).
    pub fn location(&self) -> Location {
        match (&self.database_url, &self.ledger) {
            (Some(url), _) => Location::Database(url.clone()),
            (None, Some(dir)) => Location::Dir(dir.clone()),
            (None, None) => Location::Dir(PathBuf::from(".")),
        }
    }
}
