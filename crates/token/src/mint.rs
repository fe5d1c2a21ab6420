//! Signing access tokens with the key ring's current key.

use serde::Serialize;

use crate::claims::{AccessTokenClaims, TokenPolicy, TokenRequest};
use crate::keys::{KeyRing, SigningKey};
use crate::UnixTime;

#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("no current signing key: the key ring has not been ticked yet")]
    NoCurrentKey,
    #[error("claims could not be serialized: {0}")]
    Serialize(#[from] serde_json::Error),
    #[error(transparent)]
    Sign(#[from] crate::keys::KeyError),
}

/// A signed access token and the times the token endpoints report.
#[derive(Clone, PartialEq, Eq)]
pub struct MintedToken {
    /// The compact JWT. Never log it.
    pub access_token: String,
    pub kid: String,
    pub not_before: UnixTime,
    pub expires_on: UnixTime,
    /// `expires_on - not_before`: what `expires_in` reports at issue time.
    pub expires_in: i64,
}

impl std::fmt::Debug for MintedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MintedToken")
            .field("access_token", &"<redacted>")
            .field("kid", &self.kid)
            .field("not_before", &self.not_before)
            .field("expires_on", &self.expires_on)
            .finish()
    }
}

/// Signs `claims` with the ring's current key.
pub fn mint(ring: &KeyRing, claims: &AccessTokenClaims) -> Result<MintedToken, MintError> {
    let key = ring.current().ok_or(MintError::NoCurrentKey)?;
    Ok(MintedToken {
        access_token: sign_jwt(key, claims)?,
        kid: key.kid().to_string(),
        not_before: claims.nbf,
        expires_on: claims.exp,
        expires_in: claims.exp - claims.nbf,
    })
}

/// Builds the claims for `request` under `policy` and signs them: the whole issuance.
pub fn issue(
    ring: &KeyRing,
    policy: &TokenPolicy,
    request: &TokenRequest,
    now: UnixTime,
) -> Result<(MintedToken, AccessTokenClaims), MintError> {
    let claims = policy.claims(request, now);
    let token = mint(ring, &claims)?;
    Ok((token, claims))
}

/// `header.payload.signature` with header `{"typ":"JWT","alg":"RS256","kid":K,"x5t":K}`.
pub fn sign_jwt(key: &SigningKey, claims: &impl Serialize) -> Result<String, MintError> {
    let payload = serde_json::to_vec(claims)?;
    let header = key.jwt_header_b64();
    let payload_len = base64::encoded_len(payload.len(), false).unwrap_or(0);
    let mut token = String::with_capacity(header.len() + payload_len + 2 + 342);
    token.push_str(header);
    token.push('.');
    token.push_str(&crate::b64::url(&payload));
    let signature = key.sign(token.as_bytes())?;
    token.push('.');
    token.push_str(&crate::b64::url(&signature));
    Ok(token)
}
