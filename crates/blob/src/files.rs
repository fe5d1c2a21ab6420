//! Blob content on disk, under `{data_dir}/blobs/`.
//!
//! Layout: one directory per container (a fresh name at each creation, so a container
//! deleted and created again never sees old files), holding `{uuid}.blob` (committed
//! content), `{uuid}.block` (uncommitted blocks) and `.tmp-{uuid}` (writes in progress).
//!
//! A write goes to a temporary file, is fsynced, renamed to its fresh final name and the
//! directory fsynced; only then is the document that names it committed. Until that commit
//! the file is held by a [`PendingFile`], which removes it if the request fails or is
//! abandoned. Files a document no longer names are removed after the commit that dropped
//! them; whatever a crash leaves behind (temporary files, files written but never committed,
//! files whose removal did not happen) is removed by [`FileStore::sweep`] at start.
//!
//! Files are created with mode 0600 and directories (the blob root too) with 0700: blob
//! content is readable only by the server's user.
//!
//! Request bodies are streamed to disk in chunks of [`WRITE_CHUNK`] and content is served
//! from the file in chunks of [`READ_CHUNK`]: no blob is ever held in memory whole.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use axum::body::Body;
use bytes::Bytes;
use futures::StreamExt;
use md5::{Digest, Md5};
use tokio::io::AsyncSeekExt;
use uuid::Uuid;

use crate::error::BlobError;

/// Request bodies are written in pieces of this size (one blocking write each).
pub const WRITE_CHUNK: usize = 1024 * 1024;
/// Content is served in pieces of this size.
pub const READ_CHUNK: usize = 256 * 1024;
const TMP_PREFIX: &str = ".tmp-";

/// The blob root and what is done in it.
#[derive(Debug, Clone)]
pub struct FileStore {
    root: PathBuf,
}

/// A file written and renamed but not yet named by a committed document. Dropping it
/// removes the file; [`PendingFile::keep`] is called once the commit succeeded.
#[derive(Debug)]
pub struct PendingFile {
    path: Option<PathBuf>,
    /// Relative to the blob root, as documents name it.
    pub name: String,
    pub size: u64,
    /// The MD5 of the content, when it was asked for.
    pub md5: Option<[u8; 16]>,
}

impl PendingFile {
    /// The commit that names this file has succeeded: keep it.
    pub fn keep(mut self) {
        self.path = None;
    }
}

impl Drop for PendingFile {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %e, "could not remove an uncommitted blob file");
            }
        }
    }
}

/// A temporary file being written; removed on drop unless renamed.
struct TempFile {
    path: Option<PathBuf>,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// How to spool a request body.
#[derive(Debug, Clone, Copy)]
pub struct Spool {
    /// `Content-Length`, when the client sent one: the body must be exactly this long.
    pub expected: Option<u64>,
    /// The most bytes accepted.
    pub max: u64,
    /// Compute the MD5 of the content.
    pub md5: bool,
    /// `blob` or `block`.
    pub kind: &'static str,
}

/// One piece of a composed blob: `len` bytes of `file` from `offset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub file: String,
    pub offset: u64,
    pub len: u64,
}

/// What [`FileStore::sweep`] removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    pub dirs: usize,
    pub files: usize,
}

fn joined(e: tokio::task::JoinError) -> BlobError {
    BlobError::Io(std::io::Error::other(e))
}

/// Creates `dir` and any missing parent with mode 0700.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Creates a new file (never an existing one) with mode 0600, for writing.
fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

/// Makes a rename durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

