//! How applications and workloads prove who they are at the token endpoint.
//!
//! - Client secrets: generated here, stored only as a salted SHA-256 ([`SecretHash`]).
//!   Secrets are 240 random bits, so a fast salted hash is as strong as a slow KDF would be.
//! - Certificate credentials: the public certificate ([`CertificateCredential`]) and the
//!   RS256/PS256 client assertion signed with its key ([`verify_client_assertion`]).
//! - Federated credentials: an external issuer's JWT matched against the identity's
//!   federated identity credentials ([`verify_federated_assertion`]).
//!
//! Both kinds of assertion are bounded in lifetime (`exp` - `nbf`, else `exp` - `iat`) and in
//! how far `exp` lies ahead, by a limit the caller passes (the server's configuration;
//! defaults [`DEFAULT_CLIENT_ASSERTION_MAX_LIFETIME_SECS`] and
//! [`DEFAULT_FEDERATED_ASSERTION_MAX_LIFETIME_SECS`]). An assertion may be presented more
//! than once within that window, as Entra allows: clients reuse one (MSAL keeps its signed
//! assertion for most of its ten minutes; a Kubernetes token file is re-read and re-sent
//! until the kubelet replaces it), so the lifetime bound, not a `jti` cache, limits what a
//! leaked assertion is worth.

use lanyard_domain::Clock;
use rand::RngCore;
use serde::{Deserialize, Deserializer, Serialize};
use subtle::ConstantTimeEq;
use x509_cert::der::Decode;
use zeroize::Zeroizing;

use crate::jwk::{JwkSet, KeySet, VerifyingKey};
use crate::jws::{self, Alg, PublicKey};
use crate::UnixTime;

/// Clock skew tolerated on assertion times.
pub const ASSERTION_SKEW_SECS: i64 = crate::keys::DEFAULT_SKEW_SECS;
/// The longest lifetime accepted by default for a certificate-signed client assertion. MSAL
/// signs assertions for ten minutes and Microsoft.IdentityModel's default is one hour;
/// Entra's guidance is five to ten minutes.
pub const DEFAULT_CLIENT_ASSERTION_MAX_LIFETIME_SECS: i64 = 3600;
/// The longest lifetime accepted by default for a federated assertion: Kubernetes service
/// account tokens for Azure workload identity last one to 24 hours (1 hour by default).
pub const DEFAULT_FEDERATED_ASSERTION_MAX_LIFETIME_SECS: i64 = 24 * 3600;
/// `client_assertion_type` for both certificate and federated assertions.
pub const JWT_BEARER_ASSERTION_TYPE: &str =
    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

// ---------------------------------------------------------------------------------------
// Client secrets

const SECRET_RANDOM_BYTES: usize = 30; // 40 base64url characters
const SECRET_HASH_ALGORITHM: &str = "sha256-salted-v1";
const SECRET_SALT_LEN: usize = 16;

/// A client secret value, shown to its owner once. Never log it.
pub struct ClientSecret(Zeroizing<String>);

impl std::fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientSecret(<redacted>)")
    }
}

impl ClientSecret {
    /// 40 URL-safe characters from 240 random bits.
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new([0u8; SECRET_RANDOM_BYTES]);
        rand::rngs::OsRng.fill_bytes(bytes.as_mut());
        Self(Zeroizing::new(crate::b64::url(bytes.as_ref())))
    }

    /// The value, to hand to its owner.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The first three characters, as Entra shows (`hint`).
    pub fn hint(&self) -> String {
        hint_of(&self.0)
    }
}

fn hint_of(secret: &str) -> String {
    secret.chars().take(3).collect()
}

/// What is stored for a client secret: a salted hash and the hint.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretHash {
    pub algorithm: String,
    #[serde(with = "crate::b64::serde_std")]
    pub salt: Vec<u8>,
    #[serde(with = "crate::b64::serde_std")]
    pub hash: Vec<u8>,
    pub hint: String,
}

