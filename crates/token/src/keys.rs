//! Token signing keys and their rotation.
//!
//! Each signing key is RSA-2048 (generated with the `rsa` crate, used through `ring` for fast
//! RS256) with a self-signed certificate made from the same key, published as `x5c`. As on
//! Entra, `kid` = `x5t` = base64url(SHA-1(certificate DER)).
//!
//! # Rotation
//!
//! A [`KeyRing`] has two slots, *current* (signs) and *next* (published, not yet signing),
//! plus *retired* keys that no longer sign but stay published until every token they signed
//! has expired. With signing period `P`, token lifetime `L` and clock skew `S`
//! ([`RotationPolicy`]):
//!
//! - the next key is generated and published once the current key is half-way through its
//!   signing life, and is scheduled to start signing no earlier than `P/2` after that, so
//!   relying parties that cache the JWKS see it at least `P/2` before its first token;
//! - when its time comes it becomes current, and the old current key retires;
//! - a retired key leaves the JWKS at `retire_at + L + S`, after its last token expired.
//!
//! INVARIANT: no token is signed by a key that was not in [`KeyRing::jwks`] the moment
//! before. Every key enters the ring as *next* (published) before it can be *current*.
//!
//! [`KeyRing::plan`] is the pure decision for a moment in time; [`KeyRing::tick`] carries it
//! out (generating keys as needed) and reports what changed, so the server can persist the
//! new [`KeyRing::stored`] records. Persist them before minting with a new key: a token must
//! never outlive the record of the key that signed it.

use std::sync::Arc;

use lanyard_domain::Clock;
use ring::rand::SystemRandom;
use ring::signature::{RsaKeyPair, RsaPublicKeyComponents, RSA_PKCS1_SHA256};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::jwk::{Jwk, JwkSet, VerifyingKey};
use crate::jws::PublicKey;
use crate::kek::{Kek, KekError};
use crate::validate::KeyLookup;
use crate::UnixTime;

/// Default signing period of one key: 7 days.
pub const DEFAULT_ROTATION_PERIOD_SECS: i64 = 7 * 24 * 3600;
/// Default longest token lifetime: 24 hours, as Entra.
pub const DEFAULT_TOKEN_LIFETIME_SECS: i64 = 24 * 3600;
/// Default clock skew tolerated by validators: 5 minutes, as Entra's libraries.
pub const DEFAULT_SKEW_SECS: i64 = 5 * 60;

const RSA_BITS: usize = 2048;
/// Signing certificates are valid for five years from generation; nothing checks more.
const CERT_VALIDITY_SECS: i64 = 5 * 365 * 24 * 3600;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("rsa key generation failed: {0}")]
    Generate(String),
    #[error("signing key is not a usable rsa pkcs#8 key: {0}")]
    BadPrivateKey(String),
    #[error("signing certificate could not be made: {0}")]
    Certificate(String),
    #[error("signing certificate does not match its private key")]
    CertificateMismatch,
    #[error("stored key `{kid}` does not match its certificate thumbprint `{actual}`")]
    KidMismatch { kid: String, actual: String },
    #[error("stored key `{kid}` could not be unsealed: {source}")]
    Unseal {
        kid: String,
        #[source]
        source: KekError,
    },
    #[error("signing key could not be sealed: {0}")]
    Seal(#[source] KekError),
    #[error("stored keys are inconsistent: {0}")]
    Inconsistent(String),
    #[error("rs256 signing failed")]
    Sign,
}

/// When keys rotate. All durations in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationPolicy {
    /// How long one key signs (`P`).
    pub period_secs: i64,
    /// The longest lifetime of a token this ring signs (`L`).
    pub token_lifetime_secs: i64,
    /// Clock skew validators tolerate past `exp` (`S`).
    pub skew_secs: i64,
}