impl FileStore {
    pub fn new(root: PathBuf) -> FileStore {
        FileStore { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The path of a file or directory named by a document. Names are ours (uuids), never
    /// the client's.
    fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Streams `body` into a new file in `dir`.
    pub async fn spool(
        &self,
        dir: &str,
        body: Body,
        spool: Spool,
    ) -> Result<PendingFile, BlobError> {
        let dir_path = self.path(dir);
        let id = Uuid::new_v4().simple().to_string();
        let tmp_path = dir_path.join(format!("{TMP_PREFIX}{id}"));
        let name = format!("{dir}/{id}.{}", spool.kind);
        let final_path = self.path(&name);

        let (file, tmp) = {
            let (dir_path, tmp_path) = (dir_path.clone(), tmp_path.clone());
            tokio::task::spawn_blocking(move || -> std::io::Result<_> {
                private_dir(&dir_path)?;
                let file = private_file(&tmp_path)?;
                Ok((
                    file,
                    TempFile {
                        path: Some(tmp_path),
                    },
                ))
            })
            .await
            .map_err(joined)??
        };
        let mut file = Some(file);
        let mut md5 = spool.md5.then(Md5::new);
        let mut pending: Vec<Bytes> = Vec::new();
        let mut pending_len = 0usize;
        let mut size = 0u64;
        let mut stream = body.into_data_stream();
        loop {
            let next = stream.next().await;
            let done = next.is_none();
            if let Some(chunk) = next {
                let chunk = chunk.map_err(|e| BlobError::BodyRead(e.to_string()))?;
                size += chunk.len() as u64;
                if size > spool.max {
                    return Err(BlobError::RequestBodyTooLarge(spool.max));
                }
                if spool.expected.is_some_and(|e| size > e) {
                    return Err(BlobError::InvalidHeaderValue("Content-Length"));
                }
                pending_len += chunk.len();
                pending.push(chunk);
            }
            if pending_len >= WRITE_CHUNK || (done && pending_len > 0) {
                let batch = std::mem::take(&mut pending);
                pending_len = 0;
                let (mut f, mut h) = (file.take(), md5.take());
                let (f2, h2) = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
                    if let Some(f) = f.as_mut() {
                        for piece in &batch {
                            f.write_all(piece)?;
                            if let Some(h) = h.as_mut() {
                                h.update(piece);
                            }
                        }
                    }
                    Ok((f, h))
                })
                .await
                .map_err(joined)??;
                file = f2;
                md5 = h2;
            }
            if done {
                break;
            }
        }
        if let Some(expected) = spool.expected {
            if size != expected {
                return Err(BlobError::IncompleteBody {
                    received: size,
                    expected,
                });
            }
        }
        let digest = md5.map(|h| <[u8; 16]>::from(h.finalize()));
        let path = {
            let final_path = final_path.clone();
            tokio::task::spawn_blocking(move || -> std::io::Result<PathBuf> {
                let mut tmp = tmp;
                if let Some(f) = file {
                    f.sync_all()?;
                }
                if let Some(tmp_path) = tmp.path.take() {
                    std::fs::rename(&tmp_path, &final_path)?;
                }
                sync_dir(&dir_path)?;
                Ok(final_path)
            })
            .await
            .map_err(joined)??
        };
        Ok(PendingFile {
            path: Some(path),
            name,
            size,
            md5: digest,
        })
    }