impl std::fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretHash")
            .field("algorithm", &self.algorithm)
            .field("hint", &self.hint)
            .field("hash", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl SecretHash {
    pub fn new(secret: &str) -> Self {
        let mut salt = vec![0u8; SECRET_SALT_LEN];
        rand::rngs::OsRng.fill_bytes(&mut salt);
        let hash = salted_hash(&salt, secret).to_vec();
        Self {
            algorithm: SECRET_HASH_ALGORITHM.to_string(),
            salt,
            hash,
            hint: hint_of(secret),
        }
    }

    /// Whether `candidate` is the secret. Compares in constant time.
    pub fn verify(&self, candidate: &str) -> bool {
        if self.algorithm != SECRET_HASH_ALGORITHM {
            return false;
        }
        let computed = salted_hash(&self.salt, candidate);
        computed.ct_eq(self.hash.as_slice()).into()
    }
}

/// A fresh secret and the record to store for it.
pub fn generate_client_secret() -> (ClientSecret, SecretHash) {
    let secret = ClientSecret::generate();
    let hash = SecretHash::new(secret.expose());
    (secret, hash)
}

fn salted_hash(salt: &[u8], secret: &str) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(b"lanyard-client-secret-v1\0");
    h.update(salt);
    h.update(secret.as_bytes());
    h.finalize().into()
}

// ---------------------------------------------------------------------------------------
// Certificates

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateError {
    #[error("certificate is not valid der: {0}")]
    Der(String),
    #[error("no `BEGIN CERTIFICATE` block found in pem")]
    NoPemBlock,
    #[error("pem certificate block is not valid base64")]
    PemBase64,
    #[error("certificate key is not rsa; only rsa certificates are supported")]
    NotRsa,
    #[error("certificate rsa key is {0} bits; at least 2048 are required")]
    WeakKey(usize),
}

/// The parts of an X.509 certificate we use.
pub(crate) struct ParsedCertificate {
    rsa_public_key_der: Option<Vec<u8>>,
    not_before: UnixTime,
    not_after: UnixTime,
}

impl ParsedCertificate {
    /// `RSAPublicKey` DER (PKCS#1), if the key is RSA.
    pub(crate) fn rsa_public_key_der(&self) -> Option<&[u8]> {
        self.rsa_public_key_der.as_deref()
    }
}

const RSA_ENCRYPTION: x509_cert::der::oid::ObjectIdentifier =
    x509_cert::der::oid::ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

pub(crate) fn parse_certificate(der: &[u8]) -> Result<ParsedCertificate, CertificateError> {
    let cert =
        x509_cert::Certificate::from_der(der).map_err(|e| CertificateError::Der(e.to_string()))?;
    let tbs = &cert.tbs_certificate;
    let spki = &tbs.subject_public_key_info;
    let rsa_public_key_der = (spki.algorithm.oid == RSA_ENCRYPTION)
        .then(|| spki.subject_public_key.as_bytes().map(<[u8]>::to_vec))
        .flatten();
    let secs = |t: x509_cert::time::Time| {
        i64::try_from(t.to_unix_duration().as_secs()).unwrap_or(i64::MAX)
    };
    Ok(ParsedCertificate {
        rsa_public_key_der,
        not_before: secs(tbs.validity.not_before),
        not_after: secs(tbs.validity.not_after),
    })
}

/// A certificate registered on an application: its public key verifies client assertions.
/// Serializes as `{"der","x5t","x5tS256","notBefore","notAfter"}`; only `der` is read back,
/// the rest is recomputed.
#[derive(Clone, Serialize, Deserialize)]
#[serde(into = "CertificateRecord", try_from = "CertificateRecord")]
pub struct CertificateCredential {
    der: Vec<u8>,
    x5t: String,
    x5t_s256: String,
    not_before: UnixTime,
    not_after: UnixTime,
    key: VerifyingKey,
}

impl std::fmt::Debug for CertificateCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateCredential")
            .field("x5t", &self.x5t)
            .field("not_before", &self.not_before)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl PartialEq for CertificateCredential {
    fn eq(&self, other: &Self) -> bool {
        self.der == other.der
    }
}

impl Eq for CertificateCredential {}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CertificateRecord {
    #[serde(with = "crate::b64::serde_std")]
    der: Vec<u8>,
    #[serde(default)]
    x5t: String,
    #[serde(default, rename = "x5tS256")]
    x5t_s256: String,
    #[serde(default)]
    not_before: UnixTime,
    #[serde(default)]
    not_after: UnixTime,
}

impl From<CertificateCredential> for CertificateRecord {
    fn from(c: CertificateCredential) -> Self {
        Self {
            der: c.der,
            x5t: c.x5t,
            x5t_s256: c.x5t_s256,
            not_before: c.not_before,
            not_after: c.not_after,
        }
    }
}