impl Default for RotationPolicy {
    fn default() -> Self {
        Self {
            period_secs: DEFAULT_ROTATION_PERIOD_SECS,
            token_lifetime_secs: DEFAULT_TOKEN_LIFETIME_SECS,
            skew_secs: DEFAULT_SKEW_SECS,
        }
    }
}

impl RotationPolicy {
    fn period(&self) -> i64 {
        self.period_secs.max(2)
    }

    /// How long a key is published before it signs (and how far into its life the current
    /// key is when its successor is prepared).
    pub fn publish_lead_secs(&self) -> i64 {
        self.period() / 2
    }

    /// How long a key stays published after it stopped signing.
    pub fn retention_secs(&self) -> i64 {
        self.token_lifetime_secs.max(0) + self.skew_secs.max(0)
    }
}

/// A token signing key: RSA-2048 private key, its certificate, and precomputed public parts.
pub struct SigningKey {
    kid: String,
    pair: RsaKeyPair,
    rng: SystemRandom,
    pkcs8: Zeroizing<Vec<u8>>,
    cert_der: Vec<u8>,
    verifying: VerifyingKey,
    jwk: Jwk,
    /// base64url of `{"typ":"JWT","alg":"RS256","kid":K,"x5t":K}`, computed once.
    jwt_header_b64: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("private_key", &"<redacted>")
            .finish()
    }
}

impl SigningKey {
    /// Generates a fresh RSA-2048 key and a self-signed certificate valid from `now`.
    /// Slow (tens to hundreds of milliseconds in release builds): call it outside locks.
    pub fn generate(now: UnixTime) -> Result<Self, KeyError> {
        use rsa::pkcs8::EncodePrivateKey;
        let private = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, RSA_BITS)
            .map_err(|e| KeyError::Generate(e.to_string()))?;
        let doc = private
            .to_pkcs8_der()
            .map_err(|e| KeyError::Generate(e.to_string()))?;
        Self::from_pkcs8(doc.as_bytes(), now)
    }

    /// Wraps an existing RSA PKCS#8 key, making a new self-signed certificate for it.
    pub fn from_pkcs8(pkcs8: &[u8], now: UnixTime) -> Result<Self, KeyError> {
        let cert_der = self_signed_certificate(pkcs8, now)?;
        Self::from_parts(pkcs8, cert_der)
    }

    /// Rebuilds a key from its PKCS#8 DER and certificate DER (as stored).
    pub fn from_parts(pkcs8: &[u8], cert_der: Vec<u8>) -> Result<Self, KeyError> {
        let pair =
            RsaKeyPair::from_pkcs8(pkcs8).map_err(|e| KeyError::BadPrivateKey(e.to_string()))?;
        let cert = crate::credentials::parse_certificate(&cert_der)
            .map_err(|e| KeyError::Certificate(e.to_string()))?;
        if cert.rsa_public_key_der() != Some(pair.public().as_ref()) {
            return Err(KeyError::CertificateMismatch);
        }
        let kid = crate::b64::url(&crate::sha1(&cert_der));
        let components: RsaPublicKeyComponents<Vec<u8>> = pair.public().into();
        let jwk = Jwk {
            kty: "RSA".to_string(),
            key_use: Some("sig".to_string()),
            kid: Some(kid.clone()),
            x5t: Some(kid.clone()),
            n: Some(crate::b64::url(&components.n)),
            e: Some(crate::b64::url(&components.e)),
            x5c: Some(vec![crate::b64::std(&cert_der)]),
            alg: None,
            crv: None,
            x: None,
            y: None,
        };
        let header = serde_json::to_vec(&JwtHeader {
            typ: "JWT",
            alg: "RS256",
            kid: &kid,
            x5t: &kid,
        })
        .map_err(|_| KeyError::Sign)?;
        Ok(Self {
            jwt_header_b64: crate::b64::url(&header),
            verifying: VerifyingKey(PublicKey::Rsa(components)),
            kid,
            pair,
            rng: SystemRandom::new(),
            pkcs8: Zeroizing::new(pkcs8.to_vec()),
            cert_der,
            jwk,
        })
    }

    /// `kid` = `x5t` = base64url(SHA-1(certificate DER)).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn certificate_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The public key as published in the JWKS.
    pub fn jwk(&self) -> &Jwk {
        &self.jwk
    }

    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.verifying
    }

    /// RS256 (RSASSA-PKCS1-v1_5 with SHA-256) over `message`.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        let mut sig = vec![0u8; self.pair.public().modulus_len()];
        self.pair
            .sign(&RSA_PKCS1_SHA256, &self.rng, message, &mut sig)
            .map_err(|_| KeyError::Sign)?;
        Ok(sig)
    }

    pub(crate) fn jwt_header_b64(&self) -> &str {
        &self.jwt_header_b64
    }

    fn seal(&self, kek: &Kek) -> Result<Vec<u8>, KeyError> {
        kek.seal(&self.pkcs8, &seal_aad(&self.kid))
            .map_err(KeyError::Seal)
    }
}