    /// Writes the concatenation of `parts` to a new file in `dir` (Put Block List).
    pub async fn compose(&self, dir: &str, parts: Vec<Part>) -> Result<PendingFile, BlobError> {
        let dir_path = self.path(dir);
        let id = Uuid::new_v4().simple().to_string();
        let name = format!("{dir}/{id}.blob");
        let final_path = self.path(&name);
        let tmp_path = dir_path.join(format!("{TMP_PREFIX}{id}"));
        let sources: Vec<(PathBuf, u64, u64)> = parts
            .iter()
            .map(|p| (self.path(&p.file), p.offset, p.len))
            .collect();
        let size = parts.iter().map(|p| p.len).sum();
        let path = tokio::task::spawn_blocking(move || -> std::io::Result<PathBuf> {
            private_dir(&dir_path)?;
            let mut tmp = TempFile {
                path: Some(tmp_path.clone()),
            };
            let mut out = private_file(&tmp_path)?;
            let mut open: HashMap<PathBuf, std::fs::File> = HashMap::new();
            for (source, offset, len) in sources {
                let file = match open.entry(source) {
                    std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                    std::collections::hash_map::Entry::Vacant(v) => {
                        let f = std::fs::File::open(v.key())?;
                        v.insert(f)
                    }
                };
                file.seek(SeekFrom::Start(offset))?;
                let copied = std::io::copy(&mut file.take(len), &mut out)?;
                if copied != len {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("a block file is shorter than its record says ({copied} of {len} bytes)"),
                    ));
                }
            }
            out.sync_all()?;
            std::fs::rename(&tmp_path, &final_path)?;
            tmp.path = None;
            sync_dir(&dir_path)?;
            Ok(final_path)
        })
        .await
        .map_err(joined)??;
        Ok(PendingFile {
            path: Some(path),
            name,
            size,
            md5: None,
        })
    }

    /// `len` bytes of `name` from `offset`, read whole (small reads).
    pub async fn read(&self, name: &str, offset: u64, len: u64) -> std::io::Result<Bytes> {
        let path = self.path(name);
        tokio::task::spawn_blocking(move || -> std::io::Result<Bytes> {
            let mut file = std::fs::File::open(path)?;
            if offset > 0 {
                file.seek(SeekFrom::Start(offset))?;
            }
            let len = usize::try_from(len).map_err(std::io::Error::other)?;
            let mut buf = vec![0u8; len];
            file.read_exact(&mut buf)?;
            Ok(Bytes::from(buf))
        })
        .await
        .map_err(std::io::Error::other)?
    }

    /// `name` opened at `offset`, for streaming. Once open, the content stays readable even
    /// if a later write replaces the blob and removes the file.
    pub async fn open(&self, name: &str, offset: u64) -> std::io::Result<tokio::fs::File> {
        let mut file = tokio::fs::File::open(self.path(name)).await?;
        if offset > 0 {
            file.seek(SeekFrom::Start(offset)).await?;
        }
        Ok(file)
    }

    /// Removes files no document names any more, in the background.
    pub fn discard(&self, names: Vec<String>) {
        if names.is_empty() {
            return;
        }
        let paths: Vec<PathBuf> = names.iter().map(|n| self.path(n)).collect();
        tokio::task::spawn_blocking(move || {
            for path in paths {
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "could not remove a blob file; the next start removes it")
                    }
                }
            }
        });
    }

    /// Removes a container's directory, in the background.
    pub fn discard_dir(&self, dir: &str) {
        let path = self.path(dir);
        tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "could not remove a container directory; the next start removes it")
            }
        });
    }

    /// Removes every container directory not in `dirs`. With `files`, also every file in a
    /// kept directory that is not in `files` (names relative to the root). Only safe at start
    /// (before requests) with `files`; without it, safe at any time provided `dirs` was read
    /// after the directory listing began (see [`crate::account::sweep_accounts`]).
    pub fn sweep(
        &self,
        dirs: &HashSet<String>,
        files: Option<&HashSet<String>>,
    ) -> std::io::Result<SweepReport> {
        let mut report = SweepReport::default();
        let entries = match std::fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(report),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if !entry.file_type()?.is_dir() {
                if files.is_some() {
                    std::fs::remove_file(&path)?;
                    report.files += 1;
                }
                continue;
            }
            if !dirs.contains(&name) {
                std::fs::remove_dir_all(&path)?;
                report.dirs += 1;
                continue;
            }
            let Some(files) = files else {
                continue;
            };
            for file in std::fs::read_dir(&path)? {
                let file = file?;
                let rel = format!("{name}/{}", file.file_name().to_string_lossy());
                if !files.contains(&rel) {
                    if file.file_type()?.is_dir() {
                        std::fs::remove_dir_all(file.path())?;
                    } else {
                        std::fs::remove_file(file.path())?;
                    }
                    report.files += 1;
                }
            }
        }
        Ok(report)
    }

    /// The container directories present now.
    pub fn dirs(&self) -> std::io::Result<Vec<String>> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                out.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(chunks: Vec<&'static [u8]>) -> Body {
        let stream = futures::stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, std::io::Error>(Bytes::from_static(c))),
        );
        Body::from_stream(stream)
    }

    fn spool(expected: Option<u64>) -> Spool {
        Spool {
            expected,
            max: 1 << 20,
            md5: true,
            kind: "blob",
        }
    }

    fn listing(dir: &Path) -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(dir)
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }

    #[tokio::test]
    async fn spools_composes_and_reads() {
        let tmp = tempfile::tempdir().unwrap();
        let files = FileStore::new(tmp.path().join("blobs"));
        let a = files
            .spool("c1", body(vec![b"hello ", b"world"]), spool(Some(11)))
            .await
            .unwrap();
        assert_eq!(a.size, 11);
        assert_eq!(
            a.md5.unwrap().to_vec(),
            Md5::digest(b"hello world").to_vec()
        );
        let b = files
            .spool("c1", body(vec![b"!"]), spool(None))
            .await
            .unwrap();
        let composed = files
            .compose(
                "c1",
                vec![
                    Part {
                        file: a.name.clone(),
                        offset: 6,
                        len: 5,
                    },
                    Part {
                        file: b.name.clone(),
                        offset: 0,
                        len: 1,
                    },
                ],
            )
            .await
            .unwrap();
        assert_eq!(
            &files.read(&composed.name, 0, 6).await.unwrap()[..],
            b"world!"
        );
        assert_eq!(&files.read(&a.name, 1, 3).await.unwrap()[..], b"ell");
        let names = [a.name.clone(), b.name.clone(), composed.name.clone()];
        a.keep();
        composed.keep();
        drop(b); // never committed: removed
        let left = listing(&files.root().join("c1"));
        assert_eq!(left.len(), 2, "{left:?}");
        assert!(!left.iter().any(|n| names[1].ends_with(n.as_str())));
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn blob_files_and_directories_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let tmp = tempfile::tempdir().unwrap();
        let files = FileStore::new(tmp.path().join("blobs"));
        let a = files
            .spool("c1", body(vec![b"private"]), spool(None))
            .await
            .unwrap();
        let part = Part {
            file: a.name.clone(),
            offset: 0,
            len: 7,
        };
        let composed = files.compose("c1", vec![part]).await.unwrap();
        assert_eq!(mode(files.root()), 0o700);
        assert_eq!(mode(&files.root().join("c1")), 0o700);
        assert_eq!(mode(&files.root().join(&a.name)), 0o600);
        assert_eq!(mode(&files.root().join(&composed.name)), 0o600);
    }

    #[tokio::test]
    async fn failed_spools_leave_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let files = FileStore::new(tmp.path().join("blobs"));
        // Shorter than announced.
        let short = files.spool("c", body(vec![b"abc"]), spool(Some(10))).await;
        assert!(matches!(short, Err(BlobError::IncompleteBody { .. })));
        // Longer than announced.
        let long = files
            .spool("c", body(vec![b"abcdef"]), spool(Some(2)))
            .await;
        assert!(long.is_err());
        // The stream breaks (a client that went away).
        let broken = Body::from_stream(futures::stream::iter(vec![
            Ok(Bytes::from_static(b"abc")),
            Err(std::io::Error::other("reset")),
        ]));
        assert!(files.spool("c", broken, spool(None)).await.is_err());
        // Too large.
        let big = Spool {
            max: 2,
            ..spool(None)
        };
        assert!(matches!(
            files.spool("c", body(vec![b"abc"]), big).await,
            Err(BlobError::RequestBodyTooLarge(2))
        ));
        assert!(listing(&files.root().join("c")).is_empty());
    }

    #[tokio::test]
    async fn sweep_removes_what_no_document_names() {
        let tmp = tempfile::tempdir().unwrap();
        let files = FileStore::new(tmp.path().join("blobs"));
        let kept = files
            .spool("c1", body(vec![b"x"]), spool(None))
            .await
            .unwrap();
        let stray = files
            .spool("c1", body(vec![b"y"]), spool(None))
            .await
            .unwrap();
        let other = files
            .spool("gone", body(vec![b"z"]), spool(None))
            .await
            .unwrap();
        std::fs::write(files.root().join("c1/.tmp-123"), b"half").unwrap();
        std::fs::write(files.root().join("loose"), b"?").unwrap();
        let kept_name = kept.name.clone();
        kept.keep();
        stray.keep();
        other.keep();
        let dirs: HashSet<String> = ["c1".to_string()].into();
        let names: HashSet<String> = [kept_name.clone()].into();
        let report = files.sweep(&dirs, Some(&names)).unwrap();
        assert_eq!(report, SweepReport { dirs: 1, files: 3 });
        assert_eq!(listing(files.root()), vec!["c1".to_string()]);
        assert_eq!(
            listing(&files.root().join("c1")),
            vec![kept_name.trim_start_matches("c1/").to_string()]
        );
        assert_eq!(files.dirs().unwrap(), vec!["c1".to_string()]);
    }
}
