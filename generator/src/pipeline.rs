//! The whole pipeline, one function per command: [`validate`](fn@validate), [`build`]
//! (also `--check` and `--dry-run`), [`explain`] and [`init`].
//!
//! `build` renders every spec in memory first (on up to `jobs` threads; the
//! result does not depend on the thread count), and writes nothing unless
//! every stage succeeded for every spec.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::bundle::{self, Bundle, BundleError, Verdict, Written};
use crate::config::{self, Config};
use crate::diagnostic::Diagnostic;
use crate::explain as explain_view;
use crate::format::{self, FormatError};
use crate::init::{self as init_project, InitError, InitOptions, Initialized};
use crate::lab::Settle;
use crate::lab::backtest::{self, BacktestError, Gates, Side};
use crate::lab::recorded::Recorded;
use crate::lab::scenario::{self, RunError, ScenarioReport};
use crate::load::{self, Source};
use crate::manifest::{self, Manifest};
use crate::model::{self, LowerError, Model};
use crate::plan::{self, CratePlan, Op, PlanError};
use crate::render::{self, RenderError, TemplateSet};
use crate::validate::{self, ValidateError};
use crate::verify::{self, VerifyError};
use crate::workspace::{self, CargoError, PackageSettings};
use crate::write::{self, Applied, WriteError};

