//! Validation of Lanyard-issued access tokens: the library every data plane shares.
//!
//! Checks, in order: compact-JWS shape (strict base64url, no padding); `alg` is RS256 and
//! nothing else (`none`, HS256 and everything else are refused before any key is touched);
//! `kid` names a key we publish (current, next or retired); the RS256 signature; `tid` is an
//! accepted tenant; `iss` is that tenant's v1 or v2 issuer; `aud` is an accepted audience;
//! `exp`/`nbf` within the clock skew (default 5 minutes, the tolerance Entra's own libraries
//! apply); and finally the [`Revocation`] hook, so deleting a principal or detaching an
//! identity takes effect on the next request rather than when the token expires.
//!
//! Validated tokens are cached by SHA-256 of the token. A cache hit still checks expiry,
//! that the signing key is still published, and revocation, so the cache never extends a
//! token's life; it only skips the signature and the parsing.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use uuid::Uuid;

use crate::claims::{AccessTokenClaims, IssuerConfig};
use crate::jwk::{KeySet, VerifyingKey};
use crate::jws::{self, Alg};
use crate::UnixTime;

/// Default tolerated clock skew: 5 minutes.
pub const DEFAULT_SKEW_SECS: i64 = crate::keys::DEFAULT_SKEW_SECS;
/// Default number of validated tokens remembered.
pub const DEFAULT_CACHE_CAPACITY: usize = 10_000;

/// The public Azure audiences of the services Lanyard implements. A data plane accepts
/// these as well as its own configured audience.
pub mod azure_audiences {
    pub const KEY_VAULT: &[&str] = &["https://vault.azure.net"];
    pub const STORAGE: &[&str] = &["https://storage.azure.com"];
    pub const MANAGEMENT: &[&str] = &[
        "https://management.azure.com/",
        "https://management.core.windows.net/",
    ];
    pub const SQL: &[&str] = &["https://database.windows.net/"];
}

/// Why a token was refused. Messages never include the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error("token is malformed: {0}")]
    Malformed(&'static str),
    #[error("token algorithm `{0}` is not accepted, only `RS256` is")]
    UnsupportedAlgorithm(String),
    #[error("token is signed with unknown key `{0}`")]
    UnknownKey(String),
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token expired at {exp}")]
    Expired { exp: UnixTime },
    #[error("token is not valid before {nbf}")]
    NotYetValid { nbf: UnixTime },
    #[error("token audience `{0}` is not accepted")]
    WrongAudience(String),
    #[error("token issuer `{0}` is not accepted")]
    WrongIssuer(String),
    #[error("token tenant `{0}` is not accepted")]
    WrongTenant(String),
    #[error("token was revoked")]
    Revoked,
}

/// Where a validator finds the public key named by a token's `kid`.
pub trait KeyLookup {
    fn verifying_key(&self, kid: &str) -> Option<&VerifyingKey>;
}

impl KeyLookup for KeySet {
    fn verifying_key(&self, kid: &str) -> Option<&VerifyingKey> {
        self.get(kid)
    }
}

impl<T: KeyLookup + ?Sized> KeyLookup for &T {
    fn verifying_key(&self, kid: &str) -> Option<&VerifyingKey> {
        (**self).verifying_key(kid)
    }
}

/// The revocation hook, consulted on every validation (cached or not).
///
/// A token whose `iat` is before the returned time is refused. A deleted principal is
/// `Some(i64::MAX)`. To revoke "everything issued up to now" return `now + 1`: tokens carry
/// whole seconds, so one issued in the same second as the revocation is otherwise ambiguous.
pub trait Revocation {
    /// Tokens of principal `oid` issued before this time are revoked.
    fn valid_after(&self, oid: Uuid) -> Option<UnixTime>;

    /// Finer grain: tokens of `oid` minted for `host` (the resource a managed identity was
    /// used from: `xms_az_rid`, or `xms_mirid` for a system-assigned identity). Detaching a
    /// user-assigned identity from one VM revokes only that VM's tokens this way.
    fn valid_after_for_host(&self, _oid: Uuid, _host: &str) -> Option<UnixTime> {
        None
    }
}

impl<F: Fn(Uuid) -> Option<UnixTime>> Revocation for F {
    fn valid_after(&self, oid: Uuid) -> Option<UnixTime> {
        self(oid)
    }
}

/// Nothing is revoked.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoRevocation;

impl Revocation for NoRevocation {
    fn valid_after(&self, _oid: Uuid) -> Option<UnixTime> {
        None
    }
}

/// Each audience with and without a trailing slash, as clients ask for either.
pub fn expand_audiences<I, S>(audiences: I) -> HashSet<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut out = HashSet::new();
    for aud in audiences {
        let bare = aud.as_ref().trim_end_matches('/');
        if bare.is_empty() {
            continue;
        }
        out.insert(bare.to_string());
        out.insert(format!("{bare}/"));
    }
    out
}

