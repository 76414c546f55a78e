//! `ggen bundle`: one byte-reproducible `.tar.gz` per spec, for release
//! pipelines, with a manifest beside it.
//!
//! A bundle `<id>-<version>.tar.gz` holds, under the folder
//! `<id>-<version>/`: the generated crate exactly as `ggen build` writes it
//! (sources, tests, README, `deploy/`, `monitoring/`, `ggen-manifest.json`),
//! the spec as `spec/<file>`, `bundle.json` (what made it and every other
//! entry's path, mode, size and SHA-256) and, with `--with-binary`, the
//! release binary as `bin/<crate>` (recorded by hash, not reproducible).
//! Beside it, `<id>-<version>.bundle.json` is the same manifest plus the
//! tarball's own size and SHA-256.
//!
//! The bytes depend on the spec, the templates and ggen only: entries
//! sorted, every mtime [`source_date_epoch`], uid/gid 0 with no names, modes
//! 0644/0755, a GNU tar stream, and a gzip header with no name, time 0 and
//! OS "unknown", compressed by miniz_oxide at a fixed level.
//! [`check`] re-derives bundles and compares them with a folder's.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use flate2::Compression;
use serde_json::{Value, json};
use thiserror::Error;

use crate::canonical;
use crate::digest::sha256_hex;
use crate::manifest;
use crate::pipeline::Generated;

/// The mtime of every entry when `SOURCE_DATE_EPOCH` is unset: 1980-01-01,
/// the earliest time every archive format can store.
pub const DEFAULT_EPOCH: u64 = 315_532_800;
/// The bundle format, recorded in `bundle.json`.
pub const FORMAT: u32 = 1;
/// The manifest inside the tarball.
const INNER_MANIFEST: &str = "bundle.json";
/// Where `--with-binary` puts the binary inside the bundle.
const BIN_DIR: &str = "bin";

/// Why a bundle could not be made or read.
#[derive(Debug, Error)]
pub enum BundleError {
    /// `SOURCE_DATE_EPOCH` is not a number of seconds.
    #[error("SOURCE_DATE_EPOCH `{0}` is not a whole number of seconds since 1970")]
    Epoch(String),
    /// A file could not be read or written.
    #[error("cannot {action} `{path}`")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: String,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// The spec changed between validation and bundling.
    #[error("`{path}` changed while it was being bundled; run again")]
    SpecChanged {
        /// The spec.
        path: String,
    },
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BundleError {
    let path = crate::load::display_path(path);
    move |source| BundleError::Io {
        action,
        path,
        source,
    }
}

/// `SOURCE_DATE_EPOCH` if set (reproducible-builds.org), else [`DEFAULT_EPOCH`].
pub fn source_date_epoch() -> Result<u64, BundleError> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(text) if !text.trim().is_empty() => {
            text.trim().parse().map_err(|_| BundleError::Epoch(text))
        }
        _ => Ok(DEFAULT_EPOCH),
    }
}

/// One file of a bundle, by its path inside `<id>-<version>/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Unix permission bits: 0o644, or 0o755 for the binary.
    pub mode: u32,
    /// The content.
    pub bytes: Vec<u8>,
}

/// A bundle in memory.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// `<id>-<version>`: the tarball's stem and its top folder.
    pub name: String,
    /// Every entry but `bundle.json`, by path.
    pub entries: BTreeMap<String, Entry>,
    /// The manifest (`bundle.json`), as a JSON value.
    pub manifest: Value,
    /// The mtime of every entry.
    pub epoch: u64,
}

