//! After a build into a cargo workspace: check (with `cargo metadata`) that
//! every generated crate is a workspace member and that `ggen-runtime` is a
//! workspace dependency, and say exactly what to add when not. Problems are
//! warnings: the generated files are correct either way.

use std::path::{Path, PathBuf};

/// Warnings about the workspace at `root` for the crate folders `crates`.
///
/// Returns nothing when `root` holds no `Cargo.toml` with a `[workspace]`
/// table (the output is not meant for a workspace).
pub fn check(root: &Path, out_dir: &str, crates: &[PathBuf]) -> Vec<String> {
    let manifest = root.join("Cargo.toml");
    let Ok(text) = fs_err::read_to_string(&manifest) else {
        return Vec::new();
    };
    let Ok(table) = toml::from_str::<toml::Table>(&text) else {
        return vec![
            "cannot parse `Cargo.toml` of the workspace; skipped the membership check".to_owned(),
        ];
    };
    let Some(workspace) = table.get("workspace").and_then(toml::Value::as_table) else {
        return Vec::new();
    };
    let mut warnings = Vec::new();
    let has_runtime = workspace
        .get("dependencies")
        .and_then(toml::Value::as_table)
        .is_some_and(|deps| deps.contains_key("ggen-runtime"));
    if !has_runtime {
        warnings.push(
            "`ggen-runtime` is not a workspace dependency: add `ggen-runtime = { path = \"<path to the runtime>\" }` \
             (or a version) under `[workspace.dependencies]` in `Cargo.toml`"
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
