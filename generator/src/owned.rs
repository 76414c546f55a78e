//! Paths inside a generated crate folder, reached without leaving it.
//!
//! A crate folder is project content: a pull request can edit its
//! `ggen-manifest.json` or replace a folder by a symbolic link. ggen reads
//! (for `--check` diffs and hashes), writes and deletes there, so every
//! path it takes from a manifest must be a relative path of plain names
//! ([`path_problem`]), and every step from the crate folder down is checked
//! with `symlink_metadata` before use ([`locate`]): a link, a file where a
//! folder belongs, a folder where a file belongs or a special file (fifo,
//! device) is refused, never followed. Reads are bounded by [`MAX_READ`].

use std::io::Read as _;
use std::path::{Component, Path, PathBuf};

use thiserror::Error;

/// The largest file ggen reads back from a crate folder: 16 MiB, far
/// above any file it generates. A larger file is reported as differing
/// without being read, and is never taken as ggen's own.
pub const MAX_READ: u64 = 16 << 20;

/// Why a path in a crate folder cannot be used.
#[derive(Debug, Error)]
pub enum OwnedError {
    /// A path that is not plain names below the crate folder.
    #[error("`{path}` {problem}: ggen only reads, writes and deletes below a crate folder")]
    Outside {
        /// The path.
        path: String,
        /// What is wrong with it ([`path_problem`]).
        problem: &'static str,
    },
    /// A symbolic link on the way (or at the end).
    #[error(
        "`{path}` is a symbolic link: ggen does not read, write or delete through links in a generated crate folder; remove it and run `ggen build` again"
    )]
    Link {
        /// The link.
        path: String,
    },
    /// Something that is not a folder where a folder belongs.
    #[error(
        "`{path}` is not a folder, but ggen generates files inside it; move it away and run `ggen build` again"
    )]
    NotAFolder {
        /// The path that should be a folder.
        path: String,
    },
    /// A folder where ggen writes a file.
    #[error(
        "`{path}` is a folder, but ggen generates a file there; move it away and run `ggen build` again"
    )]
    Folder {
        /// The folder.
        path: String,
    },
    /// A fifo, socket or device where ggen writes a file.
    #[error("`{path}` is not a regular file; ggen neither reads nor replaces it")]
    Special {
        /// The special file.
        path: String,
    },
    /// The file system failed.
    #[error("cannot read `{path}`")]
    Io {
        /// The path being looked at.
        path: String,
        /// The I/O failure.
        #[source]
        source: std::io::Error,
    },
}

impl OwnedError {
    /// 1 for what is on disk (rejected input), 2 for a failing file system.
    pub const fn exit_code(&self) -> u8 {
        match self {
            OwnedError::Io { .. } => 2,
            _ => 1,
        }
    }
}

/// What is wrong with `path` as the name of a file inside a crate folder,
/// if anything: it must be `/`-separated plain names, so that it can only
/// ever name something below the folder, on every platform.
pub fn path_problem(path: &str) -> Option<&'static str> {
    if path.is_empty() {
        return Some("is empty");
    }
    if path.contains('\\') {
        return Some("holds a backslash (paths are `/`-separated)");
    }
    if path.contains(':') {
        return Some("holds a `:` (a drive or stream name on Windows)");
    }
    if path.chars().any(char::is_control) {
        return Some("holds a control character");
    }
    for part in path.split('/') {
        match part {
            "" => return Some("is absolute or has an empty component"),
            "." | ".." => return Some("has a `.` or `..` component"),
            _ => {}
        }
    }
    // The platform's own reading must agree: plain names only.
    if !Path::new(path)
        .components()
        .all(|c| matches!(c, Component::Normal(_)))
    {
        return Some("is not a relative path of plain names");
    }
    None
}

fn shown(path: &Path) -> String {
    path.to_string_lossy()
        .replace(std::path::MAIN_SEPARATOR, "/")
}

/// What [`locate`] found at a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// Nothing (the path or one of its folders does not exist).
    Absent,
    /// A regular file of this many bytes.
    File(u64),
}

/// `rel` (already checked by [`path_problem`]) below the crate folder
/// `base`, checked step by step without following links: `base` and every
/// folder on the way must be real folders (or absent), the end a regular
/// file (or absent). Returns the full path and what is there.
pub fn locate(base: &Path, rel: &str) -> Result<(PathBuf, Found), OwnedError> {
    let mut path = base.to_owned();
    match step(&path)? {
        None => return Ok((path.join(rel), Found::Absent)),
        Some(meta) if meta.file_type().is_symlink() => {
            return Err(OwnedError::Link { path: shown(&path) });
        }
        Some(meta) if !meta.is_dir() => return Err(OwnedError::NotAFolder { path: shown(&path) }),
        Some(_) => {}
    }
    let parts: Vec<&str> = rel.split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        path.push(part);
        let last = i + 1 == parts.len();
        let Some(meta) = step(&path)? else {
            for rest in &parts[i + 1..] {
                path.push(rest);
            }
            return Ok((path, Found::Absent));
        };
        let kind = meta.file_type();
        if kind.is_symlink() {
            return Err(OwnedError::Link { path: shown(&path) });
        }
        if !last && !kind.is_dir() {
            return Err(OwnedError::NotAFolder { path: shown(&path) });
        }
        if last && kind.is_dir() {
            return Err(OwnedError::Folder { path: shown(&path) });
        }
        if last && !kind.is_file() {
            return Err(OwnedError::Special { path: shown(&path) });
        }
        if last {
            return Ok((path, Found::File(meta.len())));
        }
    }
    // `rel` has at least one part ([`path_problem`]).
    Ok((path, Found::Absent))
}

