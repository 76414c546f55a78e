//! The cargo side of a project: what a generated `Cargo.toml` takes from
//! the workspace ([`PackageSettings`], read from the `Cargo.toml` beside
//! `ggen.toml` only, so output depends on the project's files and never on
//! the machine), whether a `path` runtime is the version this ggen generates
//! for ([`check_runtime`]), and after a build into a workspace, a check (with
//! `cargo metadata`) that every generated crate is a member and that
//! `ggen-runtime` is a workspace dependency when ggen.toml names no
//! `runtime`. Membership problems are warnings: the generated files are
//! correct either way.

use std::path::{Component, Path, PathBuf};

use thiserror::Error;

use crate::config::Runtime;
use crate::escape;
use crate::load::display_path;

/// The edition generated code is written for, used when the workspace gives none.
pub const EDITION: &str = "2024";

/// The `rust-version` used when the workspace gives none: ggen's own.
pub const RUST_VERSION: &str = env!("CARGO_PKG_RUST_VERSION");

/// What a generated `Cargo.toml` writes itself and what it inherits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageSettings {
    /// `edition` to write, or `None` to inherit `[workspace.package]`'s.
    pub edition: Option<String>,
    /// `rust-version` to write, or `None` to inherit `[workspace.package]`'s.
    pub rust_version: Option<String>,
    /// Whether the crate carries its own lints (the workspace has no `[workspace.lints]`).
    pub own_lints: bool,
    /// The `ggen-runtime` dependency as an inline TOML value, or `None` for
    /// `ggen-runtime.workspace = true`.
    pub runtime: Option<String>,
}

impl PackageSettings {
    /// Everything from the workspace: this repository's layout.
    pub fn inherited() -> PackageSettings {
        PackageSettings {
            edition: None,
            rust_version: None,
            own_lints: false,
            runtime: None,
        }
    }