/// A release binary to add to a bundle.
#[derive(Debug, Clone)]
pub struct Binary {
    /// Its file name inside `bin/`.
    pub name: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

impl Bundle {
    /// The bundle of `generated`, whose spec is the file `spec` (its bytes
    /// must still hash as the model recorded), with `binary` if given.
    pub fn new(
        generated: &Generated,
        spec: &Path,
        binary: Option<Binary>,
        epoch: u64,
    ) -> Result<Bundle, BundleError> {
        let model = &generated.model;
        let spec_bytes = fs_err::read(spec).map_err(io("read", spec))?;
        if sha256_hex(&spec_bytes) != model.spec_sha256 {
            return Err(BundleError::SpecChanged {
                path: crate::load::display_path(spec),
            });
        }
        let spec_name = model
            .spec_path
            .rsplit('/')
            .next()
            .unwrap_or(&model.spec_path);
        let mut entries: BTreeMap<String, Entry> = generated
            .files
            .iter()
            .map(|(path, text)| {
                let entry = Entry {
                    mode: 0o644,
                    bytes: text.clone().into_bytes(),
                };
                (path.clone(), entry)
            })
            .collect();
        let spec_entry = format!("spec/{spec_name}");
        entries.insert(
            spec_entry.clone(),
            Entry {
                mode: 0o644,
                bytes: spec_bytes,
            },
        );
        let binary_entry = binary.map(|binary| {
            let path = format!("{BIN_DIR}/{}", binary.name);
            entries.insert(
                path.clone(),
                Entry {
                    mode: 0o755,
                    bytes: binary.bytes,
                },
            );
            path
        });
        let files: Vec<Value> = entries
            .iter()
            .map(|(path, entry)| file_json(path, entry))
            .collect();
        let mut manifest = json!({
            "format": FORMAT,
            "generator": { "name": "ggen", "version": manifest::VERSION },
            "runtime": {
                "api_level": ggen_runtime_core::API_LEVEL,
                "version": ggen_runtime_core::VERSION,
            },
            "sku": { "id": model.id, "version": model.version },
            "crate": model.crate_name,
            "spec": { "path": spec_entry, "source": model.spec_path, "sha256": model.spec_sha256 },
            "source_date_epoch": epoch,
            "files": files,
        });
        if let Some(path) = binary_entry {
            manifest["binary"] = json!({ "path": path, "reproducible": false });
        }
        Ok(Bundle {
            name: format!("{}-{}", model.id, model.version),
            entries,
            manifest,
            epoch,
        })
    }

    /// The tarball's file name.
    pub fn tarball_name(&self) -> String {
        format!("{}.tar.gz", self.name)
    }

    /// The outer manifest's file name.
    pub fn manifest_name(&self) -> String {
        format!("{}.bundle.json", self.name)
    }

    /// The `.tar.gz` bytes.
    pub fn tarball(&self) -> Result<Vec<u8>, BundleError> {
        let inner = canonical::to_string(&self.manifest);
        let mut files: Vec<(&str, u32, &[u8])> = self
            .entries
            .iter()
            .map(|(path, e)| (path.as_str(), e.mode, e.bytes.as_slice()))
            .collect();
        files.push((INNER_MANIFEST, 0o644, inner.as_bytes()));
        let tar =
            tar_bytes(&self.name, &files, self.epoch).map_err(io("write", Path::new("tar")))?;
        let mut gz = flate2::GzBuilder::new()
            .mtime(0)
            .operating_system(255)
            .write(Vec::new(), Compression::new(6));
        gz.write_all(&tar)
            .and_then(|()| gz.finish())
            .map_err(io("compress", Path::new(&self.tarball_name())))
    }

    /// The outer manifest for a tarball of these bytes.
    pub fn outer_manifest(&self, tarball: &[u8]) -> String {
        let mut outer = self.manifest.clone();
        outer["bundle"] = json!({
            "file": self.tarball_name(),
            "size": tarball.len(),
            "sha256": sha256_hex(tarball),
        });
        canonical::to_string(&outer)
    }