/// Our JWT header, members in Entra's order.
#[derive(Serialize)]
struct JwtHeader<'a> {
    typ: &'a str,
    alg: &'a str,
    kid: &'a str,
    x5t: &'a str,
}

fn self_signed_certificate(pkcs8: &[u8], now: UnixTime) -> Result<Vec<u8>, KeyError> {
    let cert_err = |e: rcgen::Error| KeyError::Certificate(e.to_string());
    let key = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8.into(), &rcgen::PKCS_RSA_SHA256)
        .map_err(cert_err)?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(cert_err)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Lanyard token signing");
    let at = |t: i64| {
        time::OffsetDateTime::from_unix_timestamp(t)
            .map_err(|e| KeyError::Certificate(e.to_string()))
    };
    // A day of slack for relying parties whose clocks run behind.
    params.not_before = at(now.saturating_sub(24 * 3600))?;
    params.not_after = at(now.saturating_add(CERT_VALIDITY_SECS))?;
    let cert = params.self_signed(&key).map_err(cert_err)?;
    Ok(cert.der().to_vec())
}

fn seal_aad(kid: &str) -> Vec<u8> {
    format!("lanyard-signing-key:{kid}").into_bytes()
}

/// Where a key is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum KeyState {
    /// Published, not yet signing.
    Next,
    /// Signing.
    Current,
    /// Published, no longer signing.
    Retired,
}

/// The record the server persists for each published key. The private key is sealed under
/// the KEK with the `kid` as associated data.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredKey {
    pub kid: String,
    pub state: KeyState,
    pub created_at: UnixTime,
    /// When it starts (or started) signing.
    pub activate_at: UnixTime,
    /// When it stops (or stopped) signing.
    pub retire_at: UnixTime,
    /// When it leaves the JWKS.
    pub remove_at: UnixTime,
    #[serde(with = "crate::b64::serde_std")]
    pub sealed_pkcs8: Vec<u8>,
    #[serde(with = "crate::b64::serde_std")]
    pub cert_der: Vec<u8>,
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKey")
            .field("kid", &self.kid)
            .field("state", &self.state)
            .field("created_at", &self.created_at)
            .field("activate_at", &self.activate_at)
            .field("retire_at", &self.retire_at)
            .field("remove_at", &self.remove_at)
            .field("sealed_pkcs8", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// A step [`KeyRing::plan`] decides on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyAction {
    /// Generate a key, publish it as *next*, and let it sign from `activate_at` (if that is
    /// now, it becomes current at once: only when the ring has no current key).
    Generate { activate_at: UnixTime },
    /// Make the *next* key current; the current one retires.
    Activate { kid: String },
    /// Drop a retired key from the JWKS.
    Remove { kid: String },
}