/// What a data plane accepts.
#[derive(Debug, Clone)]
pub struct ValidationConfig {
    tenants: HashSet<Uuid>,
    /// Accepted issuer → the tenant it belongs to.
    issuers: HashMap<String, Uuid>,
    audiences: HashSet<String>,
    skew_secs: i64,
}

impl ValidationConfig {
    /// Accepts tokens of `tenants` issued under `issuers` (both the v1 and v2 forms) for any
    /// of `audiences` (expanded with [`expand_audiences`]). Pass the service's own audience
    /// and its public Azure one (see [`azure_audiences`]).
    pub fn new<T, A, S>(issuers: &IssuerConfig, tenants: T, audiences: A) -> Self
    where
        T: IntoIterator<Item = Uuid>,
        A: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut config = Self {
            tenants: tenants.into_iter().collect(),
            issuers: HashMap::new(),
            audiences: expand_audiences(audiences),
            skew_secs: DEFAULT_SKEW_SECS,
        };
        config.add_issuers(issuers);
        config
    }

    /// Also accept the issuers of another issuer configuration (e.g. both Azure's hosts and
    /// our own login host during a migration).
    pub fn with_issuers(mut self, issuers: &IssuerConfig) -> Self {
        self.add_issuers(issuers);
        self
    }

    fn add_issuers(&mut self, issuers: &IssuerConfig) {
        for tid in &self.tenants {
            self.issuers.insert(issuers.v1(*tid), *tid);
            self.issuers.insert(issuers.v2(*tid), *tid);
        }
    }

    pub fn with_skew_secs(mut self, skew_secs: i64) -> Self {
        self.skew_secs = skew_secs.max(0);
        self
    }

    pub fn skew_secs(&self) -> i64 {
        self.skew_secs
    }

    pub fn accepts_audience(&self, aud: &str) -> bool {
        self.audiences.contains(aud)
    }
}

/// A token that passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedToken {
    pub claims: AccessTokenClaims,
    pub object_id: Uuid,
    pub tenant_id: Uuid,
    /// The key that signed it.
    pub kid: String,
}

/// Validates tokens against one [`ValidationConfig`], remembering those that passed.
#[derive(Debug)]
pub struct Validator {
    config: ValidationConfig,
    cache: RwLock<HashMap<[u8; 32], Arc<ValidatedToken>>>,
    capacity: usize,
}

impl Validator {
    pub fn new(config: ValidationConfig) -> Self {
        Self::with_cache_capacity(config, DEFAULT_CACHE_CAPACITY)
    }

    /// `capacity` 0 disables the cache.
    pub fn with_cache_capacity(config: ValidationConfig, capacity: usize) -> Self {
        Self {
            config,
            cache: RwLock::new(HashMap::new()),
            capacity,
        }
    }

    pub fn config(&self) -> &ValidationConfig {
        &self.config
    }

    /// Validates `token` at `now` with the keys of `keys` and the `revocation` hook.
    pub fn validate(
        &self,
        token: &str,
        keys: &dyn KeyLookup,
        revocation: &dyn Revocation,
        now: UnixTime,
    ) -> Result<Arc<ValidatedToken>, ValidationError> {
        if self.capacity == 0 {
            return self
                .validate_uncached(token, keys, revocation, now)
                .map(Arc::new);
        }
        let digest = crate::sha256(token.as_bytes());
        let hit = self
            .cache
            .read()
            .ok()
            .and_then(|map| map.get(&digest).cloned());
        if let Some(hit) = hit {
            self.check_live(&hit.claims, hit.object_id, now, revocation)?;
            if keys.verifying_key(&hit.kid).is_none() {
                return Err(ValidationError::UnknownKey(hit.kid.clone()));
            }
            return Ok(hit);
        }
        let validated = Arc::new(self.validate_uncached(token, keys, revocation, now)?);
        self.remember(digest, Arc::clone(&validated), now);
        Ok(validated)
    }