    /// Writes the tarball and its manifest into `dir` (created if missing),
    /// each through a temporary file renamed into place: an error leaves
    /// neither half written. Returns the tarball's bytes.
    pub fn write(&self, dir: &Path) -> Result<Written, BundleError> {
        let tarball = self.tarball()?;
        let outer = self.outer_manifest(&tarball);
        fs_err::create_dir_all(dir).map_err(io("create", dir))?;
        let tar_path = dir.join(self.tarball_name());
        let json_path = dir.join(self.manifest_name());
        let tar_tmp = durable_temp(dir, &tarball)?;
        let json_tmp = durable_temp(dir, outer.as_bytes())?;
        tar_tmp
            .persist(&tar_path)
            .map_err(|e| io("write", &tar_path)(e.error))?;
        if let Err(e) = json_tmp.persist(&json_path) {
            let _ = fs_err::remove_file(&tar_path);
            return Err(io("write", &json_path)(e.error));
        }
        sync_dir(dir)?;
        Ok(Written {
            tarball: tar_path,
            manifest: json_path,
            sha256: sha256_hex(&tarball),
            size: tarball.len() as u64,
        })
    }
}

/// Where a bundle went.
#[derive(Debug, Clone)]
pub struct Written {
    /// The `.tar.gz`.
    pub tarball: PathBuf,
    /// The `.bundle.json`.
    pub manifest: PathBuf,
    /// The tarball's SHA-256.
    pub sha256: String,
    /// The tarball's size.
    pub size: u64,
}

fn file_json(path: &str, entry: &Entry) -> Value {
    listing(
        path,
        entry.mode,
        entry.bytes.len() as u64,
        &sha256_hex(&entry.bytes),
    )
}

/// One file as `bundle.json` lists it.
fn listing(path: &str, mode: u32, size: u64, sha256: &str) -> Value {
    json!({ "path": path, "mode": format!("{mode:04o}"), "size": size, "sha256": sha256 })
}

/// A temporary file in `dir` holding `bytes`, synced.
fn durable_temp(dir: &Path, bytes: &[u8]) -> Result<tempfile::NamedTempFile, BundleError> {
    let mut file =
        crate::write::temp_in(dir, ".ggen-bundle-").map_err(io("create a file in", dir))?;
    file.write_all(bytes)
        .and_then(|()| file.as_file().sync_all())
        .map_err(io("write a file in", dir))?;
    Ok(file)
}

fn sync_dir(dir: &Path) -> Result<(), BundleError> {
    fs_err::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("sync", dir))
}

/// A tar entry's content: `None` for a folder, else the mode and bytes of a file.
type Content<'a> = Option<(u32, &'a [u8])>;

/// A GNU tar stream of `files` under the folder `top`, sorted by path, with
/// every parent folder as its own entry before its contents.
fn tar_bytes(top: &str, files: &[(&str, u32, &[u8])], epoch: u64) -> std::io::Result<Vec<u8>> {
    let mut entries: BTreeMap<String, Content<'_>> = BTreeMap::new();
    entries.insert(format!("{top}/"), None);
    for &(path, mode, bytes) in files {
        for (at, _) in path.match_indices('/') {
            entries.insert(format!("{top}/{}", &path[..=at]), None);
        }
        entries.insert(format!("{top}/{path}"), Some((mode, bytes)));
    }
    let mut builder = tar::Builder::new(Vec::new());
    for (path, content) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(epoch);
        header.set_uid(0);
        header.set_gid(0);
        let (kind, mode, bytes) = match content {
            None => (tar::EntryType::Directory, 0o755, &[][..]),
            Some((mode, bytes)) => (tar::EntryType::Regular, mode, bytes),
        };
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_size(bytes.len() as u64);
        builder.append_data(&mut header, &path, bytes)?;
    }
    builder.into_inner()
}

/// Largest `bundle.json` (inner or outer) `--check` reads into memory.
const MAX_MANIFEST: u64 = 16 << 20;