    /// The settings for crates written to `crate_parent/<id>` (relative to
    /// the project root `root`, or absolute) with `runtime` from ggen.toml:
    /// `edition`, `rust-version` and lints are inherited exactly when the
    /// `Cargo.toml` beside ggen.toml has a `[workspace]` that provides them.
    pub fn detect(
        root: &Path,
        crate_parent: &Path,
        runtime: Option<&Runtime>,
    ) -> Result<PackageSettings, CargoError> {
        let manifest = root.join("Cargo.toml");
        let workspace = match read_manifest(&manifest) {
            Ok(mut table) => table
                .remove("workspace")
                .and_then(|w| w.as_table().cloned()),
            Err(CargoError::Read(e)) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let package = workspace
            .as_ref()
            .and_then(|w| w.get("package"))
            .and_then(toml::Value::as_table);
        let inherits = |key: &str| package.is_some_and(|p| p.contains_key(key));
        Ok(PackageSettings {
            edition: (!inherits("edition")).then(|| EDITION.to_owned()),
            rust_version: (!inherits("rust-version")).then(|| RUST_VERSION.to_owned()),
            own_lints: !workspace.as_ref().is_some_and(|w| w.contains_key("lints")),
            runtime: runtime.map(|r| dependency(r, root, crate_parent)),
        })
    }
}

/// The inline TOML of a `ggen-runtime` dependency for a crate in
/// `crate_parent/<id>`: a relative runtime path is made relative to the
/// crate's folder, lexically, so it does not depend on where the project is
/// (`crate_parent` is relative to the project root `root`, or absolute).
fn dependency(runtime: &Runtime, root: &Path, crate_parent: &Path) -> String {
    match runtime {
        Runtime::Version(version) => format!("{{ version = {} }}", escape::quoted(version)),
        Runtime::Git { url, rev } => format!(
            "{{ git = {}, rev = {} }}",
            escape::quoted(url),
            escape::quoted(rev)
        ),
        Runtime::Path(path) => {
            // A parent above the root (`--out ../x`) cannot be climbed out
            // of lexically: seen through the folders it names, as an
            // absolute one is.
            let above_root = crate_parent.components().next() == Some(Component::ParentDir);
            let path = if path.is_absolute() {
                path.to_string_lossy().replace('\\', "/")
            } else if crate_parent.is_absolute() || above_root {
                let crate_parent =
                    std::path::absolute(root.join(crate_parent)).unwrap_or(root.join(crate_parent));
                let runtime = std::path::absolute(root.join(path)).unwrap_or(root.join(path));
                relative(&crate_parent.join("crate"), &runtime)
            } else {
                relative(&crate_parent.join("crate"), path)
            };
            format!("{{ path = {} }}", escape::quoted(&path))
        }
    }
}

/// `to` as seen from the folder `from`, both relative to the same folder.
fn relative(from: &Path, to: &Path) -> String {
    let normal = |p: &Path| {
        let mut parts: Vec<String> = Vec::new();
        let mut ups = 0usize;
        for c in p.components() {
            match c {
                Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
                // The guard pops: a `..` cancels a name, or climbs above the start.
                Component::ParentDir if parts.pop().is_none() => ups += 1,
                _ => {}
            }
        }
        (ups, parts)
    };
    let (from_ups, from) = normal(from);
    let (to_ups, to) = normal(to);
    let common = if from_ups == to_ups {
        from.iter().zip(&to).take_while(|(a, b)| a == b).count()
    } else {
        0
    };
    let mut out: Vec<String> = vec!["..".to_owned(); from.len() - common];
    // A `from` that climbs above the root cannot be undone lexically; such
    // layouts keep the climb of `to` beyond it.
    out.extend(std::iter::repeat_n(
        "..".to_owned(),
        to_ups.saturating_sub(from_ups),
    ));
    out.extend(to[common..].iter().cloned());
    if out.is_empty() {
        ".".to_owned()
    } else {
        out.join("/")
    }
}

/// Why the cargo side of a project could not be read, or does not fit.
#[derive(Debug, Error)]
pub enum CargoError {
    /// A `Cargo.toml` that is not TOML.
    #[error("cannot parse `{path}`")]
    Parse {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: toml::de::Error,
    },
    /// A `Cargo.toml` that could not be read (fs-err names it).
    #[error("cannot read a cargo manifest")]
    Read(#[source] std::io::Error),
    /// The `path` runtime's folder holds no `Cargo.toml`.
    #[error(
        "`{path}` does not exist: `runtime = {{ path = … }}` in ggen.toml must point at the `ggen-runtime` folder (relative to ggen.toml)"
    )]
    NoRuntime {
        /// The missing `Cargo.toml`.
        path: String,
    },
    /// The `path` runtime has no readable version.
    #[error(
        "`{path}` names no package version: `runtime = {{ path = … }}` in ggen.toml must point at the `ggen-runtime` folder"
    )]
    NoVersion {
        /// The runtime's `Cargo.toml`.
        path: String,
    },
    /// The `path` runtime is another version than the one this ggen generates for.
    #[error(
        "`{path}` is ggen-runtime `{found}`, but this ggen `{ggen}` generates for ggen-runtime `{expected}`: point `runtime` in ggen.toml at ggen-runtime `{expected}`, or use the ggen that matches `{found}`"
    )]
    Skew {
        /// The runtime's `Cargo.toml`.
        path: String,
        /// Its version.
        found: String,
        /// The version this ggen generates for.
        expected: &'static str,
        /// This ggen's version.
        ggen: &'static str,
    },
}

/// Reads and parses the Cargo manifest `path`.
fn read_manifest(path: &Path) -> Result<toml::Table, CargoError> {
    let text = fs_err::read_to_string(path).map_err(CargoError::Read)?;
    toml::from_str(&text).map_err(|source| CargoError::Parse {
        path: display_path(path),
        source,
    })
}