/// What [`KeyRing::tick`] or [`KeyRing::rotate_now`] changed. Persist [`KeyRing::stored`]
/// and delete the records of removed keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyChange {
    /// A new key is in the JWKS, scheduled to sign from `activate_at`.
    Published { kid: String, activate_at: UnixTime },
    /// `kid` now signs; `retired` (if any) stopped signing and stays published until
    /// `retired_until`.
    Activated {
        kid: String,
        retired: Option<String>,
        retired_until: Option<UnixTime>,
    },
    /// `kid` left the JWKS.
    Removed { kid: String },
}

struct Slot {
    record: StoredKey,
    key: Arc<SigningKey>,
}

/// The published signing keys: current, next and retired.
pub struct KeyRing {
    policy: RotationPolicy,
    current: Option<Slot>,
    next: Option<Slot>,
    /// Newest first.
    retired: Vec<Slot>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("policy", &self.policy)
            .field("current", &self.current.as_ref().map(|s| &s.record))
            .field("next", &self.next.as_ref().map(|s| &s.record))
            .field(
                "retired",
                &self.retired.iter().map(|s| &s.record).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl KeyRing {
    /// An empty ring; the first [`tick`](Self::tick) creates the first key.
    pub fn new(policy: RotationPolicy) -> Self {
        Self {
            policy,
            current: None,
            next: None,
            retired: Vec::new(),
        }
    }

    /// Rebuilds the ring from persisted records, unsealing each private key with `kek`.
    pub fn load(
        policy: RotationPolicy,
        records: impl IntoIterator<Item = StoredKey>,
        kek: &Kek,
    ) -> Result<Self, KeyError> {
        let mut ring = Self::new(policy);
        for record in records {
            let pkcs8 = Zeroizing::new(
                kek.open(&record.sealed_pkcs8, &seal_aad(&record.kid))
                    .map_err(|source| KeyError::Unseal {
                        kid: record.kid.clone(),
                        source,
                    })?,
            );
            let key = SigningKey::from_parts(&pkcs8, record.cert_der.clone())?;
            if key.kid() != record.kid {
                return Err(KeyError::KidMismatch {
                    kid: record.kid,
                    actual: key.kid().to_string(),
                });
            }
            let slot = Slot {
                record,
                key: Arc::new(key),
            };
            let target = match slot.record.state {
                KeyState::Current => &mut ring.current,
                KeyState::Next => &mut ring.next,
                KeyState::Retired => {
                    ring.retired.push(slot);
                    continue;
                }
            };
            if target.is_some() {
                return Err(KeyError::Inconsistent(format!(
                    "more than one key in state `{:?}`",
                    slot.record.state
                )));
            }
            *target = Some(slot);
        }
        ring.retired
            .sort_by_key(|s| std::cmp::Reverse(s.record.retire_at));
        Ok(ring)
    }

    pub fn policy(&self) -> &RotationPolicy {
        &self.policy
    }

    /// Every record to persist: current, next, then retired keys.
    pub fn stored(&self) -> Vec<StoredKey> {
        self.slots().map(|s| s.record.clone()).collect()
    }

    fn slots(&self) -> impl Iterator<Item = &Slot> {
        self.current
            .iter()
            .chain(self.next.iter())
            .chain(self.retired.iter())
    }

    /// The key that signs now.
    pub fn current(&self) -> Option<&Arc<SigningKey>> {
        self.current.as_ref().map(|s| &s.key)
    }

    /// The published successor, if prepared.
    pub fn next(&self) -> Option<&Arc<SigningKey>> {
        self.next.as_ref().map(|s| &s.key)
    }

    pub fn retired(&self) -> impl Iterator<Item = &Arc<SigningKey>> {
        self.retired.iter().map(|s| &s.key)
    }

    /// The record of a published key.
    pub fn record(&self, kid: &str) -> Option<&StoredKey> {
        self.slots()
            .find(|s| s.record.kid == kid)
            .map(|s| &s.record)
    }

    /// A published key by `kid`.
    pub fn find(&self, kid: &str) -> Option<&Arc<SigningKey>> {
        self.slots().find(|s| s.key.kid == kid).map(|s| &s.key)
    }

    /// The JWKS: current, next, then retired keys.
    pub fn jwks(&self) -> JwkSet {
        JwkSet {
            keys: self.slots().map(|s| s.key.jwk.clone()).collect(),
        }
    }

    /// What should happen at `now`. Pure: looks only at the records and the policy.
    pub fn plan(&self, now: UnixTime) -> Vec<KeyAction> {
        let mut actions: Vec<KeyAction> = self
            .retired
            .iter()
            .filter(|s| s.record.remove_at <= now)
            .map(|s| KeyAction::Remove {
                kid: s.record.kid.clone(),
            })
            .collect();
        match (&self.current, &self.next) {
            // Bootstrap: nothing has ever signed, so there is nothing to publish ahead of.
            (None, None) => actions.push(KeyAction::Generate { activate_at: now }),
            // A published key with nobody signing (e.g. records edited by hand): use it.
            (None, Some(next)) => actions.push(KeyAction::Activate {
                kid: next.record.kid.clone(),
            }),
            (Some(_), Some(next)) if next.record.activate_at <= now => {
                actions.push(KeyAction::Activate {
                    kid: next.record.kid.clone(),
                })
            }
            (Some(current), None)
                if now >= current.record.activate_at + self.policy.publish_lead_secs() =>
            {
                // INVARIANT: at least `publish_lead` between publication and first use, even
                // when we are late (server was down past the current key's retire time).
                let activate_at = current
                    .record
                    .retire_at
                    .max(now + self.policy.publish_lead_secs());
                actions.push(KeyAction::Generate { activate_at });
            }
            _ => {}
        }
        actions
    }

    /// Carries out [`plan`](Self::plan) at the clock's time, generating keys as needed.
    pub fn tick(&mut self, clock: &dyn Clock, kek: &Kek) -> Result<Vec<KeyChange>, KeyError> {
        self.tick_with(clock.unix(), kek, &mut SigningKey::generate)
    }

    /// [`tick`](Self::tick) with an explicit time and key source (e.g. a key generated
    /// beforehand outside a lock, or fixed keys in tests).
    pub fn tick_with(
        &mut self,
        now: UnixTime,
        kek: &Kek,
        generate: &mut dyn FnMut(UnixTime) -> Result<SigningKey, KeyError>,
    ) -> Result<Vec<KeyChange>, KeyError> {
        let mut changes = Vec::new();
        for action in self.plan(now) {
            match action {
                KeyAction::Remove { kid } => {
                    self.retired.retain(|s| s.record.kid != kid);
                    changes.push(KeyChange::Removed { kid });
                }
                KeyAction::Activate { .. } => changes.push(self.activate_next(now)?),
                KeyAction::Generate { activate_at } => {
                    let key = generate(now)?;
                    changes.push(self.publish_next(key, now, activate_at, kek)?);
                    if activate_at <= now {
                        changes.push(self.activate_next(now)?);
                    }
                }
            }
        }
        Ok(changes)
    }

    /// `lanyard keys rotate`: the next key starts signing now and the current one retires.
    ///
    /// If no next key has been published yet, one is generated and published first, then
    /// activated in the same call. The invariant holds (the key is in the JWKS before it
    /// signs: anyone reading this ring sees it), but relying parties that cached the JWKS
    /// will meet an unknown `kid` and must refetch, as Entra's libraries do on a `kid` miss.
    /// We chose this over deferring the switch by the publish lead because an operator who
    /// forces a rotation (suspected key exposure) wants the old key to stop signing now.
    /// The retired key stays published until its tokens expired, as in a scheduled rotation.
    pub fn rotate_now(&mut self, clock: &dyn Clock, kek: &Kek) -> Result<Vec<KeyChange>, KeyError> {
        self.rotate_now_with(clock.unix(), kek, &mut SigningKey::generate)
    }

    /// [`rotate_now`](Self::rotate_now) with an explicit time and key source.
    pub fn rotate_now_with(
        &mut self,
        now: UnixTime,
        kek: &Kek,
        generate: &mut dyn FnMut(UnixTime) -> Result<SigningKey, KeyError>,
    ) -> Result<Vec<KeyChange>, KeyError> {
        let mut changes = Vec::new();
        if self.next.is_none() {
            let key = generate(now)?;
            changes.push(self.publish_next(key, now, now, kek)?);
        }
        changes.push(self.activate_next(now)?);
        Ok(changes)
    }

    fn publish_next(
        &mut self,
        key: SigningKey,
        now: UnixTime,
        activate_at: UnixTime,
        kek: &Kek,
    ) -> Result<KeyChange, KeyError> {
        if self.next.is_some() {
            return Err(KeyError::Inconsistent(
                "a next key is already published".to_string(),
            ));
        }
        if self.find(key.kid()).is_some() {
            return Err(KeyError::Inconsistent(format!(
                "key `{}` is already published",
                key.kid()
            )));
        }
        let retire_at = activate_at + self.policy.period();
        let record = StoredKey {
            kid: key.kid.clone(),
            state: KeyState::Next,
            created_at: now,
            activate_at,
            retire_at,
            remove_at: retire_at + self.policy.retention_secs(),
            sealed_pkcs8: key.seal(kek)?,
            cert_der: key.cert_der.clone(),
        };
        if let Some(current) = &mut self.current {
            // The current key signs until its successor takes over.
            current.record.retire_at = activate_at;
            current.record.remove_at = activate_at + self.policy.retention_secs();
        }
        let kid = record.kid.clone();
        self.next = Some(Slot {
            record,
            key: Arc::new(key),
        });
        Ok(KeyChange::Published { kid, activate_at })
    }

    fn activate_next(&mut self, now: UnixTime) -> Result<KeyChange, KeyError> {
        let mut next = self
            .next
            .take()
            .ok_or_else(|| KeyError::Inconsistent("no next key to activate".to_string()))?;
        next.record.state = KeyState::Current;
        next.record.activate_at = now;
        next.record.retire_at = now + self.policy.period();
        next.record.remove_at = next.record.retire_at + self.policy.retention_secs();
        let kid = next.record.kid.clone();
        let (retired, retired_until) = match self.current.replace(next) {
            Some(mut old) => {
                old.record.state = KeyState::Retired;
                old.record.retire_at = now;
                old.record.remove_at = now + self.policy.retention_secs();
                let out = (Some(old.record.kid.clone()), Some(old.record.remove_at));
                self.retired.insert(0, old);
                out
            }
            None => (None, None),
        };
        Ok(KeyChange::Activated {
            kid,
            retired,
            retired_until,
        })
    }
}

impl KeyLookup for KeyRing {
    fn verifying_key(&self, kid: &str) -> Option<&VerifyingKey> {
        self.find(kid).map(|k| &k.verifying)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn policy_numbers() {
        let p = RotationPolicy::default();
        assert_eq!(p.publish_lead_secs(), 7 * 24 * 3600 / 2);
        assert_eq!(p.retention_secs(), 24 * 3600 + 300);
    }

    #[test]
    fn empty_ring_plans_a_bootstrap_key() {
        let ring = KeyRing::new(RotationPolicy::default());
        assert_eq!(
            ring.plan(1000),
            vec![KeyAction::Generate { activate_at: 1000 }]
        );
        assert!(ring.jwks().keys.is_empty());
    }

    #[test]
    fn stored_key_debug_redacts_sealed_key() {
        let rec = StoredKey {
            kid: "k".into(),
            state: KeyState::Current,
            created_at: 0,
            activate_at: 0,
            retire_at: 1,
            remove_at: 2,
            sealed_pkcs8: vec![0xde, 0xad, 0xbe, 0xef],
            cert_der: vec![],
        };
        let shown = format!("{rec:?}");
        assert!(shown.contains("<redacted>"));
        assert!(!shown.contains("222"), "{shown}");
    }
}