impl TryFrom<CertificateRecord> for CertificateCredential {
    type Error = CertificateError;
    fn try_from(r: CertificateRecord) -> Result<Self, Self::Error> {
        Self::from_der(&r.der)
    }
}

impl CertificateCredential {
    pub fn from_der(der: &[u8]) -> Result<Self, CertificateError> {
        use rsa::pkcs1::DecodeRsaPublicKey;
        use rsa::traits::PublicKeyParts;
        let parsed = parse_certificate(der)?;
        let pkcs1 = parsed
            .rsa_public_key_der()
            .ok_or(CertificateError::NotRsa)?;
        let public =
            rsa::RsaPublicKey::from_pkcs1_der(pkcs1).map_err(|_| CertificateError::NotRsa)?;
        let bits = public.n().bits();
        if bits < 2048 {
            return Err(CertificateError::WeakKey(bits));
        }
        let key = PublicKey::Rsa(ring::signature::RsaPublicKeyComponents {
            n: public.n().to_bytes_be(),
            e: public.e().to_bytes_be(),
        });
        Ok(Self {
            der: der.to_vec(),
            x5t: crate::b64::url(&crate::sha1(der)),
            x5t_s256: crate::b64::url(&crate::sha256(der)),
            not_before: parsed.not_before,
            not_after: parsed.not_after,
            key: VerifyingKey(key),
        })
    }

    /// The first `CERTIFICATE` block of a PEM document.
    pub fn from_pem(pem: &str) -> Result<Self, CertificateError> {
        const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
        const END: &str = "-----END CERTIFICATE-----";
        let start = pem.find(BEGIN).ok_or(CertificateError::NoPemBlock)? + BEGIN.len();
        let len = pem[start..].find(END).ok_or(CertificateError::NoPemBlock)?;
        let body: String = pem[start..start + len]
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect();
        let der = crate::b64::std_decode(&body).ok_or(CertificateError::PemBase64)?;
        Self::from_der(&der)
    }

    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// base64url(SHA-1(DER)): the `x5t` header of assertions signed with this certificate.
    pub fn x5t(&self) -> &str {
        &self.x5t
    }

    /// base64url(SHA-256(DER)): the `x5t#S256` header.
    pub fn x5t_s256(&self) -> &str {
        &self.x5t_s256
    }

    /// Upper-case hex SHA-1, the "thumbprint" Azure tools show.
    pub fn thumbprint_hex(&self) -> String {
        hex::encode_upper(crate::sha1(&self.der))
    }

    pub fn not_before(&self) -> UnixTime {
        self.not_before
    }

    pub fn not_after(&self) -> UnixTime {
        self.not_after
    }

    fn matches_header(&self, header: &jws::Header) -> bool {
        // MSAL Python encodes thumbprints as base64url *with* padding; Entra accepts both.
        if let Some(s256) = &header.x5t_s256 {
            return s256.trim_end_matches('=') == self.x5t_s256;
        }
        if let Some(x5t) = &header.x5t {
            return x5t.trim_end_matches('=') == self.x5t;
        }
        // Older clients put the hex thumbprint in `kid`.
        header
            .kid
            .as_deref()
            .is_some_and(|kid| kid.eq_ignore_ascii_case(&self.thumbprint_hex()))
    }
}

// ---------------------------------------------------------------------------------------
// Assertions

/// Why a client or federated assertion was refused. Each maps to an AADSTS code in
/// [`crate::entra_error`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssertionError {
    #[error("assertion is malformed: {0}")]
    Malformed(&'static str),
    #[error("assertion algorithm `{0}` is not accepted")]
    UnsupportedAlgorithm(String),
    #[error("no registered key matches the assertion's `{0}`")]
    UnknownKey(String),
    #[error("assertion signature is invalid")]
    BadSignature,
    #[error("assertion expired at {exp}, now is {now}")]
    Expired { exp: UnixTime, now: UnixTime },
    #[error("assertion is not valid before {nbf}, now is {now}")]
    NotYetValid { nbf: UnixTime, now: UnixTime },
    /// Valid for longer than the server accepts: `lifetime` is `exp` - `nbf` (else `iat`),
    /// or how far `exp` lies ahead of now, whichever is longer.
    #[error("assertion is valid for {lifetime} seconds, longer than the {max} accepted")]
    LifetimeTooLong {
        lifetime: i64,
        max: i64,
        not_before: Option<UnixTime>,
        exp: UnixTime,
        now: UnixTime,
    },
    #[error("assertion has no `{0}` claim")]
    MissingClaim(&'static str),
    #[error("assertion audience `{0}` is not this token endpoint")]
    WrongAudience(String),
    #[error("assertion `iss` and `sub` must both be the client id `{expected}`")]
    WrongClient { expected: String },
    #[error("certificate `{x5t}` expired at {not_after}")]
    CertificateExpired { x5t: String, not_after: UnixTime },
    #[error("issuer keys are not a valid jwks")]
    BadJwks,
    #[error("no federated credential matches issuer `{issuer}`, subject `{subject}`, audience `{audience}`")]
    NoMatchingCredential {
        issuer: String,
        subject: String,
        audience: String,
    },
}

/// `aud` may be one string or an array of strings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn values(&self) -> &[String] {
        match self {
            Self::One(a) => std::slice::from_ref(a),
            Self::Many(v) => v,
        }
    }

    fn display(&self) -> String {
        self.values().join(", ")
    }
}