/// For a `path` runtime, checks that its `Cargo.toml` version (or the
/// version its workspace gives it) is [`ggen_runtime_core::VERSION`]; other
/// runtimes are checked when the crate compiles (the `API_LEVEL` assertion).
pub fn check_runtime(root: &Path, runtime: Option<&Runtime>) -> Result<(), CargoError> {
    let Some(Runtime::Path(path)) = runtime else {
        return Ok(());
    };
    let manifest = root.join(path).join("Cargo.toml");
    if !manifest.is_file() {
        return Err(CargoError::NoRuntime {
            path: display_path(&manifest),
        });
    }
    let table = read_manifest(&manifest)?;
    let version = table.get("package").and_then(|p| p.get("version"));
    let found = match version {
        Some(toml::Value::String(v)) => Some(v.clone()),
        // `version.workspace = true`: the nearest parent workspace's.
        Some(toml::Value::Table(_)) => {
            let mut found = None;
            let absolute = std::path::absolute(&manifest).map_err(CargoError::Read)?;
            for dir in absolute.ancestors().skip(2) {
                let candidate = dir.join("Cargo.toml");
                if !candidate.is_file() {
                    continue;
                }
                let parent = read_manifest(&candidate)?;
                if let Some(workspace) = parent.get("workspace") {
                    found = workspace
                        .get("package")
                        .and_then(|p| p.get("version"))
                        .and_then(toml::Value::as_str)
                        .map(str::to_owned);
                    break;
                }
            }
            found
        }
        _ => None,
    };
    let path = display_path(&manifest);
    match found {
        None => Err(CargoError::NoVersion { path }),
        Some(found) if found == ggen_runtime_core::VERSION => Ok(()),
        Some(found) => Err(CargoError::Skew {
            path,
            found,
            expected: ggen_runtime_core::VERSION,
            ggen: crate::manifest::VERSION,
        }),
    }
}