    /// Full validation without touching the cache.
    pub fn validate_uncached(
        &self,
        token: &str,
        keys: &dyn KeyLookup,
        revocation: &dyn Revocation,
        now: UnixTime,
    ) -> Result<ValidatedToken, ValidationError> {
        let jws = jws::parse(token).map_err(|m| ValidationError::Malformed(m.0))?;
        if jws.header.alg != "RS256" {
            return Err(ValidationError::UnsupportedAlgorithm(truncated(
                &jws.header.alg,
            )));
        }
        let kid = jws
            .header
            .kid
            .as_deref()
            .or(jws.header.x5t.as_deref())
            .ok_or(ValidationError::Malformed("header has no `kid`"))?;
        let key = keys
            .verifying_key(kid)
            .ok_or_else(|| ValidationError::UnknownKey(truncated(kid)))?;
        if !key.0.fits(Alg::Rs256)
            || !key
                .0
                .verify(Alg::Rs256, jws.signing_input.as_bytes(), &jws.signature)
        {
            return Err(ValidationError::BadSignature);
        }
        let claims: AccessTokenClaims = serde_json::from_slice(&jws.payload)
            .map_err(|_| ValidationError::Malformed("claims are not a valid access token"))?;

        let tenant_id = Uuid::parse_str(&claims.tid)
            .map_err(|_| ValidationError::WrongTenant(truncated(&claims.tid)))?;
        if !self.config.tenants.contains(&tenant_id) {
            return Err(ValidationError::WrongTenant(truncated(&claims.tid)));
        }
        if self.config.issuers.get(&claims.iss) != Some(&tenant_id) {
            return Err(ValidationError::WrongIssuer(truncated(&claims.iss)));
        }
        if !self.config.audiences.contains(&claims.aud) {
            return Err(ValidationError::WrongAudience(truncated(&claims.aud)));
        }
        let object_id = Uuid::parse_str(&claims.oid)
            .map_err(|_| ValidationError::Malformed("`oid` is not a GUID"))?;
        self.check_live(&claims, object_id, now, revocation)?;
        Ok(ValidatedToken {
            kid: kid.to_string(),
            claims,
            object_id,
            tenant_id,
        })
    }

    /// The checks that depend on the moment: times and revocation.
    fn check_live(
        &self,
        claims: &AccessTokenClaims,
        oid: Uuid,
        now: UnixTime,
        revocation: &dyn Revocation,
    ) -> Result<(), ValidationError> {
        let skew = self.config.skew_secs;
        if now > claims.exp.saturating_add(skew) {
            return Err(ValidationError::Expired { exp: claims.exp });
        }
        if now < claims.nbf.saturating_sub(skew) {
            return Err(ValidationError::NotYetValid { nbf: claims.nbf });
        }
        if revocation
            .valid_after(oid)
            .is_some_and(|after| claims.iat < after)
        {
            return Err(ValidationError::Revoked);
        }
        if let Some(host) = claims.host_resource() {
            if revocation
                .valid_after_for_host(oid, host)
                .is_some_and(|after| claims.iat < after)
            {
                return Err(ValidationError::Revoked);
            }
        }
        Ok(())
    }

    fn remember(&self, digest: [u8; 32], token: Arc<ValidatedToken>, now: UnixTime) {
        let Ok(mut map) = self.cache.write() else {
            return;
        };
        if map.len() >= self.capacity {
            let skew = self.config.skew_secs;
            map.retain(|_, t| t.claims.exp.saturating_add(skew) >= now);
        }
        if map.len() >= self.capacity {
            // Still full of live tokens: drop an arbitrary eighth (HashMap order is random per
            // process). A dropped token is just validated again on its next use.
            let target = self.capacity - self.capacity / 8 - 1;
            let mut excess = map.len().saturating_sub(target);
            map.retain(|_, _| {
                if excess > 0 {
                    excess -= 1;
                    false
                } else {
                    true
                }
            });
        }
        map.insert(digest, token);
    }

    /// Number of cached tokens.
    pub fn cache_len(&self) -> usize {
        self.cache.read().map(|m| m.len()).unwrap_or(0)
    }

    pub fn clear_cache(&self) {
        if let Ok(mut map) = self.cache.write() {
            map.clear();
        }
    }
}

/// User input echoed in errors is bounded.
fn truncated(s: &str) -> String {
    const MAX: usize = 128;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn audiences_expand_both_ways() {
        let set = expand_audiences(["https://vault.azure.net", "https://management.azure.com/"]);
        for a in [
            "https://vault.azure.net",
            "https://vault.azure.net/",
            "https://management.azure.com",
            "https://management.azure.com/",
        ] {
            assert!(set.contains(a), "{a}");
        }
        assert_eq!(set.len(), 4);
        assert!(expand_audiences(["/", ""]).is_empty());
    }

    #[test]
    fn issuers_are_per_tenant() {
        let t1 = Uuid::new_v4();
        let t2 = Uuid::new_v4();
        let cfg = ValidationConfig::new(&IssuerConfig::default(), [t1, t2], ["a"]);
        assert_eq!(
            cfg.issuers.get(&format!("https://sts.windows.net/{t1}/")),
            Some(&t1)
        );
        assert_eq!(
            cfg.issuers
                .get(&format!("https://login.microsoftonline.com/{t2}/v2.0")),
            Some(&t2)
        );
        let both = cfg.with_issuers(&IssuerConfig::on_host("https://login.example"));
        assert_eq!(both.issuers.len(), 8);
    }

    #[test]
    fn long_input_is_truncated_on_a_char_boundary() {
        let s = "é".repeat(100);
        let t = truncated(&s);
        assert!(t.len() <= 128 + "…".len());
        assert!(t.ends_with('…'));
    }
}