#[derive(Debug, Deserialize)]
struct AssertionClaims {
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    aud: Option<Audience>,
    #[serde(default, deserialize_with = "numeric_date")]
    exp: Option<i64>,
    #[serde(default, deserialize_with = "numeric_date")]
    nbf: Option<i64>,
    #[serde(default, deserialize_with = "numeric_date")]
    iat: Option<i64>,
    #[serde(default)]
    jti: Option<String>,
}

/// NumericDate: an integer, or a JSON number with a fraction (truncated).
fn numeric_date<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let n = Option::<serde_json::Number>::deserialize(d)?;
    Ok(n.and_then(|n| {
        n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && f.abs() < 1e15)
                .map(|f| f.trunc() as i64)
        })
    }))
}

/// `exp` is live and `nbf` reached (with [`ASSERTION_SKEW_SECS`] either way), and the
/// assertion is valid for at most `max_lifetime` seconds: from `nbf` (else `iat`) to `exp`,
/// and from now to `exp` (plus the skew, for a client whose clock runs ahead).
fn check_times(
    claims: &AssertionClaims,
    now: UnixTime,
    max_lifetime: i64,
) -> Result<(), AssertionError> {
    let exp = claims.exp.ok_or(AssertionError::MissingClaim("exp"))?;
    if now > exp.saturating_add(ASSERTION_SKEW_SECS) {
        return Err(AssertionError::Expired { exp, now });
    }
    if let Some(nbf) = claims.nbf {
        if now < nbf.saturating_sub(ASSERTION_SKEW_SECS) {
            return Err(AssertionError::NotYetValid { nbf, now });
        }
    }
    let start = claims.nbf.or(claims.iat);
    let declared = start.map_or(0, |s| exp.saturating_sub(s));
    let ahead = exp.saturating_sub(now);
    if declared > max_lifetime || ahead > max_lifetime.saturating_add(ASSERTION_SKEW_SECS) {
        return Err(AssertionError::LifetimeTooLong {
            lifetime: declared.max(ahead),
            max: max_lifetime,
            not_before: start,
            exp,
            now,
        });
    }
    Ok(())
}

fn parse_assertion(jwt: &str) -> Result<(jws::Jws<'_>, Alg, AssertionClaims), AssertionError> {
    let jws = jws::parse(jwt).map_err(|m| AssertionError::Malformed(m.0))?;
    let alg = Alg::parse(&jws.header.alg)
        .ok_or_else(|| AssertionError::UnsupportedAlgorithm(short(&jws.header.alg)))?;
    let claims: AssertionClaims = serde_json::from_slice(&jws.payload)
        .map_err(|_| AssertionError::Malformed("claims are not a json object"))?;
    Ok((jws, alg, claims))
}

/// A certificate assertion that passed: which certificate signed it, and its `jti` and
/// `exp` so the server can refuse a replay until the assertion expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedClientAssertion<'c> {
    pub certificate: &'c CertificateCredential,
    pub jti: String,
    pub exp: UnixTime,
}

