//! The key-encryption key (KEK) and per-vault data keys.
//!
//! Every secret Lanyard keeps at rest (signing keys, Key Vault data keys) is sealed with
//! AES-256-GCM. A sealed blob is `nonce (12 bytes) ‖ ciphertext ‖ tag (16 bytes)` with a fresh
//! random nonce per seal. The caller passes associated data (AAD) naming what the blob is, e.g.
//! a key id, so a blob copied onto another record fails to open.
//!
//! The KEK comes from `LANYARD_KEK` ([`Kek::from_env_value`]) or from a file the server
//! creates on first start ([`Kek::load_or_create`]); the file holds the key as base64 text,
//! so its contents can be moved into `LANYARD_KEK` unchanged.

use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;
use zeroize::{Zeroize, Zeroizing};

const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum KekError {
    #[error(
        "key-encryption key must be 32 bytes as base64 or hex, got {0} characters that are neither"
    )]
    BadEncoding(usize),
    #[error("key-encryption key must be 32 bytes, got {0}")]
    BadLength(usize),
    #[error("key-encryption key file `{path}` is readable by group or others (mode {mode:o}); run `chmod 600` on it")]
    InsecurePermissions { path: PathBuf, mode: u32 },
    #[error("key-encryption key file `{0}` is not a regular file")]
    NotAFile(PathBuf),
    #[error("key-encryption key file `{path}`: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("sealed data is too short")]
    Truncated,
    #[error("sealed data failed to open: wrong key, wrong associated data or tampered")]
    OpenFailed,
    #[error("encryption failed")]
    SealFailed,
}

/// AES-256-GCM under one 32-byte key; the shared core of [`Kek`] and [`DataKey`].
struct AeadKey {
    bytes: Zeroizing<[u8; KEY_LEN]>,
    cipher: Aes256Gcm,
}

impl AeadKey {
    fn new(bytes: [u8; KEY_LEN]) -> Self {
        let bytes = Zeroizing::new(bytes);
        let cipher = Aes256Gcm::new(bytes.as_ref().into());
        Self { bytes, cipher }
    }

    fn random() -> Self {
        let mut bytes = [0u8; KEY_LEN];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let key = Self::new(bytes);
        bytes.zeroize();
        key
    }

    fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, KekError> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let body = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| KekError::SealFailed)?;
        let mut out = Vec::with_capacity(NONCE_LEN + body.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&body);
        Ok(out)
    }

    fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, KekError> {
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(KekError::Truncated);
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        self.cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: body, aad })
            .map_err(|_| KekError::OpenFailed)
    }
}

/// The key-encryption key: seals signing keys and wraps data keys.
pub struct Kek(AeadKey);

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Kek(<redacted>)")
    }
}