/// The SHA-256 and length of everything `reader` yields, read in pieces.
fn hash_stream(mut reader: impl Read) -> std::io::Result<(String, u64)> {
    use sha2::Digest as _;
    let mut hasher = sha2::Sha256::new();
    let mut buffer = vec![0; 64 << 10];
    let mut size = 0u64;
    loop {
        let n = reader.read(&mut buffer)?;
        if n == 0 {
            return Ok((hex::encode(hasher.finalize()), size));
        }
        hasher.update(&buffer[..n]);
        size += n as u64;
    }
}

/// What a bundle's tarball holds ([`read_tarball`]).
#[derive(Debug, Clone, Default)]
pub struct Contents {
    /// Every regular file's listing, by path inside the top folder.
    pub files: BTreeMap<String, Value>,
    /// The bytes of the entries asked for that are present, by path.
    pub kept: BTreeMap<String, Vec<u8>>,
}

/// What a bundle's tarball holds, read as a stream: every regular file's
/// listing (path, mode, size, SHA-256, as in `bundle.json`) by path inside
/// the top folder `top`, and the bytes of the entries `keep` names (each
/// with the most bytes it may have); nothing else is held in memory. Links,
/// devices, paths outside `top`, a path twice and an oversized kept entry
/// are errors.
pub fn read_tarball(
    reader: impl Read,
    top: &str,
    keep: &[(&str, u64)],
) -> std::io::Result<Contents> {
    let invalid = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(reader));
    let mut contents = Contents::default();
    let prefix = format!("{top}/");
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = String::from_utf8(entry.path_bytes().into_owned())
            .map_err(|_| invalid("an entry's path is not UTF-8".to_owned()))?;
        let Some(inner) = path.strip_prefix(&prefix).map(str::to_owned) else {
            return Err(invalid(format!("entry `{path}` is outside `{prefix}`")));
        };
        match entry.header().entry_type() {
            tar::EntryType::Directory => continue,
            tar::EntryType::Regular => {}
            other => {
                return Err(invalid(format!(
                    "entry `{path}` is a {other:?}, not a file"
                )));
            }
        }
        let mode = entry.header().mode()?;
        let listing = match keep.iter().find(|(kept, _)| *kept == inner) {
            Some(&(_, max)) => {
                if entry.size() > max {
                    return Err(invalid(format!("`{path}` is over {max} bytes")));
                }
                let mut bytes = Vec::new();
                entry.read_to_end(&mut bytes)?;
                let listing = listing(&inner, mode, bytes.len() as u64, &sha256_hex(&bytes));
                contents.kept.insert(inner.clone(), bytes);
                listing
            }
            None => {
                let (sha256, size) = hash_stream(&mut entry)?;
                listing(&inner, mode, size, &sha256)
            }
        };
        if contents.files.insert(inner, listing).is_some() {
            return Err(invalid(format!("entry `{path}` appears twice")));
        }
    }
    Ok(contents)
}

/// What `bundle --check` found for one bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The folder's bundle is byte for byte what the spec gives.
    Same,
    /// No tarball or no manifest in the folder.
    Missing(String),
    /// The bundle does not match itself (hashes, manifests, listing), or
    /// holds the right files in bytes ggen does not write.
    Tampered(String),
    /// A sound bundle, of other content than the spec now gives.
    Differs(String),
}

/// Largest binary `--check` reads back to rebuild a bundle with it.
const MAX_BINARY: u64 = 1 << 30;

/// What [`check`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The verdict.
    pub verdict: Verdict,
    /// Whether the bundle carries a binary (`bin/<crate>`, listed in its
    /// manifest). A binary is not reproducible, so `--check` does not
    /// rebuild it: [`Verdict::Same`] then says the sources, manifests and
    /// the binary's recorded hash agree, not that the binary is what the
    /// sources compile to.
    pub binary: bool,
}

