//! The data directory: what lives where, and how files in it are written.
//!
//! Files holding key material or credentials are created with mode 0600 and replaced
//! atomically (write to a temporary file, fsync, rename, fsync the directory). Only the CA's
//! certificate (`ca.pem`) and `endpoints.json` are 0644: they are public. Directories the
//! server creates are 0700 (the data directory itself, and the blob tree).
//!
//! At open, a data directory that others may read (made by hand, or by an older version) is
//! reported with the command that fixes it, and the files the server owns that are more open
//! than they should be (an older version's `lanyard.db`, its blob tree) are tightened.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Files directly in the data directory that the server owns and keeps private (all but the
/// public `ca.pem` and `endpoints.json`).
const PRIVATE_FILES: &[&str] = &[
    "ca-key.pem",
    "server-key.pem",
    "kek",
    "admin.json",
    "lanyard.db",
    "lanyard.db-wal",
    "lanyard.db-shm",
    "lanyard.db-journal",
];
/// Directories in the data directory that the server owns, with everything below them.
const PRIVATE_DIRS: &[&str] = &["blobs"];

#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error("data directory `{}` is not a directory", .0.display())]
    NotADirectory(PathBuf),
    #[error("data directory `{}` cannot be used: {reason}", path.display())]
    Unusable { path: PathBuf, reason: String },
    #[error("cannot write `{}`: {reason}", path.display())]
    Write { path: PathBuf, reason: String },
    #[error("cannot read `{}`: {reason}", path.display())]
    Read { path: PathBuf, reason: String },
}

/// Paths inside the data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// Creates the directory (mode 0700, and any missing parent) if needed, checks it is a
    /// writable directory, warns if others may read it and tightens what the server owns.
    pub fn open(root: &Path) -> Result<Self, DataDirError> {
        match fs::metadata(root) {
            Ok(m) if !m.is_dir() => return Err(DataDirError::NotADirectory(root.to_path_buf())),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(root)
                    .map_err(|e| DataDirError::Unusable {
                        path: root.to_path_buf(),
                        reason: e.to_string(),
                    })?;
            }
            Err(e) => {
                return Err(DataDirError::Unusable {
                    path: root.to_path_buf(),
                    reason: e.to_string(),
                })
            }
        }
        let probe = root.join(".write-probe");
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&probe)
            .and_then(|_| fs::remove_file(&probe))
            .map_err(|e| DataDirError::Unusable {
                path: root.to_path_buf(),
                reason: e.to_string(),
            })?;
        secure(root);
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    /// A view of an existing directory without creating or probing it (for `lanyard env`).
    pub fn existing(root: &Path) -> Result<Self, DataDirError> {
        if !root.is_dir() {
            return Err(DataDirError::NotADirectory(root.to_path_buf()));
        }
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The local certificate authority's certificate: what clients trust.
    pub fn ca_cert(&self) -> PathBuf {
        self.root.join("ca.pem")
    }

    pub fn ca_key(&self) -> PathBuf {
        self.root.join("ca-key.pem")
    }

    pub fn server_cert(&self) -> PathBuf {
        self.root.join("server.pem")
    }

    pub fn server_key(&self) -> PathBuf {
        self.root.join("server-key.pem")
    }

    /// The key-encryption key (unless `LANYARD_KEK` is set).
    pub fn kek(&self) -> PathBuf {
        self.root.join("kek")
    }

    /// The administrator's credential, written at bootstrap.
    pub fn admin_credential(&self) -> PathBuf {
        self.root.join("admin.json")
    }

    /// Where the running server says how to reach it (port, domain).
    pub fn endpoints(&self) -> PathBuf {
        self.root.join("endpoints.json")
    }

    pub fn config_file(&self) -> PathBuf {
        self.root.join("lanyard.toml")
    }

    pub fn sqlite(&self) -> PathBuf {
        self.root.join("lanyard.db")
    }
}

/// Warns when others may read the data directory, and tightens what the server owns in it:
/// private files to 0600, private directory trees to 0700 (directories) and 0600 (files).
/// A tree whose top is already 0700 was made by this version and is not walked.
fn secure(root: &Path) {
    let mode_of = |path: &Path| {
        fs::symlink_metadata(path)
            .ok()
            .map(|m| (m.file_type(), m.permissions().mode() & 0o777))
    };
    if let Some((_, mode)) = mode_of(root) {
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %root.display(),
                mode = format!("{mode:o}"),
                "the data directory can be read by other local users (mode {mode:o}); the files \
                 that matter in it are private, but to keep others from listing it and reading \
                 its public files, run: chmod 700 {}",
                root.display()
            );
        }
    }
    let config = root.join("lanyard.toml");
    if let Some((kind, mode)) = mode_of(&config) {
        if kind.is_file() && mode & 0o077 != 0 {
            tracing::warn!(
                path = %config.display(),
                mode = format!("{mode:o}"),
                "the configuration file can be read by other local users and may hold a \
                 database password; run: chmod 600 {}",
                config.display()
            );
        }
    }
    for name in PRIVATE_FILES {
        let path = root.join(name);
        if let Some((kind, mode)) = mode_of(&path) {
            if kind.is_file() && mode & 0o077 != 0 {
                tighten(&path, mode, 0o600);
            }
        }
    }
    for name in PRIVATE_DIRS {
        let path = root.join(name);
        if let Some((kind, mode)) = mode_of(&path) {
            if kind.is_dir() && mode & 0o077 != 0 {
                tighten_tree(&path);
            }
        }
    }
}