/// Why a command failed.
#[derive(Debug, Error)]
pub enum BuildError {
    /// Input files are invalid: every problem found, located.
    #[error("{} problem(s) in the input", .0.len())]
    Invalid(Vec<Diagnostic>),
    /// Two specs claim the same SKU id (and so the same output folder).
    #[error("specs `{first}` and `{second}` both have sku id `{id}`")]
    DuplicateId {
        /// The shared `sku.id`.
        id: String,
        /// The spec that claimed it first.
        first: String,
        /// The spec that claimed it again.
        second: String,
    },
    /// A spec lies outside the project root, so no stable path can name it.
    #[error("spec `{spec}` is outside the project root `{root}`")]
    OutsideRoot {
        /// The spec as named.
        spec: String,
        /// The project root (the folder of `ggen.toml`).
        root: String,
    },
    /// Files were edited by hand; nothing was written.
    #[error("refusing to overwrite {} hand-edited or unowned file(s) (use `--force`): {}", .0.len(), .0.join(", "))]
    Refused(Vec<String>),
    /// `init` refused or failed.
    #[error(transparent)]
    Init(#[from] InitError),
    /// No `ggen.toml` in the folder or any parent, and no `--config`.
    #[error(
        "no `ggen.toml` in `{searched}` or any parent folder: create a project with `ggen init <id>`, or pass `--config FILE`"
    )]
    NoConfig {
        /// Where the search started.
        searched: String,
    },
    /// The validation machinery failed (e.g. a broken embedded schema).
    #[error(transparent)]
    Validate(ValidateError),
    /// A checked spec could not be lowered (a broken validation guarantee).
    #[error("cannot lower `{spec}`")]
    Lower {
        /// The spec's project-relative path.
        spec: String,
        /// The broken guarantee.
        #[source]
        source: LowerError,
    },
    /// Templates failed to load or render.
    #[error(transparent)]
    Render(#[from] RenderError),
    /// A rendered file is not valid output.
    #[error("generating from `{spec}`")]
    Format {
        /// The spec's project-relative path.
        spec: String,
        /// What is wrong with the file.
        #[source]
        source: Box<FormatError>,
    },
    /// The disk could not be compared.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The disk could not be written.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// The project's cargo side does not fit: an unreadable `Cargo.toml`, or
    /// a `path` runtime of another version than ggen generates for.
    #[error(transparent)]
    Cargo(#[from] CargoError),
    /// A bundle could not be made, written or read.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// A crate could not be verified, or failed to build or test.
    #[error(transparent)]
    Verify(#[from] VerifyError),
    /// A scenario could not run to its end.
    #[error(transparent)]
    Test(#[from] RunError),
    /// A spec named as `REV:PATH` could not be read from git.
    #[error("cannot read `{spec}` from git: {message}")]
    Git {
        /// The spec as named.
        spec: String,
        /// What git said.
        message: String,
    },
    /// A backtest could not run to its end.
    #[error(transparent)]
    Backtest(#[from] BacktestError),
    /// Arguments clap accepts but the command cannot use (no recorded
    /// inputs named, a percentage that is not a finite number ≥ 0).
    #[error("{0}")]
    Usage(String),
    /// Other file system failures.
    #[error("cannot {action} `{path}`")]
    Io {
        /// What was being done (`resolve`, `list`, `create`, …).
        action: &'static str,
        /// The path it was done to.
        path: String,
        /// The I/O failure.
        #[source]
        source: std::io::Error,
    },
}

impl BuildError {
    /// The process exit code: 1 for rejected input, 2 for internal failures.
    pub fn exit_code(&self) -> u8 {
        match self {
            BuildError::Init(error) => error.exit_code(),
            BuildError::Plan(error) => error.exit_code(),
            BuildError::Write(error) => error.exit_code(),
            BuildError::Invalid(_)
            | BuildError::DuplicateId { .. }
            | BuildError::OutsideRoot { .. }
            | BuildError::Refused(_)
            | BuildError::NoConfig { .. }
            | BuildError::Usage(_)
            | BuildError::Git { .. }
            | BuildError::Backtest(
                BacktestError::Recorded(_)
                | BacktestError::NoInputs { .. }
                | BacktestError::Unreadable { .. },
            )
            | BuildError::Cargo(_)
            | BuildError::Bundle(BundleError::Epoch(_) | BundleError::SpecChanged { .. })
            | BuildError::Verify(VerifyError::Cargo { .. } | VerifyError::NoWorkspace { .. })
            | BuildError::Render(
                RenderError::UnknownOverride { .. } | RenderError::OverrideDir { .. },
            ) => 1,
            BuildError::Validate(_)
            | BuildError::Lower { .. }
            | BuildError::Render(_)
            | BuildError::Format { .. }
            | BuildError::Bundle(_)
            | BuildError::Verify(_)
            | BuildError::Test(_)
            | BuildError::Backtest(_)
            | BuildError::Io { .. } => 2,
        }
    }
}

impl From<ValidateError> for BuildError {
    /// Violations are rejected input; anything else is an internal fault.
    fn from(error: ValidateError) -> Self {
        match error {
            ValidateError::Invalid(found) => BuildError::Invalid(found),
            internal => BuildError::Validate(internal),
        }
    }
}

/// A project: a `ggen.toml` and the folder holding it (the root every
/// project path is relative to).
#[derive(Debug, Clone)]
pub struct Project {
    /// Folder of `ggen.toml` (empty for the current directory).
    pub root: PathBuf,
    /// The checked config.
    pub config: Config,
}

/// The project config `ggen` uses when none is named: `ggen.toml` in
/// `start` or the nearest parent folder that has one, as cargo finds
/// `Cargo.toml`. The path is relative to `start` (`ggen.toml`,
/// `../ggen.toml`, …) so messages stay short; paths in the config are
/// relative to the file's own folder wherever the search started.
pub fn discover_config(start: &Path) -> Result<PathBuf, BuildError> {
    let mut relative = PathBuf::new();
    for folder in start.ancestors() {
        let candidate = folder.join(config::FILE_NAME);
        if candidate.is_file() {
            return Ok(relative.join(config::FILE_NAME));
        }
        relative.push("..");
    }
    Err(BuildError::NoConfig {
        searched: crate::load::display_path(start),
    })
}

impl Project {
    /// Loads the project whose config is `config_path`.
    pub fn open(config_path: &Path) -> Result<Project, BuildError> {
        let config = config::load(config_path).map_err(BuildError::Invalid)?;
        Ok(Project {
            root: config_path.parent().unwrap_or(Path::new("")).to_owned(),
            config,
        })
    }

    /// The spec files to work on: `specs` if given, else those ggen.toml names.
    pub fn spec_files(&self, specs: &[PathBuf]) -> Result<Vec<PathBuf>, BuildError> {
        if specs.is_empty() {
            self.config
                .spec_files(&self.root)
                .map_err(|d| BuildError::Invalid(vec![d]))
        } else {
            Ok(config::distinct_files(specs))
        }
    }

    /// The template set: embedded, shadowed by the config's override folder.
    pub fn templates(&self) -> Result<TemplateSet, BuildError> {
        Ok(match &self.config.templates {
            Some(dir) => TemplateSet::with_overrides(&self.root.join(dir))?,
            None => TemplateSet::embedded()?,
        })
    }

    /// The package settings of crates written into `out` (relative to the
    /// project root, or absolute), from the `Cargo.toml` beside ggen.toml.
    pub fn package_settings(&self, out: &Path) -> Result<PackageSettings, BuildError> {
        Ok(PackageSettings::detect(
            &self.root,
            out,
            self.config.runtime.as_ref(),
        )?)
    }
}

/// `p` made absolute with links resolved (the empty path is the cwd).
fn canonical(p: &Path) -> Result<PathBuf, BuildError> {
    let p = if p.as_os_str().is_empty() {
        Path::new(".")
    } else {
        p
    };
    fs_err::canonicalize(p).map_err(|source| BuildError::Io {
        action: "resolve",
        path: load::display_path(p),
        source,
    })
}

/// `path` relative to `root` (already [`canonical`]), `/`-separated.
fn relative_to(root: &Path, path: &Path) -> Result<String, BuildError> {
    let full = canonical(path)?;
    let relative = full
        .strip_prefix(root)
        .map_err(|_| BuildError::OutsideRoot {
            spec: load::display_path(path),
            root: load::display_path(root),
        })?;
    let name = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/");
    match name_problem(&name, &load::display_path(path)) {
        Some(problem) => Err(BuildError::Invalid(vec![problem])),
        None => Ok(name),
    }
}

/// What is wrong with a spec's file name `name`, if anything: ggen writes
/// it into generated comments, strings and docs, where a control or bidi
/// character, a quote, a backslash or a backtick would need escaping in
/// every language (rustc refuses bidi controls even in comments), and a
/// name that is not UTF-8 would be written altered.
fn name_problem(name: &str, file: &str) -> Option<Diagnostic> {
    let found = name.chars().find(|&c| {
        crate::escape::is_hazard(c) || matches!(c, '"' | '\\' | '`' | char::REPLACEMENT_CHARACTER)
    })?;
    Some(Diagnostic::whole_file(
        file,
        format!(
            "the file name holds `{}`, which ggen would have to write into generated comments, strings and docs: rename the file (letters, digits, spaces, `.`, `_`, `-`)",
            found.escape_unicode()
        ),
    ))
}

/// One spec rendered in memory.
#[derive(Debug, Clone)]
pub struct Generated {
    /// The lowered model.
    pub model: Model,
    /// Every output file by path inside the crate folder, manifest included.
    pub files: BTreeMap<String, String>,
}

/// Validates every spec (a file named twice once) and that no two share a
/// `sku.id`; `Ok` with the checked sources, or every diagnostic of every spec.
pub fn validate(paths: &[PathBuf]) -> Result<Vec<Source>, BuildError> {
    let mut sources = Vec::new();
    let mut ids = Vec::new();
    let mut problems = Vec::new();
    for path in config::distinct_files(paths) {
        let file = load::display_path(&path);
        if let Some(problem) = name_problem(&file, &file) {
            problems.push(problem);
            continue;
        }
        match validate::check_file(&path) {
            Ok((source, checked)) => {
                sources.push(source);
                ids.push(checked.sku.id.clone());
            }
            Err(ValidateError::Invalid(found)) => problems.extend(found),
            Err(internal) => return Err(BuildError::Validate(internal)),
        }
    }
    problems.extend(validate::duplicate_ids(
        sources.iter().zip(ids.iter().map(String::as_str)),
    ));
    if problems.is_empty() {
        Ok(sources)
    } else {
        Err(BuildError::Invalid(problems))
    }
}

/// Runs load → validate → lower for one spec file; `spec_path` is its
/// project-relative name for output.
pub fn model(path: &Path, spec_path: &str) -> Result<Model, BuildError> {
    Ok(model_of(path, spec_path)?.1)
}

/// [`model`] with the spec's source.
fn model_of(path: &Path, spec_path: &str) -> Result<(Source, Model), BuildError> {
    let (source, checked) = validate::check_file(path)?;
    let model =
        model::lower(&checked, spec_path, &source.sha256).map_err(|source| BuildError::Lower {
            spec: spec_path.to_owned(),
            source,
        })?;
    Ok((source, model))
}

/// Renders and formats `model` with `templates` and the package `settings`
/// of its `Cargo.toml`, and adds the manifest.
pub fn generate(
    model: Model,
    templates: &TemplateSet,
    settings: &PackageSettings,
) -> Result<Generated, BuildError> {
    let mut files = BTreeMap::new();
    for file in render::render(&model, templates, settings)? {
        let text =
            format::format(&file, &model.spec_path).map_err(|source| BuildError::Format {
                spec: model.spec_path.clone(),
                source: Box::new(source),
            })?;
        files.insert(file.path, text);
    }
    let manifest = Manifest::new(&model, templates, &files);
    files.insert(manifest::FILE_NAME.to_owned(), manifest.to_json());
    Ok(Generated { model, files })
}

/// Generates every spec in memory on up to `jobs` threads, for the
/// config's `out_dir`. The result is in `paths` order whatever the thread
/// count; all invalid specs are reported together.
pub fn generate_all(
    project: &Project,
    paths: &[PathBuf],
    jobs: usize,
) -> Result<Vec<Generated>, BuildError> {
    let settings = project.package_settings(&project.config.out_dir)?;
    generate_with(project, paths, jobs, &settings)
}

/// [`generate_all`] with the given package settings.
fn generate_with(
    project: &Project,
    paths: &[PathBuf],
    jobs: usize,
    settings: &PackageSettings,
) -> Result<Vec<Generated>, BuildError> {
    let templates = project.templates()?;
    let root = canonical(&project.root)?;
    let jobs = jobs.clamp(1, paths.len().max(1));
    let one = |path: &PathBuf| -> Result<Generated, BuildError> {
        let spec_path = match relative_to(&root, path) {
            // Not there: the validator's located `cannot read` (rejected input).
            Err(BuildError::Io { .. }) if fs_err::metadata(path).is_err() => {
                validate::check_file(path)?;
                relative_to(&root, path)?
            }
            other => other?,
        };
        generate(model(path, &spec_path)?, &templates, settings)
    };
    let mut results: Vec<Option<Result<Generated, BuildError>>> = Vec::new();
    results.resize_with(paths.len(), || None);
    if jobs == 1 {
        for (slot, path) in results.iter_mut().zip(paths) {
            *slot = Some(one(path));
        }
    } else {
        std::thread::scope(|scope| {
            let chunk = paths.len().div_ceil(jobs);
            for (slots, chunk_paths) in results.chunks_mut(chunk).zip(paths.chunks(chunk)) {
                let one = &one;
                scope.spawn(move || {
                    for (slot, path) in slots.iter_mut().zip(chunk_paths) {
                        *slot = Some(one(path));
                    }
                });
            }
        });
    }

    let mut generated = Vec::with_capacity(paths.len());
    let mut problems = Vec::new();
    let mut first_error = None;
    for result in results.into_iter().flatten() {
        match result {
            Ok(g) => generated.push(g),
            Err(BuildError::Invalid(found)) => problems.extend(found),
            Err(other) => {
                first_error.get_or_insert(other);
            }
        }
    }
    if !problems.is_empty() {
        return Err(BuildError::Invalid(problems));
    }
    if let Some(error) = first_error {
        return Err(error);
    }
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    for g in &generated {
        if let Some(first) = seen.insert(&g.model.id, &g.model.spec_path) {
            return Err(BuildError::DuplicateId {
                id: g.model.id.clone(),
                first: first.to_owned(),
                second: g.model.spec_path.clone(),
            });
        }
    }
    Ok(generated)
}

/// What `build` does with its plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Write changed files.
    Write,
    /// Write nothing; report drift.
    Check,
    /// Write nothing; report the plan.
    DryRun,
}

/// Options of `ggen build`.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Specs to build (empty: those of ggen.toml). Explicit specs never make other folders stale.
    pub specs: Vec<PathBuf>,
    /// Output folder instead of the config's `out_dir` (relative to the cwd).
    pub out_dir: Option<PathBuf>,
    /// Write, check or dry-run.
    pub mode: Mode,
    /// Overwrite hand-edited files.
    pub force: bool,
    /// Worker threads for rendering (≥ 1).
    pub jobs: usize,
}

/// The outcome of `ggen build`.
#[derive(Debug, Clone)]
pub struct BuildReport {
    /// The mode it ran in.
    pub mode: Mode,
    /// One plan per crate folder (produced ones in spec order, then stale ones).
    pub plans: Vec<CratePlan>,
    /// What was written (write mode only).
    pub applied: Option<Applied>,
    /// Non-fatal problems, e.g. workspace membership.
    pub warnings: Vec<String>,
    /// Entries of the output folder ggen neither wrote nor produces (a
    /// folder without a manifest, a file), as `out/name`; listed when the
    /// whole project is built. Left alone, but `--check` fails on them.
    pub foreign: Vec<String>,
}

impl BuildReport {
    /// Whether the disk differs from what the specs produce.
    pub fn has_drift(&self) -> bool {
        self.crates_drift() || !self.foreign.is_empty()
    }

    /// Whether a crate folder differs from what its spec produces (or a
    /// stale one is left): what `ggen build` would change.
    pub fn crates_drift(&self) -> bool {
        self.plans.iter().any(CratePlan::has_drift)
    }

    /// Unified diffs of every drifting file, in plan order.
    pub fn diffs(&self) -> String {
        let mut out = String::new();
        for plan in &self.plans {
            for change in &plan.changes {
                out.push_str(&plan::diff(plan, change));
            }
        }
        out
    }
}

/// The entries of `out`, sorted: folders that hold a ggen manifest (crates
/// ggen wrote), and everything else but hidden files (`.gitignore`). A
/// hidden folder counts: cargo's `generated/*` member glob matches it.
/// Links are never taken for crates (ggen writes none).
fn existing_entries(out: &Path) -> Result<(Vec<String>, Vec<String>), BuildError> {
    let entries = match fs_err::read_dir(out) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), Vec::new())),
        Err(source) => {
            return Err(BuildError::Io {
                action: "list",
                path: load::display_path(out),
                source,
            });
        }
    };
    let (mut crates, mut others) = (Vec::new(), Vec::new());
    for entry in entries {
        let entry = entry.map_err(|source| BuildError::Io {
            action: "list",
            path: load::display_path(out),
            source,
        })?;
        let name = entry.file_name().to_string_lossy().into_owned();
        // A link is never a crate of ggen's (it writes none): not followed.
        let kind = entry.file_type().ok();
        let is_dir = kind.is_some_and(|t| t.is_dir());
        let is_file = kind.is_some_and(|t| t.is_file());
        if is_dir && entry.path().join(manifest::FILE_NAME).is_file() {
            crates.push(name);
        } else if !(name.starts_with('.') && is_file) {
            others.push(name);
        }
    }
    crates.sort();
    others.sort();
    Ok((crates, others))
}

