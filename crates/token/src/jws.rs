//! Compact JWS parsing and signature verification, shared by every verifier in this crate.
//!
//! Strict on purpose: exactly three segments, base64url without padding (RFC 7515 §2; a `=`
//! is refused, not tolerated), a JSON object header with an `alg`, no `crit` (we implement
//! no extensions, so RFC 7515 §4.1.11 says refuse), and a size cap so a hostile token cannot
//! make us decode megabytes.

use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde::Deserialize;

/// Larger than any token we or an external issuer mint (ours are ~1.5 KB).
pub(crate) const MAX_TOKEN_LEN: usize = 16 * 1024;

/// A signature algorithm this crate can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Alg {
    Rs256,
    Rs384,
    Rs512,
    Ps256,
    Ps384,
    Ps512,
    Es256,
    Es384,
}

impl Alg {
    pub(crate) fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "RS256" => Self::Rs256,
            "RS384" => Self::Rs384,
            "RS512" => Self::Rs512,
            "PS256" => Self::Ps256,
            "PS384" => Self::Ps384,
            "PS512" => Self::Ps512,
            "ES256" => Self::Es256,
            "ES384" => Self::Es384,
            _ => return None,
        })
    }

    fn rsa_params(self) -> Option<&'static signature::RsaParameters> {
        Some(match self {
            Self::Rs256 => &signature::RSA_PKCS1_2048_8192_SHA256,
            Self::Rs384 => &signature::RSA_PKCS1_2048_8192_SHA384,
            Self::Rs512 => &signature::RSA_PKCS1_2048_8192_SHA512,
            Self::Ps256 => &signature::RSA_PSS_2048_8192_SHA256,
            Self::Ps384 => &signature::RSA_PSS_2048_8192_SHA384,
            Self::Ps512 => &signature::RSA_PSS_2048_8192_SHA512,
            Self::Es256 | Self::Es384 => return None,
        })
    }
}

/// The JOSE header members we read. Unknown members are ignored; duplicates are refused by
/// serde.
#[derive(Debug, Deserialize)]
pub(crate) struct Header {
    pub alg: String,
    #[serde(default)]
    pub kid: Option<String>,
    #[serde(default)]
    pub x5t: Option<String>,
    #[serde(default, rename = "x5t#S256")]
    pub x5t_s256: Option<String>,
    #[serde(default)]
    pub crit: Option<serde_json::Value>,
}

/// A parsed, not yet verified, compact JWS.
pub(crate) struct Jws<'a> {
    /// `header.payload` as sent: the bytes the signature covers.
    pub signing_input: &'a str,
    pub header: Header,
    pub payload: Vec<u8>,
    pub signature: Vec<u8>,
}

/// Why a string is not a compact JWS. Reasons are fixed strings, never token content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed(pub &'static str);

pub(crate) fn parse(token: &str) -> Result<Jws<'_>, Malformed> {
    if token.is_empty() {
        return Err(Malformed("empty token"));
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(Malformed("token too large"));
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Malformed("a compact JWS has exactly three segments"));
    };
    if h.is_empty() || p.is_empty() || s.is_empty() {
        return Err(Malformed("empty JWS segment"));
    }
    let header_bytes = crate::b64::url_decode(h).ok_or(Malformed("header is not base64url"))?;
    let header: Header = serde_json::from_slice(&header_bytes)
        .map_err(|_| Malformed("header is not a JSON object with `alg`"))?;
    if header.crit.is_some() {
        return Err(Malformed("unsupported critical header parameters"));
    }
    let payload = crate::b64::url_decode(p).ok_or(Malformed("payload is not base64url"))?;
    let signature = crate::b64::url_decode(s).ok_or(Malformed("signature is not base64url"))?;
    Ok(Jws {
        signing_input: &token[..h.len() + 1 + p.len()],
        header,
        payload,
        signature,
    })
}

/// A public key that can check signatures.
#[derive(Clone)]
pub(crate) enum PublicKey {
    Rsa(RsaPublicKeyComponents<Vec<u8>>),
    /// Uncompressed SEC1 point `04 ‖ x ‖ y` on P-256.
    P256(Vec<u8>),
    /// Uncompressed SEC1 point on P-384.
    P384(Vec<u8>),
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Rsa(k) => write!(f, "Rsa({} bits)", k.n.len() * 8),
            Self::P256(_) => f.write_str("P256"),
            Self::P384(_) => f.write_str("P384"),
        }
    }
}

impl PublicKey {
    /// Whether `alg` can be verified with this key at all.
    pub(crate) fn fits(&self, alg: Alg) -> bool {
        matches!(
            (self, alg),
            (
                Self::Rsa(_),
                Alg::Rs256 | Alg::Rs384 | Alg::Rs512 | Alg::Ps256 | Alg::Ps384 | Alg::Ps512
            ) | (Self::P256(_), Alg::Es256)
                | (Self::P384(_), Alg::Es384)
        )
    }

    pub(crate) fn verify(&self, alg: Alg, message: &[u8], sig: &[u8]) -> bool {
        match self {
            Self::Rsa(k) => match alg.rsa_params() {
                Some(params) => k.verify(params, message, sig).is_ok(),
                None => false,
            },
            Self::P256(point) if alg == Alg::Es256 => {
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(message, sig)
                    .is_ok()
            }
            Self::P384(point) if alg == Alg::Es384 => {
                UnparsedPublicKey::new(&signature::ECDSA_P384_SHA384_FIXED, point)
                    .verify(message, sig)
                    .is_ok()
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn seg(json: &str) -> String {
        crate::b64::url(json.as_bytes())
    }

    #[test]
    fn parses_three_segments() {
        let t = format!(
            "{}.{}.{}",
            seg(r#"{"alg":"RS256","kid":"k"}"#),
            seg("{}"),
            "AAAA"
        );
        let jws = parse(&t).unwrap();
        assert_eq!(jws.header.alg, "RS256");
        assert_eq!(jws.header.kid.as_deref(), Some("k"));
        assert_eq!(jws.signature, vec![0, 0, 0]);
        assert!(t.starts_with(jws.signing_input));
        assert_eq!(jws.signing_input.matches('.').count(), 1);
    }

    #[test]
    fn refuses_shapes_padding_and_crit() {
        let h = seg(r#"{"alg":"RS256"}"#);
        for bad in [
            String::new(),
            format!("{h}.{}", seg("{}")),
            format!("{h}.{}.AAAA.AAAA", seg("{}")),
            format!("{h}..AAAA"),
            format!("{h}.{}.", seg("{}")),
            // Padding is not base64url as JWS defines it.
            format!("{h}.{}.AA==", seg("{}")),
            format!("{h}.{}.AA AA", seg("{}")),
            format!("{}.{}.AAAA", seg("[1]"), seg("{}")),
            format!("{}.{}.AAAA", seg(r#"{"typ":"JWT"}"#), seg("{}")),
            format!(
                "{}.{}.AAAA",
                seg(r#"{"alg":"RS256","alg":"none"}"#),
                seg("{}")
            ),
            format!(
                "{}.{}.AAAA",
                seg(r#"{"alg":"RS256","crit":["exp"]}"#),
                seg("{}")
            ),
            "a".repeat(MAX_TOKEN_LEN + 1),
        ] {
            assert!(parse(&bad).is_err(), "accepted {bad:?}");
        }
    }
}