/// Verifies a certificate-signed client assertion.
///
/// Accepts RS256 and PS256 (MSAL Node signs PS256 with `x5t#S256`), the certificate named by
/// `x5t#S256`, `x5t` or a hex-thumbprint `kid`; requires `aud` ∈ `token_endpoints` (pass
/// every form the server answers to: v1 and v2 endpoint URLs, tenant id and domain forms),
/// `iss` = `sub` = `client_id`, a live `exp`/`nbf` (5 minutes skew), a lifetime of at most
/// `max_lifetime` seconds, and a `jti`.
pub fn verify_client_assertion<'c>(
    jwt: &str,
    client_id: &str,
    token_endpoints: &[String],
    certificates: &'c [CertificateCredential],
    clock: &dyn Clock,
    max_lifetime: i64,
) -> Result<VerifiedClientAssertion<'c>, AssertionError> {
    let now = clock.unix();
    let (jws, alg, claims) = parse_assertion(jwt)?;
    if !matches!(alg, Alg::Rs256 | Alg::Ps256) {
        return Err(AssertionError::UnsupportedAlgorithm(jws.header.alg.clone()));
    }
    let certificate = certificates
        .iter()
        .find(|c| c.matches_header(&jws.header))
        .ok_or_else(|| {
            AssertionError::UnknownKey(short(
                jws.header
                    .x5t_s256
                    .as_deref()
                    .or(jws.header.x5t.as_deref())
                    .or(jws.header.kid.as_deref())
                    .unwrap_or("x5t"),
            ))
        })?;
    if !certificate
        .key
        .0
        .verify(alg, jws.signing_input.as_bytes(), &jws.signature)
    {
        return Err(AssertionError::BadSignature);
    }
    if now > certificate.not_after {
        return Err(AssertionError::CertificateExpired {
            x5t: certificate.x5t.clone(),
            not_after: certificate.not_after,
        });
    }
    check_times(&claims, now, max_lifetime)?;
    let aud = claims
        .aud
        .as_ref()
        .ok_or(AssertionError::MissingClaim("aud"))?;
    if !aud
        .values()
        .iter()
        .any(|a| token_endpoints.iter().any(|e| endpoint_eq(a, e)))
    {
        return Err(AssertionError::WrongAudience(short(&aud.display())));
    }
    if claims.iss.as_deref() != Some(client_id) || claims.sub.as_deref() != Some(client_id) {
        return Err(AssertionError::WrongClient {
            expected: client_id.to_string(),
        });
    }
    let jti = claims
        .jti
        .filter(|j| !j.is_empty())
        .ok_or(AssertionError::MissingClaim("jti"))?;
    let exp = claims.exp.unwrap_or(now);
    Ok(VerifiedClientAssertion {
        certificate,
        jti,
        exp,
    })
}

/// Token endpoint URLs compare case-insensitively in scheme and host, and ignore a trailing
/// slash.
fn endpoint_eq(a: &str, b: &str) -> bool {
    let a = a.trim_end_matches('/');
    let b = b.trim_end_matches('/');
    let split = |s: &str| -> (String, String) {
        let after_scheme = s.find("://").map_or(0, |i| i + 3);
        let host_end = s[after_scheme..]
            .find('/')
            .map_or(s.len(), |i| after_scheme + i);
        (
            s[..host_end].to_ascii_lowercase(),
            s[host_end..].to_string(),
        )
    };
    split(a) == split(b)
}

/// A federated identity credential of a user-assigned identity or an application.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FederatedCredential {
    pub name: String,
    pub issuer: String,
    pub subject: String,
    pub audiences: Vec<String>,
}

/// The `iss` of a JWT, read without verifying anything, so the server knows which issuer's
/// discovery document and JWKS to fetch. Never trust it for anything else.
pub fn peek_unverified_issuer(jwt: &str) -> Result<String, AssertionError> {
    let (_, _, claims) = parse_assertion(jwt)?;
    claims
        .iss
        .filter(|i| !i.is_empty())
        .ok_or(AssertionError::MissingClaim("iss"))
}

/// Verifies an external issuer's JWT against its JWKS (`jwks_json`) and finds the federated
/// credential it satisfies: `iss` = issuer and `sub` = subject exactly, `aud` (string or
/// array) ∩ audiences non-empty, a live `exp`/`nbf` and a lifetime of at most
/// `max_lifetime` seconds. Signature algorithms: RS256/384/512, PS256/384/512, ES256, ES384.
pub fn verify_federated_assertion<'c>(
    jwt: &str,
    jwks_json: &str,
    candidates: &'c [FederatedCredential],
    clock: &dyn Clock,
    max_lifetime: i64,
) -> Result<&'c FederatedCredential, AssertionError> {
    let set = JwkSet::parse(jwks_json).map_err(|_| AssertionError::BadJwks)?;
    verify_federated_assertion_with_keys(
        jwt,
        &KeySet::from_jwks(&set),
        candidates,
        clock,
        max_lifetime,
    )
}