/// `ggen build`: generate, plan against the disk, then write, check or report.
pub fn build(project: &Project, options: &BuildOptions) -> Result<BuildReport, BuildError> {
    let paths = project.spec_files(&options.specs)?;
    workspace::check_runtime(&project.root, project.config.runtime.as_ref())?;
    let (out, out_display) = match &options.out_dir {
        Some(dir) => (dir.clone(), load::display_path(dir)),
        None => (
            project.root.join(&project.config.out_dir),
            load::display_path(&project.config.out_dir),
        ),
    };
    // `--out` is relative to the cwd: seen from the project root, lexically.
    let out_from_root = match &options.out_dir {
        Some(dir) => relative_to_root(&project.root, dir)?,
        None => project.config.out_dir.clone(),
    };
    let settings = project.package_settings(&out_from_root)?;
    let generated = generate_with(project, &paths, options.jobs, &settings)?;

    let mut plans = Vec::new();
    for g in &generated {
        plans.push(plan::plan_crate(
            &g.model.id,
            &format!("{out_display}/{}", g.model.id),
            &out.join(&g.model.id),
            Some(&g.files),
            options.force,
        )?);
    }
    let mut foreign = Vec::new();
    if options.specs.is_empty() {
        let produced = |name: &str| generated.iter().any(|g| g.model.id == name);
        let (crates, others) = existing_entries(&out)?;
        for name in crates.iter().filter(|name| !produced(name)) {
            plans.push(plan::plan_crate(
                name,
                &format!("{out_display}/{name}"),
                &out.join(name),
                None,
                options.force,
            )?);
        }
        // A produced crate's folder without a manifest (written by hand, or
        // by a build that stopped before its manifest) is planned above.
        foreign.extend(
            others
                .iter()
                .filter(|name| !produced(name))
                .map(|name| format!("{out_display}/{name}")),
        );
    }

    let mut report = BuildReport {
        mode: options.mode,
        plans,
        applied: None,
        warnings: Vec::new(),
        foreign,
    };
    if options.mode == Mode::Write {
        for path in &report.foreign {
            report.warnings.push(format!(
                "`{path}` is not a crate ggen wrote (no `{}`): ggen leaves it alone, but `build --check` fails until it is moved out of the output folder",
                manifest::FILE_NAME
            ));
        }
    }
    for plan in &report.plans {
        for change in &plan.changes {
            if change.op == Op::Keep {
                report.warnings.push(format!(
                    "kept `{}/{}`: no longer generated, but edited by hand",
                    plan.dir, change.path
                ));
            }
            if change.op == Op::Unowned && options.mode == Mode::Write {
                report.warnings.push(format!(
                    "`{}/{}` is not generated by ggen: `build --check` fails until it is moved out of the crate folder",
                    plan.dir, change.path
                ));
            }
        }
    }
    if options.mode != Mode::Write {
        return Ok(report);
    }
    let refused: Vec<String> = report
        .plans
        .iter()
        .flat_map(|p| p.refused().map(move |c| format!("`{}/{}`", p.dir, c.path)))
        .collect();
    if !refused.is_empty() {
        return Err(BuildError::Refused(refused));
    }
    report.applied = Some(write::apply(&report.plans, &out)?);
    if options.out_dir.is_none() {
        let crates: Vec<PathBuf> = generated.iter().map(|g| out.join(&g.model.id)).collect();
        report.warnings.extend(workspace::check(
            &project.root,
            &out_display,
            &crates,
            project.config.runtime.as_ref(),
        ));
    }
    Ok(report)
}

