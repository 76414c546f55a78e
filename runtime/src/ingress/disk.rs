//! Disk space as a signal: the ledger's disk use and free space, sampled at
//! most once a second (by `/readyz`, `/metrics` and the service's upkeep
//! timer), a threshold under which the service reports not ready (and a
//! warning is logged) before writes fail, and the ledger's own "full" state.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::ledger::{Ledger, Space};

/// How long a sample is reused.
const SAMPLE_FOR: Duration = Duration::from_secs(1);

/// Free space under which a service reports not ready (`--min-free`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum MinFree {
    /// An amount of bytes.
    Bytes(u64),
    /// A share of the file system, in percent.
    Percent(f64),
    /// 5% of the file system, at most 1 GiB (`auto`, the default): a
    /// share on a volume of the ledger's own, a bound on a large shared disk.
    #[default]
    Auto,
}

impl MinFree {
    /// The threshold in bytes on a file system of `total` bytes.
    pub fn bytes(self, total: u64) -> u64 {
        match self {
            MinFree::Bytes(bytes) => bytes,
            MinFree::Percent(percent) => (total as f64 * percent / 100.0) as u64,
            MinFree::Auto => MinFree::Percent(5.0).bytes(total).min(1 << 30),
        }
    }
}

impl std::str::FromStr for MinFree {
    type Err = String;

    /// `auto`, `5%`, `0.5%`, `512MiB`, `2GiB`, `100MB`, `4096` (bytes).
    fn from_str(text: &str) -> Result<MinFree, String> {
        let text = text.trim();
        if text == "auto" {
            return Ok(MinFree::Auto);
        }
        let bad = || {
            format!(
                "`{text}` is not a size: give a percentage (`5%`) or bytes (`512MiB`, `2GiB`, `100MB`, `4096`)"
            )
        };
        if let Some(percent) = text.strip_suffix('%') {
            let percent: f64 = percent.trim().parse().map_err(|_| bad())?;
            if !(0.0..=100.0).contains(&percent) {
                return Err(bad());
            }
            return Ok(MinFree::Percent(percent));
        }
        let digits = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(digits);
        let number: u64 = number.parse().map_err(|_| bad())?;
        let scale = match unit.trim() {
            "" => 1,
            unit => byte_unit(unit).ok_or_else(bad)?,
        };
        number
            .checked_mul(scale)
            .map(MinFree::Bytes)
            .ok_or_else(bad)
    }
}

/// Bytes per `unit` of a size (`B`, `KiB` … `TiB`, `kB` … `TB`).
pub(crate) fn byte_unit(unit: &str) -> Option<u64> {
    Some(match unit {
        "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        _ => return None,
    })
}

/// One sample, judged against the threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DiskStatus {
    /// What the ledger reported.
    pub space: Space,
    /// The threshold in bytes.
    pub min_free: u64,
}

impl DiskStatus {
    /// Free space is under the threshold.
    pub fn low(&self) -> bool {
        self.space.free < self.min_free
    }

    /// Why the service is not ready because of its disk, if it is not.
    pub fn not_ready(&self) -> Option<String> {
        if self.space.full {
            return Some(format!(
                "ledger disk full ({} bytes free of {}): ingest refused until space is freed",
                self.space.free, self.space.total
            ));
        }
        self.low().then(|| {
            format!(
                "ledger disk space low: {} bytes free of {}, under --min-free ({} bytes); the ledger holds {} bytes",
                self.space.free, self.space.total, self.min_free, self.space.bytes
            )
        })
    }
}

/// The service's view of its ledger's disk.
#[derive(Debug)]
pub(crate) struct Disk {
    min_free: MinFree,
    sample: Mutex<Option<(Instant, DiskStatus)>>,
    /// Whether the last sample was not ready (a change is logged).
    warned: AtomicBool,
}

impl Disk {
    pub(crate) fn new(min_free: MinFree) -> Disk {
        Disk {
            min_free,
            sample: Mutex::new(None),
            warned: AtomicBool::new(false),
        }
    }

    /// The ledger's disk now (a sample at most [`SAMPLE_FOR`] old), or
    /// `None` for a ledger with no local disk or whose space cannot be read
    /// (logged).
    pub(crate) fn status(&self, ledger: &dyn Ledger) -> Option<DiskStatus> {
        let mut sample = self.sample.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, status)) = *sample
            && at.elapsed() < SAMPLE_FOR
        {
            return Some(status);
        }
        let space = match ledger.space()? {
            Ok(space) => space,
            Err(error) => {
                tracing::warn!(error = %crate::report::error_chain(&error), "reading the ledger's disk space failed");
                return None;
            }
        };
        let status = DiskStatus {
            space,
            min_free: self.min_free.bytes(space.total),
        };
        *sample = Some((Instant::now(), status));
        drop(sample);
        let why = status.not_ready();
        let was = self.warned.swap(why.is_some(), Ordering::AcqRel);
        match (was, why) {
            (false, Some(why)) => {
                tracing::warn!(free = space.free, total = space.total, "{why}: not ready")
            }
            (true, None) => tracing::info!(
                free = space.free,
                total = space.total,
                "ledger disk space back above --min-free: ready"
            ),
            _ => {}
        }
        Some(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_parse_and_scale() {
        assert_eq!("5%".parse(), Ok(MinFree::Percent(5.0)));
        assert_eq!("0.5 %".parse(), Ok(MinFree::Percent(0.5)));
        assert_eq!("512MiB".parse(), Ok(MinFree::Bytes(512 << 20)));
        assert_eq!("2GiB".parse(), Ok(MinFree::Bytes(2 << 30)));
        assert_eq!("100MB".parse(), Ok(MinFree::Bytes(100_000_000)));
        assert_eq!("4096".parse(), Ok(MinFree::Bytes(4096)));
        for bad in [
            "",
            "%",
            "101%",
            "-1%",
            "5 parsecs",
            "MiB",
            "99999999999999999999GiB",
        ] {
            assert!(bad.parse::<MinFree>().is_err(), "{bad}");
        }
        assert_eq!(MinFree::Percent(5.0).bytes(1000), 50);
        assert_eq!(MinFree::Bytes(7).bytes(1000), 7);
        assert_eq!("auto".parse(), Ok(MinFree::Auto));
        assert_eq!(MinFree::Auto.bytes(10 << 30), 512 << 20);
        assert_eq!(MinFree::Auto.bytes(250 << 30), 1 << 30);
    }

    #[test]
    fn full_and_low_are_not_ready() {
        let status = |free, full| DiskStatus {
            space: Space {
                bytes: 10,
                free,
                total: 1000,
                full,
            },
            min_free: 50,
        };
        assert_eq!(status(50, false).not_ready(), None);
        assert!(status(49, false).not_ready().unwrap().contains("low"));
        assert!(status(500, true).not_ready().unwrap().contains("full"));
    }
}
