//! Backup blobs: a secret with all its versions, sealed under the KEK and bound to the
//! vault's subscription, so a blob is opaque to clients and restores only into a vault of
//! the subscription it was taken in (as Key Vault's are).
//!
//! Blob = base64url(`"LKV1"` ‖ KEK-seal(JSON of [`Contents`], AAD = `lanyard/kv/backup/v1/{subscription}`)).
//! Values are re-sealed under the target vault's data key on restore.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use lanyard_token::Kek;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::errors::KvError;
use crate::stored::SecretMeta;
use crate::wire::SecretValue;

const MAGIC: &[u8] = b"LKV1";

/// What a backup holds.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Contents {
    /// The live secret (its latest version's metadata).
    pub latest: SecretMeta,
    pub versions: Vec<BackedUpVersion>,
}

/// One version with its value in clear (only ever inside the sealed blob).
#[derive(Serialize, Deserialize)]
pub struct BackedUpVersion {
    pub meta: SecretMeta,
    pub value: String,
}

impl std::fmt::Debug for BackedUpVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackedUpVersion")
            .field("meta", &self.meta)
            .field("value", &"<redacted>")
            .finish()
    }
}

impl Drop for BackedUpVersion {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.value);
    }
}

impl BackedUpVersion {
    pub fn new(meta: SecretMeta, value: &SecretValue) -> Self {
        Self {
            meta,
            value: value.expose().to_string(),
        }
    }

    pub fn value(&self) -> SecretValue {
        SecretValue::new(self.value.clone())
    }
}

fn aad(subscription: &str) -> Vec<u8> {
    format!("lanyard/kv/backup/v1/{}", subscription.to_ascii_lowercase()).into_bytes()
}

/// Seals `contents` for the subscription `subscription`.
pub fn seal(kek: &Kek, subscription: &str, contents: &Contents) -> Result<String, KvError> {
    let json = Zeroizing::new(
        serde_json::to_vec(contents)
            .map_err(|e| KvError::Internal(format!("encoding a backup: {e}")))?,
    );
    let sealed = kek
        .seal(&json, &aad(subscription))
        .map_err(|e| KvError::Internal(format!("sealing a backup: {e}")))?;
    let mut blob = MAGIC.to_vec();
    blob.extend_from_slice(&sealed);
    Ok(URL_SAFE_NO_PAD.encode(blob))
}

/// Opens a blob made by [`seal`] for `subscription`; anything else is [`KvError::BadBackup`].
pub fn open(kek: &Kek, subscription: &str, blob: &str) -> Result<Contents, KvError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(blob.trim().trim_end_matches('=').as_bytes())
        .map_err(|_| KvError::BadBackup)?;
    let sealed = bytes.strip_prefix(MAGIC).ok_or(KvError::BadBackup)?;
    let json = Zeroizing::new(
        kek.open(sealed, &aad(subscription))
            .map_err(|_| KvError::BadBackup)?,
    );
    let contents: Contents = serde_json::from_slice(&json).map_err(|_| KvError::BadBackup)?;
    let consistent = !contents.versions.is_empty()
        && contents
            .versions
            .iter()
            .all(|v| v.meta.name.eq_ignore_ascii_case(&contents.latest.name))
        && contents
            .versions
            .iter()
            .any(|v| v.meta.version == contents.latest.version);
    consistent.then_some(contents).ok_or(KvError::BadBackup)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stored::Attributes;

    fn meta(version: &str) -> SecretMeta {
        SecretMeta {
            name: "db".into(),
            version: version.into(),
            content_type: None,
            tags: None,
            attributes: Attributes {
                enabled: true,
                nbf: None,
                exp: None,
                created: 1,
                updated: 1,
            },
        }
    }

    fn contents() -> Contents {
        Contents {
            latest: meta("v2"),
            versions: vec![
                BackedUpVersion::new(meta("v1"), &SecretValue::new("old-s3cret".into())),
                BackedUpVersion::new(meta("v2"), &SecretValue::new("new-s3cret".into())),
            ],
        }
    }

    #[test]
    fn round_trip_within_the_subscription_only() {
        let kek = Kek::generate();
        let blob = seal(&kek, "SUB-1", &contents()).unwrap();
        assert!(!blob.contains("s3cret"));
        let back = open(&kek, "sub-1", &blob).unwrap();
        assert_eq!(back.versions.len(), 2);
        assert_eq!(back.versions[1].value().expose(), "new-s3cret");
        assert!(matches!(
            open(&kek, "sub-2", &blob),
            Err(KvError::BadBackup)
        ));
        assert!(matches!(
            open(&Kek::generate(), "sub-1", &blob),
            Err(KvError::BadBackup)
        ));
        for bad in ["", "!!!", "TEtWMQ", &blob[..blob.len() - 4]] {
            assert!(
                matches!(open(&kek, "sub-1", bad), Err(KvError::BadBackup)),
                "{bad}"
            );
        }
    }

    #[test]
    fn inconsistent_contents_are_refused() {
        let kek = Kek::generate();
        let mut c = contents();
        c.latest.version = "v9".into();
        let blob = seal(&kek, "s", &c).unwrap();
        assert!(matches!(open(&kek, "s", &blob), Err(KvError::BadBackup)));
        assert!(!format!("{:?}", contents().versions).contains("s3cret"));
    }
}