/// `dir` (relative to the cwd) as a path from the project root `root`
/// (relative to the cwd too); absolute when no relative path is known.
fn relative_to_root(root: &Path, dir: &Path) -> Result<PathBuf, BuildError> {
    let absolute = || {
        std::path::absolute(dir).map_err(|source| BuildError::Io {
            action: "resolve",
            path: load::display_path(dir),
            source,
        })
    };
    if dir.is_absolute() || root.is_absolute() {
        return absolute();
    }
    // Both relative to the cwd: climb out of `root`, then into `dir`.
    let mut path = PathBuf::new();
    for c in root.components() {
        match c {
            std::path::Component::Normal(_) => path.push(".."),
            std::path::Component::ParentDir => return absolute(),
            _ => {}
        }
    }
    Ok(path.join(dir))
}

/// Options of `ggen bundle`.
#[derive(Debug, Clone)]
pub struct BundleOptions {
    /// Specs to bundle (empty: those of ggen.toml).
    pub specs: Vec<PathBuf>,
    /// Write bundles here, or with `check`, compare with the bundles here.
    pub dir: PathBuf,
    /// Compare instead of write.
    pub check: bool,
    /// Build and test each crate in a temporary workspace first.
    pub verify: bool,
    /// Add the release binary.
    pub with_binary: bool,
    /// Rendering threads (≥ 1).
    pub jobs: usize,
}

