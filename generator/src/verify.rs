//! `bundle --verify` and `--with-binary`: a generated crate built and tested
//! in a temporary cargo workspace of its own, before it is bundled.
//!
//! The workspace is a folder of the target directory
//! (`target/ggen-verify/<project>/`, the same at every run) holding the crate (rendered for that
//! location, so a `path` runtime still resolves), a root `Cargo.toml` made
//! from the project's `[workspace]` (its `package`, `dependencies`, `lints`
//! and profiles, with every dependency `path` made absolute) and a copy of
//! the project's `Cargo.lock`, so dependencies resolve to the versions the
//! project pinned. It builds into the project's target folder
//! (`CARGO_TARGET_DIR` or `target/`), so compiled dependencies are shared.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use thiserror::Error;

use crate::load::display_path;

/// Why a crate could not be verified.
#[derive(Debug, Error)]
pub enum VerifyError {
    /// The project has no `Cargo.toml` with a `[workspace]` to copy.
    #[error(
        "`{path}` has no `[workspace]`: `--verify` and `--with-binary` build the crate in a workspace made from the project's"
    )]
    NoWorkspace {
        /// The project's `Cargo.toml`.
        path: String,
    },
    /// The project's `Cargo.toml` is not TOML.
    #[error("cannot parse `{path}`")]
    Parse {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: toml::de::Error,
    },
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
    /// cargo failed: the crate does not build or its tests fail.
    #[error("`cargo {command}` failed for `{krate}` (exit {code}):\n{output}")]
    Cargo {
        /// The cargo subcommand line.
        command: String,
        /// The crate.
        krate: String,
        /// Its exit code (-1: killed by a signal).
        code: i32,
        /// The tail of its output.
        output: String,
    },
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> VerifyError {
    let path = display_path(path);
    move |source| VerifyError::Io {
        action,
        path,
        source,
    }
}

/// A temporary workspace holding one crate.
#[derive(Debug)]
pub struct Workspace {
    dir: PathBuf,
    krate: String,
    target: PathBuf,
}

impl Workspace {
    /// Makes the workspace folder for the crate named `krate` in the
    /// folder `id`, with the project at `root`; the crate's files are
    /// written with [`Workspace::write`].
    pub fn new(root: &Path, id: &str, krate: &str) -> Result<Workspace, VerifyError> {
        let root = if root.as_os_str().is_empty() {
            Path::new(".")
        } else {
            root
        };
        let manifest_path = root.join("Cargo.toml");
        let text = fs_err::read_to_string(&manifest_path).map_err(io("read", &manifest_path))?;
        let manifest: toml::Table = toml::from_str(&text).map_err(|source| VerifyError::Parse {
            path: display_path(&manifest_path),
            source,
        })?;
        let Some(workspace) = manifest.get("workspace").and_then(toml::Value::as_table) else {
            return Err(VerifyError::NoWorkspace {
                path: display_path(&manifest_path),
            });
        };
        let root = std::path::absolute(root).map_err(io("resolve", root))?;
        let target = match std::env::var_os("CARGO_TARGET_DIR") {
            // Relative to where ggen runs, as cargo reads it.
            Some(dir) => {
                std::path::absolute(PathBuf::from(&dir)).map_err(io("resolve", Path::new(&dir)))?
            }
            None => root.join("target"),
        };
        // One folder per project, the same at every run: cargo then reuses
        // what it built for the crate last time instead of piling up copies.
        let project = crate::digest::sha256_hex(root.to_string_lossy().as_bytes());
        let dir = target.join("ggen-verify").join(&project[..16]);
        if dir.exists() {
            fs_err::remove_dir_all(&dir).map_err(io("clear", &dir))?;
        }
        fs_err::create_dir_all(&dir).map_err(io("create", &dir))?;

        let mut ws = toml::Table::new();
        ws.insert("members".into(), toml::Value::Array(vec![id.into()]));
        for key in ["resolver", "package", "lints"] {
            if let Some(value) = workspace.get(key) {
                ws.insert(key.into(), value.clone());
            }
        }
        if let Some(deps) = workspace
            .get("dependencies")
            .and_then(toml::Value::as_table)
        {
            let mut deps = deps.clone();
            for (_, dep) in deps.iter_mut() {
                if let Some(path) = dep.get_mut("path")
                    && let Some(relative) = path.as_str()
                    && Path::new(relative).is_relative()
                {
                    *path = root.join(relative).to_string_lossy().into_owned().into();
                }
            }
            ws.insert("dependencies".into(), deps.into());
        }
        let mut out = toml::Table::new();
        out.insert("workspace".into(), ws.into());
        if let Some(profile) = manifest.get("profile") {
            out.insert("profile".into(), profile.clone());
        }
        let cargo_toml = dir.as_path().join("Cargo.toml");
        fs_err::write(&cargo_toml, toml::to_string(&out).unwrap_or_default())
            .map_err(io("write", &cargo_toml))?;
        let lock = root.join("Cargo.lock");
        if lock.is_file() {
            fs_err::copy(&lock, dir.as_path().join("Cargo.lock")).map_err(io("copy", &lock))?;
        }
        for file in ["clippy.toml", "rustfmt.toml", ".rustfmt.toml"] {
            if root.join(file).is_file() {
                fs_err::copy(root.join(file), dir.as_path().join(file))
                    .map_err(io("copy", &root.join(file)))?;
            }
        }
        Ok(Workspace {
            dir,
            krate: krate.to_owned(),
            target,
        })
    }

    /// The folder the crate goes in (absolute): `<workspace>/<id>`'s parent.
    pub fn path(&self) -> &Path {
        self.dir.as_path()
    }

    /// Writes the crate's files (paths relative to its folder `id`).
    pub fn write<'a>(
        &self,
        id: &str,
        files: impl IntoIterator<Item = (&'a String, &'a String)>,
    ) -> Result<(), VerifyError> {
        for (path, text) in files {
            let full = self.dir.as_path().join(id).join(path);
            if let Some(parent) = full.parent() {
                fs_err::create_dir_all(parent).map_err(io("create", parent))?;
            }
            fs_err::write(&full, text).map_err(io("write", &full))?;
        }
        Ok(())
    }

    /// `cargo test`: the crate builds and its generated tests pass.
    pub fn test(&self) -> Result<(), VerifyError> {
        self.cargo(&["test", "--quiet", "-p", &self.krate])
    }

    /// `cargo build --release`, then the binary's bytes.
    pub fn release_binary(&self) -> Result<Vec<u8>, VerifyError> {
        self.cargo(&["build", "--release", "--quiet", "-p", &self.krate])?;
        let binary = self.target.join("release").join(format!(
            "{}{}",
            self.krate,
            std::env::consts::EXE_SUFFIX
        ));
        fs_err::read(&binary).map_err(io("read", &binary))
    }

    fn cargo(&self, args: &[&str]) -> Result<(), VerifyError> {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let output: Output = Command::new(cargo)
            .args(args)
            .current_dir(self.dir.as_path())
            .env("CARGO_TARGET_DIR", &self.target)
            .output()
            .map_err(io("run", Path::new("cargo")))?;
        if output.status.success() {
            return Ok(());
        }
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        Err(VerifyError::Cargo {
            command: args.join(" "),
            krate: self.krate.clone(),
            code: output.status.code().unwrap_or(-1),
            output: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        })
    }
}