/// Sets `path` to `to`, saying so (it was `was`).
fn tighten(path: &Path, was: u32, to: u32) {
    match fs::set_permissions(path, fs::Permissions::from_mode(to)) {
        Ok(()) => tracing::info!(
            path = %path.display(),
            was = format!("{was:o}"),
            now = format!("{to:o}"),
            "tightened the mode of a file others could read"
        ),
        Err(e) => tracing::warn!(
            path = %path.display(),
            mode = format!("{was:o}"),
            error = %e,
            "a private file can be read by other local users and its mode cannot be changed"
        ),
    }
}

/// Every directory under and including `top` to 0700, every file to 0600; symbolic links
/// are left alone (never followed).
fn tighten_tree(top: &Path) {
    let (mut dirs, mut files) = (0usize, 0usize);
    let mut stack = vec![top.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = fs::symlink_metadata(entry.path()) else {
                continue;
            };
            let mode = meta.permissions().mode() & 0o777;
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file()
                && mode & 0o077 != 0
                && fs::set_permissions(entry.path(), fs::Permissions::from_mode(0o600)).is_ok()
            {
                files += 1;
            }
        }
        // The directory last, once what is in it is private.
        if fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).is_ok() {
            dirs += 1;
        }
    }
    tracing::info!(
        path = %top.display(),
        dirs,
        files,
        "tightened a directory tree others could read to 700 (directories) and 600 (files)"
    );
}

/// Writes `contents` to `path` atomically with the given mode.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), DataDirError> {
    let err = |e: std::io::Error| DataDirError::Write {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(err)?;
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(err)?;
    file.write_all(contents).map_err(err)?;
    file.sync_all().map_err(err)?;
    drop(file);
    fs::rename(&tmp, path).map_err(err)?;
    if let Some(dir) = path.parent() {
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Reads a file to a string, with an error naming it.
pub fn read_to_string(path: &Path) -> Result<String, DataDirError> {
    fs::read_to_string(path).map_err(|e| DataDirError::Read {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_not_a_data_directory() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        fs::write(&file, b"x").unwrap();
        assert!(matches!(
            DataDir::open(&file),
            Err(DataDirError::NotADirectory(_))
        ));
        assert!(DataDir::open(&file.join("below")).is_err());
    }

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn set_mode(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn a_new_data_directory_and_its_parents_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("home").join("data");
        DataDir::open(&root).unwrap();
        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(&dir.path().join("home")), 0o700);
    }

    #[test]
    fn what_an_older_version_left_open_is_tightened() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("data");
        fs::create_dir(&root).unwrap();
        set_mode(&root, 0o755);
        for name in [
            "kek",
            "lanyard.db",
            "lanyard.db-wal",
            "admin.json",
            "ca.pem",
        ] {
            fs::write(root.join(name), b"x").unwrap();
            set_mode(&root.join(name), 0o644);
        }
        let container = root.join("blobs").join("c1");
        fs::create_dir_all(&container).unwrap();
        fs::write(container.join("a.blob"), b"x").unwrap();
        for (path, m) in [
            (root.join("blobs"), 0o755),
            (container.clone(), 0o755),
            (container.join("a.blob"), 0o644),
        ] {
            set_mode(&path, m);
        }
        // A link out of the tree is not followed.
        let outside = dir.path().join("outside");
        fs::write(&outside, b"x").unwrap();
        set_mode(&outside, 0o644);
        std::os::unix::fs::symlink(&outside, container.join("link")).unwrap();

        DataDir::open(&root).unwrap();
        for name in ["kek", "lanyard.db", "lanyard.db-wal", "admin.json"] {
            assert_eq!(mode(&root.join(name)), 0o600, "{name}");
        }
        assert_eq!(mode(&root.join("ca.pem")), 0o644, "public");
        assert_eq!(mode(&root.join("blobs")), 0o700);
        assert_eq!(mode(&container), 0o700);
        assert_eq!(mode(&container.join("a.blob")), 0o600);
        assert_eq!(mode(&outside), 0o644, "a symbolic link was followed");
        // The directory itself is the operator's: reported, not changed.
        assert_eq!(mode(&root), 0o755);
    }

    #[test]
    fn atomic_writes_have_the_mode_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let d = DataDir::open(&dir.path().join("data")).unwrap();
        write_atomic(&d.admin_credential(), b"{}", 0o600).unwrap();
        let mode = fs::metadata(d.admin_credential())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
