//! The data directory: what lives where, and how files in it are written.
//!
//! Files holding key material or credentials are created with mode 0600 and replaced
//! atomically (write to a temporary file, fsync, rename, fsync the directory).

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

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
    /// Creates the directory (mode 0700) if needed and checks it is a writable directory.
    pub fn open(root: &Path) -> Result<Self, DataDirError> {
        match fs::metadata(root) {
            Ok(m) if !m.is_dir() => return Err(DataDirError::NotADirectory(root.to_path_buf())),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                fs::create_dir_all(root).map_err(|e| DataDirError::Unusable {
                    path: root.to_path_buf(),
                    reason: e.to_string(),
                })?;
                let _ = fs::set_permissions(root, fs::Permissions::from_mode(0o700));
            }
            Err(e) => {
                return Err(DataDirError::Unusable {
                    path: root.to_path_buf(),
                    reason: e.to_string(),
                })
            }
        }
        let probe = root.join(".write-probe");
        fs::write(&probe, b"")
            .and_then(|_| fs::remove_file(&probe))
            .map_err(|e| DataDirError::Unusable {
                path: root.to_path_buf(),
                reason: e.to_string(),
            })?;
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