/// A stage of one spec's bundle, for progress reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BundleStep {
    /// `cargo test` in a temporary workspace.
    Testing,
    /// `cargo build --release`.
    BuildingBinary,
    /// Packing and writing.
    Writing,
    /// Comparing with the folder's bundle.
    Checking,
    /// Finished.
    Done,
}

impl BundleStep {
    /// How the step is shown.
    pub const fn as_str(self) -> &'static str {
        match self {
            BundleStep::Testing => "building and testing",
            BundleStep::BuildingBinary => "building the release binary",
            BundleStep::Writing => "writing",
            BundleStep::Checking => "checking",
            BundleStep::Done => "done",
        }
    }
}

/// What `bundle` did for one spec.
#[derive(Debug, Clone)]
pub struct BundleOutcome {
    /// The SKU id.
    pub id: String,
    /// `<id>-<version>`.
    pub name: String,
    /// The spec's project-relative path.
    pub spec: String,
    /// Where it went (write mode).
    pub written: Option<Written>,
    /// What the comparison found (check mode).
    pub verdict: Option<Verdict>,
    /// Whether the crate was built and tested first.
    pub verified: bool,
    /// Whether the release binary is inside (written, or found by a
    /// check, which compares its recorded hash but does not rebuild it).
    pub binary: bool,
}