/// Compares, byte for byte, the bundle `name` in `dir` with the one
/// `expected_for(epoch, binary)` makes: at the epoch the found bundle
/// records, with the binary it holds (only as `bin/<binary_name>`, and
/// only if its manifest lists it there; see [`Checked::binary`]).
pub fn check(
    expected_for: impl Fn(u64, Option<Binary>) -> Result<Bundle, BundleError>,
    name: &str,
    binary_name: &str,
    dir: &Path,
) -> Result<Checked, BundleError> {
    let mut binary = false;
    let verdict = compare(expected_for, name, binary_name, dir, &mut binary)?;
    Ok(Checked { verdict, binary })
}

/// [`check`]'s comparison; sets `carries` once the bundle's manifest is
/// known to list a binary.
fn compare(
    expected_for: impl Fn(u64, Option<Binary>) -> Result<Bundle, BundleError>,
    name: &str,
    binary_name: &str,
    dir: &Path,
    carries: &mut bool,
) -> Result<Verdict, BundleError> {
    let tar_path = dir.join(format!("{name}.tar.gz"));
    let json_path = dir.join(format!("{name}.bundle.json"));
    let tar_shown = crate::load::display_path(&tar_path);
    let json_shown = crate::load::display_path(&json_path);
    let tampered = |what: String| Ok(Verdict::Tampered(what));
    let open = |path: &Path| match fs_err::File::open(path) {
        Ok(file) => Ok(Some(file)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io("read", path)(e)),
    };
    // A folder (or a fifo, a device) where a bundle file belongs is the
    // folder's content at fault, not ggen: a verdict, not an I/O failure.
    for (path, shown) in [(&tar_path, &tar_shown), (&json_path, &json_shown)] {
        if fs_err::metadata(path).is_ok_and(|m| !m.is_file()) {
            return tampered(format!("`{shown}` is not a regular file"));
        }
    }
    let (Some(tarball), Some(outer_file)) = (open(&tar_path)?, open(&json_path)?) else {
        return Ok(Verdict::Missing(format!(
            "`{tar_shown}` or `{json_shown}` is missing"
        )));
    };
    let mut outer_bytes = Vec::new();
    outer_file
        .take(MAX_MANIFEST + 1)
        .read_to_end(&mut outer_bytes)
        .map_err(io("read", &json_path))?;
    let Ok(mut outer) = serde_json::from_slice::<Value>(&outer_bytes) else {
        return tampered(format!("`{json_shown}` is not a bundle manifest"));
    };
    let (sha256, size) = hash_stream(tarball).map_err(io("read", &tar_path))?;
    let recorded = outer.get("bundle").cloned().unwrap_or(Value::Null);
    if recorded["sha256"] != json!(sha256) || recorded["size"] != json!(size) {
        return tampered(format!(
            "`{tar_shown}` does not hash as its `.bundle.json` records"
        ));
    }
    let binary_path = format!("{BIN_DIR}/{binary_name}");
    let binary = match outer.get("binary") {
        None => None,
        Some(b) if b["path"] == json!(binary_path) => Some(binary_path.as_str()),
        Some(b) => {
            return tampered(format!(
                "`{json_shown}` names `{}` as the binary; only `{binary_path}` can be",
                b["path"]
            ));
        }
    };
    *carries = binary.is_some();
    if let Some(object) = outer.as_object_mut() {
        object.remove("bundle");
    }

    // The bundle against itself: inner and outer manifests, listing.
    let reader = fs_err::File::open(&tar_path).map_err(io("read", &tar_path))?;
    let mut keep = vec![(INNER_MANIFEST, MAX_MANIFEST)];
    keep.extend(binary.map(|path| (path, MAX_BINARY)));
    let Contents {
        files: mut found,
        mut kept,
    } = match read_tarball(std::io::BufReader::new(reader), name, &keep) {
        Ok(contents) => contents,
        Err(e) => return tampered(format!("`{tar_shown}`: {e}")),
    };
    let inner: Option<Value> = kept
        .remove(INNER_MANIFEST)
        .and_then(|bytes| serde_json::from_slice(&bytes).ok());
    if inner.as_ref() != Some(&outer) {
        return tampered(format!(
            "the `{INNER_MANIFEST}` inside `{tar_shown}` differs from `{json_shown}`"
        ));
    }
    found.remove(INNER_MANIFEST);
    let listed: BTreeMap<String, Value> = outer["files"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| Some((f["path"].as_str()?.to_owned(), f.clone())))
        .collect();
    if listed != found {
        return tampered(format!(
            "the files inside `{tar_shown}` are not the ones its manifest lists"
        ));
    }

    // The bundle against the spec: rebuilt, with the binary it holds.
    let epoch = outer["source_date_epoch"].as_u64().unwrap_or(DEFAULT_EPOCH);
    let binary = binary
        .and_then(|path| kept.remove(path))
        .map(|bytes| Binary {
            name: binary_name.to_owned(),
            bytes,
        });
    let expected = expected_for(epoch, binary)?;
    let expected_tarball = expected.tarball()?;
    if sha256_hex(&expected_tarball) == sha256
        && expected.outer_manifest(&expected_tarball).as_bytes() == outer_bytes.as_slice()
    {
        return Ok(Verdict::Same);
    }
    let mut differences = Vec::new();
    let paths: std::collections::BTreeSet<&String> =
        expected.entries.keys().chain(found.keys()).collect();
    for path in paths {
        let want = expected.entries.get(path).map(|e| file_json(path, e));
        match (want, found.get(path)) {
            (Some(want), Some(have)) if want == *have => {}
            (Some(_), Some(_)) => differences.push(format!("{path} differs")),
            (Some(_), None) => differences.push(format!("{path} is missing")),
            (None, _) => differences.push(format!("{path} is not generated")),
        }
    }
    if differences.is_empty() && expected.manifest != outer {
        differences.push(format!("{INNER_MANIFEST} differs"));
    }
    if differences.is_empty() {
        return tampered(format!(
            "`{tar_shown}` holds the right files, but not in the bytes ggen writes (entry order, ownership, times, modes, compression or trailing data), or `{json_shown}` is not as ggen writes it"
        ));
    }
    Ok(Verdict::Differs(differences.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `.tar.gz` of `entries`: (path, type, content).
    fn tarball(entries: &[(&str, tar::EntryType, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, kind, bytes) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(*kind);
            header.set_mode(0o644);
            header.set_size(bytes.len() as u64);
            if *kind == tar::EntryType::Symlink {
                header.set_link_name("/etc/passwd").unwrap();
            }
            builder.append_data(&mut header, path, *bytes).unwrap();
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), Compression::fast());
        gz.write_all(&builder.into_inner().unwrap()).unwrap();
        gz.finish().unwrap()
    }

    #[test]
    fn a_tarball_is_listed_by_streaming_and_odd_entries_are_refused() {
        let file = tar::EntryType::Regular;
        let good = tarball(&[
            ("b-1/x.txt", file, b"hello"),
            ("b-1/bundle.json", file, b"{}"),
        ]);
        let contents = read_tarball(good.as_slice(), "b-1", &[("bundle.json", 2)]).unwrap();
        assert_eq!(contents.kept["bundle.json"], b"{}");
        assert_eq!(
            contents.files["x.txt"],
            json!({ "path": "x.txt", "mode": "0644", "size": 5, "sha256": sha256_hex(b"hello") })
        );
        for (entries, why) in [
            (
                vec![("b-1/x", file, &b"1"[..]), ("b-1/x", file, b"2")],
                "appears twice",
            ),
            (
                vec![("b-1/link", tar::EntryType::Symlink, &b""[..])],
                "not a file",
            ),
            (vec![("other/x", file, &b""[..])], "is outside `b-1/`"),
            (
                vec![("b-1/bundle.json", file, &b"{ }"[..])],
                "is over 2 bytes",
            ),
        ] {
            let error = read_tarball(tarball(&entries).as_slice(), "b-1", &[("bundle.json", 2)])
                .unwrap_err();
            assert!(error.to_string().contains(why), "{error}");
        }
    }
}