/// [`verify_federated_assertion`] with a JWKS the server already parsed (and caches).
pub fn verify_federated_assertion_with_keys<'c>(
    jwt: &str,
    keys: &KeySet,
    candidates: &'c [FederatedCredential],
    clock: &dyn Clock,
    max_lifetime: i64,
) -> Result<&'c FederatedCredential, AssertionError> {
    let now = clock.unix();
    let (jws, alg, claims) = parse_assertion(jwt)?;
    let key = match jws.header.kid.as_deref() {
        Some(kid) => keys.get(kid),
        None => keys.sole_key(),
    }
    .ok_or_else(|| AssertionError::UnknownKey(short(jws.header.kid.as_deref().unwrap_or("kid"))))?;
    if !key.0.fits(alg) {
        return Err(AssertionError::UnsupportedAlgorithm(jws.header.alg.clone()));
    }
    if !key
        .0
        .verify(alg, jws.signing_input.as_bytes(), &jws.signature)
    {
        return Err(AssertionError::BadSignature);
    }
    check_times(&claims, now, max_lifetime)?;
    let issuer = claims.iss.ok_or(AssertionError::MissingClaim("iss"))?;
    let subject = claims.sub.ok_or(AssertionError::MissingClaim("sub"))?;
    let aud = claims.aud.ok_or(AssertionError::MissingClaim("aud"))?;
    candidates
        .iter()
        .find(|c| {
            c.issuer == issuer
                && c.subject == subject
                && aud.values().iter().any(|a| c.audiences.contains(a))
        })
        .ok_or_else(|| AssertionError::NoMatchingCredential {
            issuer: short(&issuer),
            subject: short(&subject),
            audience: short(&aud.display()),
        })
}

fn short(s: &str) -> String {
    const MAX: usize = 256;
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
    fn secrets_are_long_url_safe_and_hashed() {
        let (secret, hash) = generate_client_secret();
        let value = secret.expose();
        assert_eq!(value.len(), 40);
        assert!(value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(hash.hint, &value[..3]);
        assert!(hash.verify(value));
        assert!(!hash.verify(&value[..39]));
        assert!(!hash.verify(""));
        assert!(!format!("{secret:?} {hash:?}").contains(&value[3..]));
        // Same secret, different salt, different hash.
        let again = SecretHash::new(value);
        assert_ne!(again.hash, hash.hash);
        assert!(again.verify(value));
    }

    #[test]
    fn secret_hash_round_trips_through_json() {
        let (secret, hash) = generate_client_secret();
        let json = serde_json::to_string(&hash).unwrap();
        assert!(!json.contains(secret.expose()));
        let back: SecretHash = serde_json::from_str(&json).unwrap();
        assert!(back.verify(secret.expose()));
        let mut unknown = back.clone();
        unknown.algorithm = "md5".into();
        assert!(!unknown.verify(secret.expose()));
    }

    #[test]
    fn endpoints_compare_loosely_in_host_and_slash() {
        assert!(endpoint_eq(
            "https://Login.Example/t/oauth2/v2.0/token/",
            "https://login.example/t/oauth2/v2.0/token"
        ));
        assert!(!endpoint_eq(
            "https://login.example/T/oauth2/v2.0/token",
            "https://login.example/t/oauth2/v2.0/token"
        ));
        assert!(!endpoint_eq(
            "https://evil.example/t/oauth2/v2.0/token",
            "https://login.example/t/oauth2/v2.0/token"
        ));
    }

    #[test]
    fn numeric_dates_accept_fractions() {
        let c: AssertionClaims = serde_json::from_str(r#"{"exp":1700000000.9,"nbf":5}"#).unwrap();
        assert_eq!((c.exp, c.nbf), (Some(1_700_000_000), Some(5)));
        assert!(serde_json::from_str::<AssertionClaims>(r#"{"exp":"soon"}"#).is_err());
    }

    #[test]
    fn pem_without_block_is_refused() {
        assert_eq!(
            CertificateCredential::from_pem("hello").unwrap_err(),
            CertificateError::NoPemBlock
        );
        assert!(CertificateCredential::from_der(b"\x30\x03\x02\x01\x01").is_err());
    }
}