/// What `bundle` did.
#[derive(Debug, Clone)]
pub struct BundleReport {
    /// One per spec, in spec order.
    pub outcomes: Vec<BundleOutcome>,
    /// With `check` and no explicit specs: files in the folder that are no
    /// spec's bundle (a stale version, a leftover, an injected file).
    pub extra: Vec<String>,
}

/// `ggen bundle`: one bundle per spec, written to `options.dir` or (with
/// `check`) compared with the bundles there. `progress` hears
/// `(done, total, id, step)` as each spec moves on. With `verify`, every
/// crate is built and tested before anything is written.
pub fn bundle(
    project: &Project,
    options: &BundleOptions,
    progress: &mut dyn FnMut(usize, usize, &str, BundleStep),
) -> Result<BundleReport, BuildError> {
    let paths = project.spec_files(&options.specs)?;
    workspace::check_runtime(&project.root, project.config.runtime.as_ref())?;
    let settings = project.package_settings(&project.config.out_dir)?;
    let generated = generate_with(project, &paths, options.jobs, &settings)?;
    let root = canonical(&project.root)?;
    let spec_file = |g: &Generated| root.join(&g.model.spec_path);
    let total = generated.len();

    if options.check {
        let mut outcomes = Vec::with_capacity(total);
        for (i, g) in generated.iter().enumerate() {
            progress(i, total, &g.model.id, BundleStep::Checking);
            let name = format!("{}-{}", g.model.id, g.model.version);
            let binary_name = format!("{}{}", g.model.crate_name, std::env::consts::EXE_SUFFIX);
            let checked = bundle::check(
                |epoch, binary| Bundle::new(g, &spec_file(g), binary, epoch),
                &name,
                &binary_name,
                &options.dir,
            )?;
            outcomes.push(outcome(
                g,
                name,
                None,
                Some(checked.verdict),
                false,
                checked.binary,
            ));
        }
        progress(total, total, "", BundleStep::Done);
        // Without explicit specs, the folder should hold these bundles and nothing else.
        let extra = if options.specs.is_empty() {
            extra_files(&options.dir, &outcomes)?
        } else {
            Vec::new()
        };
        return Ok(BundleReport { outcomes, extra });
    }

    let epoch = bundle::source_date_epoch()?;
    let mut binaries = Vec::with_capacity(total);
    if options.verify || options.with_binary {
        let templates = project.templates()?;
        for (i, g) in generated.iter().enumerate() {
            let ws = verify::Workspace::new(&project.root, &g.model.id, &g.model.crate_name)?;
            // Rendered for the temporary location, so a `path` runtime resolves.
            let local =
                PackageSettings::detect(&project.root, ws.path(), project.config.runtime.as_ref())?;
            let files = generate(g.model.clone(), &templates, &local)?.files;
            ws.write(&g.model.id, &files)?;
            if options.verify {
                progress(i, total, &g.model.id, BundleStep::Testing);
                ws.test()?;
            }
            let binary = if options.with_binary {
                progress(i, total, &g.model.id, BundleStep::BuildingBinary);
                Some(bundle::Binary {
                    name: format!("{}{}", g.model.crate_name, std::env::consts::EXE_SUFFIX),
                    bytes: ws.release_binary()?,
                })
            } else {
                None
            };
            binaries.push(binary);
        }
    } else {
        binaries.resize(total, None);
    }

    let mut outcomes = Vec::with_capacity(total);
    for (i, (g, binary)) in generated.iter().zip(binaries).enumerate() {
        progress(i, total, &g.model.id, BundleStep::Writing);
        let has_binary = binary.is_some();
        let made = Bundle::new(g, &spec_file(g), binary, epoch)?;
        let written = made.write(&options.dir)?;
        outcomes.push(outcome(
            g,
            made.name,
            Some(written),
            None,
            options.verify,
            has_binary,
        ));
    }
    progress(total, total, "", BundleStep::Done);
    Ok(BundleReport {
        outcomes,
        extra: Vec::new(),
    })
}