/// `symlink_metadata` of `path`; `None` when it does not exist.
fn step(path: &Path) -> Result<Option<std::fs::Metadata>, OwnedError> {
    match fs_err::symlink_metadata(path) {
        Ok(meta) => Ok(Some(meta)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        // A file where a folder of the path belongs (the crate folder's parent).
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => Err(OwnedError::NotAFolder {
            path: shown(path.parent().unwrap_or(path)),
        }),
        Err(source) => Err(OwnedError::Io {
            path: shown(path),
            source,
        }),
    }
}

/// A file of a crate folder as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contents {
    /// Not there.
    Absent,
    /// Its bytes.
    Bytes(Vec<u8>),
    /// Larger than [`MAX_READ`]: not read; its size.
    TooLarge(u64),
}

/// Reads `rel` below the crate folder `base` ([`locate`]'s checks, at most
/// [`MAX_READ`] bytes).
pub fn read(base: &Path, rel: &str) -> Result<Contents, OwnedError> {
    let (path, found) = locate(base, rel)?;
    let size = match found {
        Found::Absent => return Ok(Contents::Absent),
        Found::File(size) if size > MAX_READ => return Ok(Contents::TooLarge(size)),
        Found::File(size) => size,
    };
    let io = |source| OwnedError::Io {
        path: shown(&path),
        source,
    };
    let file = match fs_err::File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Contents::Absent),
        Err(e) => return Err(io(e)),
    };
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    // `take`: a file that grew since `locate` is still read only so far.
    file.take(MAX_READ + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_READ {
        return Ok(Contents::TooLarge(bytes.len() as u64));
    }
    Ok(Contents::Bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_relative_paths_of_plain_names_pass() {
        for good in ["Cargo.toml", "src/lib.rs", "deploy/a.b.c", "x/y/z"] {
            assert_eq!(path_problem(good), None, "{good}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a/./b",
            ".",
            "a//b",
            "a/",
            "..\\x",
            "C:x",
            "C:/x",
            "a\0b",
            "a\nb",
        ] {
            assert!(path_problem(bad).is_some(), "{bad:?}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn links_folders_and_special_files_are_refused() {
        let temp = tempfile::tempdir().expect("temp dir");
        let base = temp.path().join("crate");
        let outside = temp.path().join("outside");
        fs_err::create_dir_all(base.join("src")).expect("mkdir");
        fs_err::create_dir_all(&outside).expect("mkdir");
        fs_err::write(outside.join("secret"), "secret\n").expect("write");
        fs_err::write(base.join("src/lib.rs"), "lib\n").expect("write");

        assert_eq!(
            read(&base, "src/lib.rs").expect("read"),
            Contents::Bytes(b"lib\n".to_vec())
        );
        assert_eq!(read(&base, "gone/x.rs").expect("read"), Contents::Absent);

        // A linked folder, a linked file, a folder where a file goes.
        std::os::unix::fs::symlink(&outside, base.join("deploy")).expect("link");
        std::os::unix::fs::symlink(outside.join("secret"), base.join("README.md")).expect("link");
        assert!(matches!(
            read(&base, "deploy/secret"),
            Err(OwnedError::Link { .. })
        ));
        assert!(matches!(
            read(&base, "README.md"),
            Err(OwnedError::Link { .. })
        ));
        assert!(matches!(read(&base, "src"), Err(OwnedError::Folder { .. })));
        let _socket =
            std::os::unix::net::UnixListener::bind(base.join("src/sock")).expect("socket");
        assert!(matches!(
            read(&base, "src/sock"),
            Err(OwnedError::Special { .. })
        ));
        assert!(matches!(
            read(&base, "src/lib.rs/x"),
            Err(OwnedError::NotAFolder { .. })
        ));
        // The crate folder itself a link, or a file.
        let linked = temp.path().join("linked");
        std::os::unix::fs::symlink(&base, &linked).expect("link");
        assert!(matches!(
            read(&linked, "src/lib.rs"),
            Err(OwnedError::Link { .. })
        ));
        assert!(matches!(
            read(&base.join("src/lib.rs"), "x"),
            Err(OwnedError::NotAFolder { .. })
        ));
        assert_eq!(
            read(&base, "deploy/secret").unwrap_err().exit_code(),
            1,
            "rejected input"
        );
    }

    #[test]
    fn large_files_are_not_read() {
        let temp = tempfile::tempdir().expect("temp dir");
        let file = fs_err::File::create(temp.path().join("big")).expect("create");
        file.set_len(MAX_READ + 1).expect("grow");
        assert_eq!(
            read(temp.path(), "big").expect("read"),
            Contents::TooLarge(MAX_READ + 1)
        );
    }
}
