//! Lanyard's token signer and the token validation library every data plane shares.
//!
//! Pure library: no network, no database, no async. The server fetches remote documents,
//! persists records and renders HTTP; this crate gives it types and functions. Time comes in
//! as a [`Clock`](lanyard_domain::Clock) or as Unix seconds, so expiry and rotation are tested
//! without sleeping. The only file it touches is the key-encryption-key file.
//!
//! Layout:
//! - [`kek`]: the key-encryption key (AES-256-GCM) that seals signing keys at rest, and the
//!   per-vault [`DataKey`] it wraps.
//! - [`keys`]: RSA-2048 signing keys with self-signed certificates, the persisted
//!   [`StoredKey`] record, the two-slot [`KeyRing`] with its rotation schedule, and the JWKS.
//! - [`jwk`]: public keys as JSON Web Keys, for our own JWKS and for external issuers'.
//! - [`claims`]: access-token claims exactly as Entra writes them (v1 and v2), issuers, and
//!   the `R/.default` ↔ `R` scope rules.
//! - [`mod@mint`]: signs claims with the ring's current key into a compact JWT.
//! - [`validate`]: strict validation of our own tokens, with a revocation hook and a bounded
//!   cache of already-validated tokens.
//! - [`credentials`]: client secrets (salted hashes), certificate credentials and their client
//!   assertions, and federated (workload identity) assertions.
//! - [`entra_error`]: the AADSTS codes, OAuth error strings and HTTP statuses of the token
//!   endpoint's failures.
//!
//! `jws` (private) holds the compact-JWS parser every verifier in this crate goes through.

pub mod claims;
pub mod credentials;
pub mod entra_error;
pub mod jwk;
mod jws;
pub mod kek;
pub mod keys;
pub mod mint;
pub mod validate;

pub use claims::{
    resource_to_scope, scope_to_resource, AccessTokenClaims, ClientAuthMethod, IssuerConfig,
    TokenPolicy, TokenPrincipal, TokenRequest, TokenVersion,
};
pub use credentials::{
    generate_client_secret, peek_unverified_issuer, verify_client_assertion,
    verify_federated_assertion, AssertionError, CertificateCredential, ClientSecret,
    FederatedCredential, SecretHash,
};
pub use entra_error::TokenServiceError;
pub use jwk::{Jwk, JwkSet, KeySet, VerifyingKey};
pub use kek::{DataKey, Kek, KekError};
pub use keys::{
    KeyAction, KeyChange, KeyError, KeyRing, KeyState, RotationPolicy, SigningKey, StoredKey,
};
pub use mint::{issue, mint, MintError, MintedToken};
pub use validate::{
    expand_audiences, KeyLookup, NoRevocation, Revocation, ValidatedToken, ValidationConfig,
    ValidationError, Validator,
};

/// Unix seconds.
pub type UnixTime = i64;

pub(crate) mod b64 {
    //! The two base64 flavours JOSE uses, and serde helpers for binary fields.
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    use base64::Engine;

    /// base64url without padding (JWS segments, JWK members, thumbprints).
    pub fn url(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Strict base64url: no padding, no whitespace, canonical trailing bits.
    pub fn url_decode(text: &str) -> Option<Vec<u8>> {
        URL_SAFE_NO_PAD.decode(text).ok()
    }

    /// Standard base64 with padding (`x5c`, stored records).
    pub fn std(bytes: &[u8]) -> String {
        STANDARD.encode(bytes)
    }

    pub fn std_decode(text: &str) -> Option<Vec<u8>> {
        STANDARD.decode(text).ok()
    }

    /// `#[serde(with = "crate::b64::serde_std")]` for `Vec<u8>` fields.
    pub mod serde_std {
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
            s.serialize_str(&super::std(bytes))
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
            let text = String::deserialize(d)?;
            super::std_decode(&text)
                .ok_or_else(|| serde::de::Error::custom("invalid base64 in binary field"))
        }
    }
}

pub(crate) fn sha1(bytes: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, bytes)
        .as_ref()
        .to_vec()
}

pub(crate) fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}
