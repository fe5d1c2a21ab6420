//! Reading a JWT's claims for display. This checks no signature and grants
//! nothing: the services that accept a token verify it; the CLI only shows what it says.

use anyhow::{anyhow, Context};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::Value;

/// The decoded payload (claims) of a compact JWT.
pub fn claims(token: &str) -> anyhow::Result<Value> {
    part(token, 1).context("reading the token's claims")
}

fn part(token: &str, index: usize) -> anyhow::Result<Value> {
    let segment = token
        .split('.')
        .nth(index)
        .ok_or_else(|| anyhow!("not a compact JWT"))?;
    // Some issuers pad; the standard says not to.
    let bytes = URL_SAFE_NO_PAD.decode(segment.trim_end_matches('='))?;
    Ok(serde_json::from_slice(&bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_claims() {
        let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","kid":"k1"}"#);
        let c = URL_SAFE_NO_PAD.encode(br#"{"oid":"o1","aud":"https://vault.azure.net"}"#);
        let token = format!("{h}.{c}.sig");
        assert_eq!(claims(&token).unwrap()["oid"], "o1");
        assert_eq!(part(&token, 0).unwrap()["kid"], "k1");
        assert!(claims("nodots").is_err());
    }
}