impl Kek {
    /// A fresh random KEK (tests, or a caller that stores it itself).
    pub fn generate() -> Self {
        Self(AeadKey::random())
    }

    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(AeadKey::new(bytes))
    }

    /// Parses the value of `LANYARD_KEK`: 32 bytes as standard or URL-safe base64 (padding
    /// optional) or as 64 hex digits. Surrounding whitespace is ignored.
    pub fn from_env_value(value: &str) -> Result<Self, KekError> {
        decode_key_text(value).map(Self::from_bytes)
    }

    /// Loads the KEK from `path`, or creates it there (mode 0600) if the file does not exist.
    ///
    /// Creation is atomic: the key is written to a temporary file in the same directory,
    /// synced, then hard-linked to `path`, which fails if `path` appeared meanwhile (another
    /// process won the race; its key is then loaded). An existing file that group or others
    /// can read is refused rather than silently used.
    pub fn load_or_create(path: &Path) -> Result<Self, KekError> {
        match Self::load(path) {
            Err(KekError::Io { source, .. }) if source.kind() == ErrorKind::NotFound => {}
            other => return other,
        }
        let key = Self::generate();
        match key.create_file(path) {
            Ok(()) => Ok(key),
            // Someone else created it between our load and our link: use theirs.
            Err(KekError::Io { source, .. }) if source.kind() == ErrorKind::AlreadyExists => {
                Self::load(path)
            }
            Err(e) => Err(e),
        }
    }

    fn load(path: &Path) -> Result<Self, KekError> {
        let io = |source| KekError::Io {
            path: path.to_path_buf(),
            source,
        };
        let meta = fs::symlink_metadata(path).map_err(io)?;
        if !meta.file_type().is_file() {
            return Err(KekError::NotAFile(path.to_path_buf()));
        }
        check_mode(path, &meta)?;
        let mut text = Zeroizing::new(String::new());
        fs::File::open(path)
            .and_then(|mut f| f.read_to_string(&mut text))
            .map_err(io)?;
        Self::from_env_value(&text)
    }

    fn create_file(&self, path: &Path) -> Result<(), KekError> {
        let io = |source| KekError::Io {
            path: path.to_path_buf(),
            source,
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut suffix = [0u8; 8];
        rand::rngs::OsRng.fill_bytes(&mut suffix);
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "kek".to_string());
        let tmp = dir.join(format!(".{name}.{}.tmp", hex::encode(suffix)));

        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let result = (|| {
            let mut file = options.open(&tmp)?;
            let text = Zeroizing::new(format!("{}\n", crate::b64::std(self.0.bytes.as_ref())));
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            fs::hard_link(&tmp, path)?;
            // Make the new directory entry durable; best effort where directories can't be synced.
            let _ = fs::File::open(&dir).and_then(|d| d.sync_all());
            Ok(())
        })();
        let _ = fs::remove_file(&tmp);
        result.map_err(io)
    }

    /// Encrypts `plaintext`, binding it to `aad`.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, KekError> {
        self.0.seal(plaintext, aad)
    }

    /// Decrypts a blob made by [`Kek::seal`] with the same `aad`.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, KekError> {
        self.0.open(sealed, aad)
    }

    /// Wraps a data key for storage next to the vault it belongs to (`aad`: e.g. the vault id).
    pub fn wrap_data_key(&self, key: &DataKey, aad: &[u8]) -> Result<Vec<u8>, KekError> {
        self.0.seal(key.0.bytes.as_ref(), aad)
    }

    /// Unwraps a data key made by [`Kek::wrap_data_key`].
    pub fn unwrap_data_key(&self, wrapped: &[u8], aad: &[u8]) -> Result<DataKey, KekError> {
        let bytes = Zeroizing::new(self.0.open(wrapped, aad)?);
        let arr: [u8; KEY_LEN] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| KekError::BadLength(bytes.len()))?;
        Ok(DataKey(AeadKey::new(arr)))
    }

    /// A short public fingerprint of the key (not reversible), so an operator can tell which
    /// KEK sealed what without ever seeing the key.
    pub fn fingerprint(&self) -> String {
        let mut input = b"lanyard-kek-fingerprint:".to_vec();
        input.extend_from_slice(self.0.bytes.as_ref());
        let digest = crate::sha256(&input);
        input.zeroize();
        hex::encode(&digest[..8])
    }
}

/// A per-vault data key: seals secret values; stored only wrapped by the [`Kek`].
pub struct DataKey(AeadKey);

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}

impl DataKey {
    pub fn generate() -> Self {
        Self(AeadKey::random())
    }

    /// Encrypts a secret value; `aad` should name it (vault, secret name, version).
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, KekError> {
        self.0.seal(plaintext, aad)
    }

    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, KekError> {
        self.0.open(sealed, aad)
    }

    /// Same as [`Kek::wrap_data_key`].
    pub fn wrap(&self, kek: &Kek, aad: &[u8]) -> Result<Vec<u8>, KekError> {
        kek.wrap_data_key(self, aad)
    }

    /// Same as [`Kek::unwrap_data_key`].
    pub fn unwrap(kek: &Kek, wrapped: &[u8], aad: &[u8]) -> Result<Self, KekError> {
        kek.unwrap_data_key(wrapped, aad)
    }
}

#[cfg(unix)]
fn check_mode(path: &Path, meta: &fs::Metadata) -> Result<(), KekError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KekError::InsecurePermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_mode(_path: &Path, _meta: &fs::Metadata) -> Result<(), KekError> {
    Ok(())
}