/// Warnings about the workspace at `root` for the crate folders `crates`.
///
/// Returns nothing when `root` holds no `Cargo.toml` with a `[workspace]`
/// table (the output is not meant for a workspace).
pub fn check(
    root: &Path,
    out_dir: &str,
    crates: &[PathBuf],
    runtime: Option<&Runtime>,
) -> Vec<String> {
    let manifest = root.join("Cargo.toml");
    let table = match read_manifest(&manifest) {
        Ok(table) => table,
        Err(CargoError::Parse { .. }) => {
            return vec![
                "cannot parse `Cargo.toml` of the workspace; skipped the membership check"
                    .to_owned(),
            ];
        }
        Err(_) => return Vec::new(),
    };
    let Some(workspace) = table.get("workspace").and_then(toml::Value::as_table) else {
        return Vec::new();
    };
    let mut warnings = Vec::new();
    let has_runtime = workspace
        .get("dependencies")
        .and_then(toml::Value::as_table)
        .is_some_and(|deps| deps.contains_key("ggen-runtime"));
    if !has_runtime && runtime.is_none() {
        warnings.push(
            "`ggen-runtime` is not a workspace dependency: add `ggen-runtime = { path = \"<path to the runtime>\" }` \
             (or a version) under `[workspace.dependencies]` in `Cargo.toml`, or name it in ggen.toml: `runtime = { path = \"…\" }`"
                .to_owned(),
        );
    }

    let metadata = cargo_metadata::MetadataCommand::new()
        .manifest_path(&manifest)
        .no_deps()
        .exec();
    let members: Vec<PathBuf> = match metadata {
        Ok(metadata) => metadata
            .workspace_packages()
            .iter()
            .filter_map(|p| {
                p.manifest_path
                    .parent()
                    .map(|d| PathBuf::from(d.as_std_path()))
            })
            .filter_map(|d| fs_err::canonicalize(d).ok())
            .collect(),
        Err(error) => {
            warnings.push(format!(
                "`cargo metadata` failed, so workspace membership was not checked: {}",
                crate::diagnostic::error_chain(&error)
            ));
            return warnings;
        }
    };
    let missing: Vec<&PathBuf> = crates
        .iter()
        .filter(|dir| {
            fs_err::canonicalize(dir)
                .map(|dir| !members.contains(&dir))
                .unwrap_or(true)
        })
        .collect();
    if !missing.is_empty() {
        let names: Vec<String> = missing
            .iter()
            .map(|d| format!("`{}`", crate::load::display_path(d)))
            .collect();
        warnings.push(format!(
            "{}: add `\"{out_dir}/*\"` to `members` (and `default-members`, if set) under `[workspace]` in `Cargo.toml`",
            if names.len() == 1 {
                format!("{} is not a workspace member", names[0])
            } else {
                format!("{} are not workspace members", names.join(", "))
            }
        ));
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_paths_are_relative_to_the_crate() {
        let dep = |path: &str, parent: &str| {
            dependency(
                &Runtime::Path(PathBuf::from(path)),
                Path::new(""),
                Path::new(parent),
            )
        };
        assert_eq!(dep("runtime", "generated"), "{ path = \"../../runtime\" }");
        assert_eq!(
            dep("../ggen/runtime", "out/crates"),
            "{ path = \"../../../../ggen/runtime\" }"
        );
        assert_eq!(dep("./generated/x", "generated"), "{ path = \"../x\" }");
        // A crate folder above the project root (`--out ../x`): the climb
        // back goes through the project's own folder name.
        assert_eq!(
            dependency(
                &Runtime::Path(PathBuf::from("runtime")),
                Path::new("/work/proj"),
                Path::new("../x"),
            ),
            "{ path = \"../../proj/runtime\" }"
        );
        assert_eq!(
            dep("/opt/ggen/runtime", "generated"),
            "{ path = \"/opt/ggen/runtime\" }"
        );
        assert_eq!(
            dependency(
                &Runtime::Version("0.1".to_owned()),
                Path::new(""),
                Path::new("g")
            ),
            "{ version = \"0.1\" }"
        );
    }

    #[test]
    fn settings_come_from_the_workspace_beside_ggen_toml() {
        let dir = tempfile::tempdir().unwrap();
        let own = PackageSettings::detect(dir.path(), Path::new("generated"), None).unwrap();
        assert_eq!(own.edition.as_deref(), Some(EDITION));
        assert_eq!(own.rust_version.as_deref(), Some(RUST_VERSION));
        assert!(own.own_lints);
        fs_err::write(
            dir.path().join("Cargo.toml"),
            "[workspace]\nmembers = []\n[workspace.package]\nedition = \"2021\"\n[workspace.lints.rust]\nunsafe_code = \"forbid\"\n",
        )
        .unwrap();
        let some = PackageSettings::detect(dir.path(), Path::new("generated"), None).unwrap();
        assert_eq!(some.edition, None);
        assert_eq!(some.rust_version.as_deref(), Some(RUST_VERSION));
        assert!(!some.own_lints);
    }

    #[test]
    fn a_path_runtime_of_another_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = Runtime::Path(PathBuf::from("rt"));
        let missing = check_runtime(dir.path(), Some(&runtime)).unwrap_err();
        assert!(
            matches!(missing, CargoError::NoRuntime { .. }),
            "{missing:?}"
        );
        fs_err::create_dir_all(dir.path().join("rt")).unwrap();
        let write = |text: &str| fs_err::write(dir.path().join("rt/Cargo.toml"), text).unwrap();
        write(&format!(
            "[package]\nname = \"ggen-runtime\"\nversion = \"{}\"\n",
            ggen_runtime_core::VERSION
        ));
        check_runtime(dir.path(), Some(&runtime)).unwrap();
        write("[package]\nname = \"ggen-runtime\"\nversion = \"0.0.1\"\n");
        let error = check_runtime(dir.path(), Some(&runtime))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("is ggen-runtime `0.0.1`, but this ggen"),
            "{error}"
        );
        // Inherited from the runtime's workspace, as in this repository.
        write("[package]\nname = \"ggen-runtime\"\nversion.workspace = true\n");
        fs_err::write(
            dir.path().join("Cargo.toml"),
            format!(
                "[workspace]\n[workspace.package]\nversion = \"{}\"\n",
                ggen_runtime_core::VERSION
            ),
        )
        .unwrap();
        check_runtime(dir.path(), Some(&runtime)).unwrap();
        assert!(check_runtime(dir.path(), None).is_ok());
    }
}
