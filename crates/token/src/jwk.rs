//! Public keys as JSON Web Keys (RFC 7517): our JWKS, and external issuers' JWKS for
//! federated credentials.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::jws::PublicKey;

/// One JSON Web Key. Serialized in the member order Entra uses
/// (`kty`, `use`, `kid`, `x5t`, `n`, `e`, `x5c`); absent members are omitted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    pub kty: String,
    #[serde(rename = "use", default, skip_serializing_if = "Option::is_none")]
    pub key_use: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x5t: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x5c: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
}

/// A JWK Set: `{"keys":[...]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwkSet {
    pub keys: Vec<Jwk>,
}

impl JwkSet {
    /// Parses a JWKS document. Keys this crate cannot use stay in the set and are skipped at
    /// lookup.
    pub fn parse(json: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(json)
    }

    pub fn to_json(&self) -> String {
        // A struct of strings always serializes.
        serde_json::to_string(self).unwrap_or_else(|_| r#"{"keys":[]}"#.to_string())
    }
}

/// A public key ready to verify signatures; opaque on purpose.
#[derive(Clone)]
pub struct VerifyingKey(pub(crate) PublicKey);

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VerifyingKey({:?})", self.0)
    }
}

impl Jwk {
    /// The key's public material, if it is a signing key of a type we verify
    /// (RSA, EC P-256, EC P-384).
    pub fn verifying_key(&self) -> Option<VerifyingKey> {
        if self.key_use.as_deref().is_some_and(|u| u != "sig") {
            return None;
        }
        let field = |v: &Option<String>| v.as_deref().and_then(crate::b64::url_decode);
        let key = match self.kty.as_str() {
            "RSA" => {
                let n = strip_leading_zeros(field(&self.n)?);
                let e = strip_leading_zeros(field(&self.e)?);
                if n.is_empty() || e.is_empty() {
                    return None;
                }
                PublicKey::Rsa(ring::signature::RsaPublicKeyComponents { n, e })
            }
            "EC" => {
                let (x, y) = (field(&self.x)?, field(&self.y)?);
                let (len, p256) = match self.crv.as_deref()? {
                    "P-256" => (32, true),
                    "P-384" => (48, false),
                    _ => return None,
                };
                if x.len() != len || y.len() != len {
                    return None;
                }
                let mut point = Vec::with_capacity(1 + 2 * len);
                point.push(0x04);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                if p256 {
                    PublicKey::P256(point)
                } else {
                    PublicKey::P384(point)
                }
            }
            _ => return None,
        };
        Some(VerifyingKey(key))
    }
}

fn strip_leading_zeros(mut bytes: Vec<u8>) -> Vec<u8> {
    let zeros = bytes.iter().take_while(|b| **b == 0).count();
    bytes.drain(..zeros);
    bytes
}

/// Keys of a JWKS indexed by `kid`, for looking up the key that signed a token.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    by_kid: HashMap<String, VerifyingKey>,
    /// Keys without a `kid`, usable only when a token names none either.
    anonymous: Vec<VerifyingKey>,
}

impl KeySet {
    pub fn from_jwks(set: &JwkSet) -> Self {
        let mut out = Self::default();
        for jwk in &set.keys {
            let Some(key) = jwk.verifying_key() else {
                continue;
            };
            match &jwk.kid {
                Some(kid) => {
                    out.by_kid.insert(kid.clone(), key);
                }
                None => out.anonymous.push(key),
            }
        }
        out
    }

    pub fn get(&self, kid: &str) -> Option<&VerifyingKey> {
        self.by_kid.get(kid)
    }

    /// The key a token without `kid` must have used: only if exactly one usable key exists.
    pub(crate) fn sole_key(&self) -> Option<&VerifyingKey> {
        match (self.by_kid.len(), self.anonymous.len()) {
            (1, 0) => self.by_kid.values().next(),
            (0, 1) => self.anonymous.first(),
            _ => None,
        }
    }

    pub fn len(&self) -> usize {
        self.by_kid.len() + self.anonymous.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn parses_rsa_and_ec_keys_and_skips_others() {
        let x = crate::b64::url(&[1u8; 32]);
        let json = format!(
            r#"{{"keys":[
                {{"kty":"RSA","use":"sig","kid":"r","n":"AQAB","e":"AQAB"}},
                {{"kty":"EC","crv":"P-256","kid":"p","x":"{x}","y":"{x}"}},
                {{"kty":"EC","crv":"P-521","kid":"q","x":"{x}","y":"{x}"}},
                {{"kty":"RSA","use":"enc","kid":"enc","n":"AQAB","e":"AQAB"}},
                {{"kty":"oct","kid":"h","k":"AAAA"}}
            ]}}"#
        );
        let set = KeySet::from_jwks(&JwkSet::parse(&json).unwrap());
        assert!(set.get("r").is_some());
        assert!(set.get("p").is_some());
        assert!(set.get("q").is_none());
        assert!(set.get("enc").is_none());
        assert!(set.get("h").is_none());
        assert_eq!(set.len(), 2);
        assert!(set.sole_key().is_none());
    }

    #[test]
    fn serializes_in_entra_member_order() {
        let jwk = Jwk {
            kty: "RSA".into(),
            key_use: Some("sig".into()),
            kid: Some("k".into()),
            x5t: Some("k".into()),
            n: Some("n".into()),
            e: Some("AQAB".into()),
            x5c: Some(vec!["c".into()]),
            alg: None,
            crv: None,
            x: None,
            y: None,
        };
        assert_eq!(
            serde_json::to_string(&jwk).unwrap(),
            r#"{"kty":"RSA","use":"sig","kid":"k","x5t":"k","n":"n","e":"AQAB","x5c":["c"]}"#
        );
    }
}