fn decode_key_text(value: &str) -> Result<[u8; KEY_LEN], KekError> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    use base64::Engine;
    let text = value.trim();
    let decoded = if text.len() == 2 * KEY_LEN && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode(text).ok()
    } else {
        [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
            .iter()
            .find_map(|engine| engine.decode(text).ok())
    };
    let bytes = Zeroizing::new(decoded.ok_or(KekError::BadEncoding(text.len()))?);
    bytes
        .as_slice()
        .try_into()
        .map_err(|_| KekError::BadLength(bytes.len()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn seal_open_round_trip_and_aad_binding() {
        let kek = Kek::generate();
        let sealed = kek.seal(b"hello", b"kid-1").unwrap();
        assert_eq!(sealed.len(), NONCE_LEN + 5 + TAG_LEN);
        assert_eq!(kek.open(&sealed, b"kid-1").unwrap(), b"hello");
        assert!(matches!(
            kek.open(&sealed, b"kid-2"),
            Err(KekError::OpenFailed)
        ));
        let mut tampered = sealed.clone();
        tampered[NONCE_LEN] ^= 1;
        assert!(matches!(
            kek.open(&tampered, b"kid-1"),
            Err(KekError::OpenFailed)
        ));
        assert!(matches!(
            kek.open(&sealed[..20], b""),
            Err(KekError::Truncated)
        ));
        // A fresh nonce every time.
        assert_ne!(kek.seal(b"hello", b"kid-1").unwrap(), sealed);
        assert!(matches!(
            Kek::generate().open(&sealed, b"kid-1"),
            Err(KekError::OpenFailed)
        ));
    }

    #[test]
    fn env_value_accepts_base64_and_hex_of_32_bytes() {
        let bytes = [7u8; 32];
        let hexed = hex::encode(bytes);
        let b64 = crate::b64::std(&bytes);
        let url = crate::b64::url(&bytes);
        let a = Kek::from_env_value(&hexed).unwrap();
        let b = Kek::from_env_value(&format!("  {b64}\n")).unwrap();
        let c = Kek::from_env_value(&url).unwrap();
        let sealed = a.seal(b"x", b"").unwrap();
        assert_eq!(b.open(&sealed, b"").unwrap(), b"x");
        assert_eq!(c.open(&sealed, b"").unwrap(), b"x");
        assert!(matches!(
            Kek::from_env_value(&crate::b64::std(&[1u8; 16])),
            Err(KekError::BadLength(16))
        ));
        assert!(matches!(
            Kek::from_env_value("not a key!"),
            Err(KekError::BadEncoding(_))
        ));
    }

    #[test]
    fn data_key_wraps_under_kek_and_seals_values() {
        let kek = Kek::generate();
        let dk = DataKey::generate();
        let wrapped = dk.wrap(&kek, b"vault-a").unwrap();
        let sealed = dk.seal(b"s3cret", b"vault-a/db/1").unwrap();
        let back = DataKey::unwrap(&kek, &wrapped, b"vault-a").unwrap();
        assert_eq!(back.open(&sealed, b"vault-a/db/1").unwrap(), b"s3cret");
        assert!(DataKey::unwrap(&kek, &wrapped, b"vault-b").is_err());
    }

    #[test]
    fn debug_never_shows_key_material() {
        let bytes = [0xabu8; 32];
        let kek = Kek::from_bytes(bytes);
        let shown = format!("{kek:?} {:?}", DataKey::generate());
        assert!(shown.contains("<redacted>"));
        assert!(!shown.to_lowercase().contains("abab"));
        assert!(!shown.contains(&crate::b64::std(&bytes)));
    }

    #[test]
    fn fingerprint_is_stable_and_distinct() {
        let a = Kek::from_bytes([1; 32]);
        let b = Kek::from_bytes([2; 32]);
        assert_eq!(a.fingerprint(), Kek::from_bytes([1; 32]).fingerprint());
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint().len(), 16);
    }
}