/// The files in `dir` that none of `outcomes`' bundles is, sorted.
fn extra_files(dir: &Path, outcomes: &[BundleOutcome]) -> Result<Vec<String>, BuildError> {
    let expected: std::collections::BTreeSet<String> = outcomes
        .iter()
        .flat_map(|o| {
            [
                format!("{}.tar.gz", o.name),
                format!("{}.bundle.json", o.name),
            ]
        })
        .collect();
    let list = |source| BuildError::Io {
        action: "list",
        path: load::display_path(dir),
        source,
    };
    let mut extra = Vec::new();
    match fs_err::read_dir(dir) {
        Ok(entries) => {
            for entry in entries {
                let name = entry
                    .map_err(list)?
                    .file_name()
                    .to_string_lossy()
                    .into_owned();
                if !expected.contains(&name) {
                    extra.push(name);
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(list(e)),
    }
    extra.sort();
    Ok(extra)
}

fn outcome(
    g: &Generated,
    name: String,
    written: Option<Written>,
    verdict: Option<Verdict>,
    verified: bool,
    binary: bool,
) -> BundleOutcome {
    BundleOutcome {
        id: g.model.id.clone(),
        name,
        spec: g.model.spec_path.clone(),
        written,
        verdict,
        verified,
        binary,
    }
}

/// The scenarios of one spec and what they did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SpecTests {
    /// The spec, as named.
    pub spec: String,
    /// Its scenario file, as named.
    pub file: String,
    /// Whether the scenario file exists (a spec taken from ggen.toml may have none).
    pub found: bool,
    /// Every scenario, in file order.
    pub scenarios: Vec<ScenarioReport>,
}

/// What `ggen test` did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct TestReport {
    /// Per spec, in the order given.
    pub specs: Vec<SpecTests>,
}

impl TestReport {
    /// Scenarios that passed and that failed.
    pub fn counts(&self) -> (usize, usize) {
        let all = self.specs.iter().flat_map(|s| &s.scenarios);
        let passed = all.clone().filter(|s| s.passed()).count();
        (passed, all.count() - passed)
    }
}

/// `ggen test`: the scenario file beside each spec (or named instead of
/// it), run on the spec's interpreted pack. Specs and scenario files are
/// all checked before anything runs; a spec without a scenario file is an
/// error when `required` (it was named), else it is reported as untested.
pub fn test(paths: &[PathBuf], required: bool) -> Result<TestReport, BuildError> {
    let mut problems = Vec::new();
    let mut ready = Vec::new();
    let mut report = TestReport::default();
    let mut seen = std::collections::BTreeSet::new();
    let mut ids: Vec<(Source, String)> = Vec::new();
    for path in paths {
        // A spec named twice (or with its scenario file, or by another
        // path to the same file) runs once.
        let spec = scenario::spec_path(path).unwrap_or_else(|| path.clone());
        if !seen.insert(fs_err::canonicalize(&spec).unwrap_or(spec)) {
            continue;
        }
        let spec = if scenario::is_scenario_file(path) {
            scenario::spec_path(path).unwrap_or_else(|| path.clone())
        } else {
            path.clone()
        };
        let file = scenario::scenario_path(&spec);
        let shown = load::display_path(&spec);
        let model = match model_of(&spec, &shown) {
            Ok((source, model)) => {
                ids.push((source, model.id.clone()));
                model
            }
            Err(BuildError::Invalid(found)) => {
                problems.extend(found);
                continue;
            }
            Err(other) => return Err(other),
        };
        let pack = crate::pack::interpreted(&model);
        if !file.exists() {
            if required || scenario::is_scenario_file(path) {
                problems.push(Diagnostic::new(
                    load::display_path(&file),
                    0,
                    0,
                    "",
                    format!(
                        "no scenario file beside `{shown}` (`ggen init` writes a starter; `ggen schema test` is its schema)"
                    ),
                ));
            }
            report.specs.push(SpecTests {
                spec: shown,
                file: load::display_path(&file),
                found: false,
                scenarios: Vec::new(),
            });
            continue;
        }
        match scenario::load(&file, pack) {
            Ok(scenarios) => ready.push((report.specs.len(), scenarios, pack)),
            Err(ValidateError::Invalid(found)) => problems.extend(found),
            Err(internal) => return Err(BuildError::Validate(internal)),
        }
        report.specs.push(SpecTests {
            spec: shown,
            file: load::display_path(&file),
            found: true,
            scenarios: Vec::new(),
        });
    }
    problems.extend(validate::duplicate_ids(
        ids.iter().map(|(source, id)| (source, id.as_str())),
    ));
    if !problems.is_empty() {
        return Err(BuildError::Invalid(problems));
    }
    for (index, scenarios, pack) in ready {
        report.specs[index].scenarios = scenario::run(&scenarios, pack)?;
    }
    Ok(report)
}

/// A spec named as a file, or as `REV:PATH` (read with `git show` in the
/// current folder's repository, the common case in a pull request:
/// `HEAD:specs/cost_guard.json`): checked and lowered.
pub fn spec_at(spec: &str) -> Result<Model, BuildError> {
    let path = Path::new(spec);
    if path.exists() || !spec.contains(':') {
        return model(path, &load::display_path(path));
    }
    // `REV:PATH` is data, never an option of git's.
    if spec.starts_with('-') {
        return Err(BuildError::Git {
            spec: spec.to_owned(),
            message: "a revision does not start with `-`".to_owned(),
        });
    }
    let output = std::process::Command::new("git")
        .args(["show", "--no-textconv", "--end-of-options", spec])
        .output()
        .map_err(|e| BuildError::Git {
            spec: spec.to_owned(),
            message: e.to_string(),
        })?;
    if !output.status.success() {
        // Neither a file nor a revision: say both, the file first.
        return Err(BuildError::Git {
            spec: spec.to_owned(),
            message: format!(
                "no such file, and as `REV:PATH`: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        });
    }
    let source = load::from_bytes(spec.to_owned(), output.stdout)
        .map_err(|d| BuildError::Invalid(vec![d]))?;
    let checked = validate::check(&source)?;
    model::lower(&checked, spec, &source.sha256).map_err(|source| BuildError::Lower {
        spec: spec.to_owned(),
        source,
    })
}

/// `ggen backtest`: `recorded` through the specs `old` and `new` (files or
/// `REV:PATH`), judged by `gates`.
pub fn backtest(
    old: &str,
    new: &str,
    recorded: &Recorded,
    settle: Settle,
    gates: &Gates,
) -> Result<backtest::Report, BuildError> {
    let (old_model, new_model) = match (spec_at(old), spec_at(new)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(BuildError::Invalid(mut a)), Err(BuildError::Invalid(b))) => {
            a.extend(b);
            return Err(BuildError::Invalid(a));
        }
        (Err(e), _) | (_, Err(e)) => return Err(e),
    };
    let old_side = Side {
        name: old,
        pack: crate::pack::interpreted(&old_model),
    };
    let new_side = Side {
        name: new,
        pack: crate::pack::interpreted(&new_model),
    };
    Ok(backtest::run(old_side, new_side, recorded, settle, gates)?)
}

/// `ggen explain`: the thresholds and FSM of one spec, as Markdown.
pub fn explain(path: &Path) -> Result<String, BuildError> {
    let model = model(path, &load::display_path(path))?;
    Ok(explain_view::explain(&model))
}

/// `ggen explain --format json`: the same parts as one JSON object
/// (`sku`, `version`, `spec`, `thresholds` as Markdown, `state_machine` as
/// Mermaid), for tools that embed them.
pub fn explain_json(path: &Path) -> Result<serde_json::Value, BuildError> {
    let model = model(path, &load::display_path(path))?;
    Ok(serde_json::json!({
        "sku": model.id,
        "version": model.version,
        "spec": model.spec_path,
        "thresholds": explain_view::thresholds_markdown(&model),
        "state_machine": explain_view::fsm_mermaid(&model),
    }))
}

/// `ggen init`: makes a project in `options.root` (or adds a spec to the
/// one there); returns what it wrote and what to do next.
pub fn init(options: &InitOptions) -> Result<Initialized, BuildError> {
    Ok(init_project::init(options)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_is_seen_from_the_project_root() {
        let rel =
            |root: &str, dir: &str| relative_to_root(Path::new(root), Path::new(dir)).unwrap();
        assert_eq!(rel("", "out"), Path::new("out"));
        assert_eq!(rel("proj", "out"), Path::new("../out"));
        assert_eq!(rel("a/b", "out/x"), Path::new("../../out/x"));
        // A root above the cwd cannot name the cwd lexically: absolute.
        assert!(rel("..", "out").is_absolute());
        assert!(rel("", "/tmp/out").is_absolute());
    }

    #[test]
    fn violations_exit_1_and_validator_faults_exit_2() {
        let rejected = BuildError::from(ValidateError::Invalid(vec![Diagnostic::whole_file(
            "a.json", "bad",
        )]));
        assert!(matches!(rejected, BuildError::Invalid(_)), "{rejected:?}");
        assert_eq!(rejected.exit_code(), 1);

        let broken = serde_json::from_str::<serde_json::Value>("{").unwrap_err();
        let internal = BuildError::from(ValidateError::SchemaJson(broken));
        assert!(matches!(internal, BuildError::Validate(_)), "{internal:?}");
        assert_eq!(internal.exit_code(), 2);
        // The cause stays reachable as `source()`.
        assert!(std::error::Error::source(&internal).is_some());
    }
}
