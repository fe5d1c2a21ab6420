//! The token crate end to end: minting and validating, rotation over simulated weeks,
//! persistence under the KEK, and every credential check.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use lanyard_domain::{
    Clock, ManualClock, Principal, PrincipalKind, ResourceId, ServicePrincipalSource,
};
use lanyard_token::claims::{ClientAuthMethod, TokenPolicy, TokenRequest, TokenVersion};
use lanyard_token::credentials::{
    generate_client_secret, peek_unverified_issuer, verify_client_assertion,
    verify_federated_assertion, AssertionError, CertificateCredential, FederatedCredential,
    SecretHash, DEFAULT_CLIENT_ASSERTION_MAX_LIFETIME_SECS as CERT_MAX,
    DEFAULT_FEDERATED_ASSERTION_MAX_LIFETIME_SECS as FED_MAX,
};
use lanyard_token::keys::{KeyChange, KeyRing, KeyState, RotationPolicy, SigningKey, StoredKey};
use lanyard_token::validate::{azure_audiences, ValidationConfig, ValidationError, Validator};
use lanyard_token::{mint, IssuerConfig, Kek, KekError, NoRevocation, Revocation};
use serde_json::{json, Value};
use uuid::Uuid;

/// Shared test kit: fixed keys, principals, a validator, and hand-made JWTs.
mod kit {
    use super::*;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    use base64::Engine;

    pub const T0: i64 = 1_700_000_000;
    pub const HOUR: i64 = 3600;
    pub const DAY: i64 = 24 * HOUR;

    const FIXTURES: [&str; 6] = [
        include_str!("fixtures/test-rsa-1.pem"),
        include_str!("fixtures/test-rsa-2.pem"),
        include_str!("fixtures/test-rsa-3.pem"),
        include_str!("fixtures/test-rsa-4.pem"),
        include_str!("fixtures/test-rsa-5.pem"),
        include_str!("fixtures/test-rsa-6.pem"),
    ];

    /// PKCS#8 DER of fixture key `i` (0-based).
    pub fn pkcs8(i: usize) -> Vec<u8> {
        let body: String = FIXTURES[i]
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        STANDARD.decode(body).unwrap()
    }

    /// A key source for `KeyRing::tick_with` that hands out fixture keys from `first` on,
    /// because generating RSA keys in a debug build takes seconds each.
    pub fn keys_from(
        first: usize,
    ) -> impl FnMut(i64) -> Result<SigningKey, lanyard_token::KeyError> {
        let mut i = first;
        move |now| {
            let key = SigningKey::from_pkcs8(&pkcs8(i % FIXTURES.len()), now);
            i += 1;
            key
        }
    }

    pub fn tenant() -> Uuid {
        Uuid::parse_str("11111111-2222-3333-4444-555555555555").unwrap()
    }

    pub fn vm() -> ResourceId {
        ResourceId::parse(
            "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1",
        )
        .unwrap()
    }

    pub fn uai() -> ResourceId {
        ResourceId::parse(
            "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id1",
        )
        .unwrap()
    }

    pub fn principal(source: ServicePrincipalSource) -> Principal {
        Principal {
            object_id: Uuid::new_v4(),
            tenant_id: tenant(),
            display_name: "p".into(),
            kind: PrincipalKind::ServicePrincipal {
                client_id: Uuid::new_v4(),
                source,
            },
        }
    }

    pub fn system_assigned() -> Principal {
        principal(ServicePrincipalSource::SystemAssigned { host: vm() })
    }

    /// A bootstrapped ring at `now` whose keys come from the fixtures, and its KEK.
    pub fn ring_at(now: i64) -> (KeyRing, Kek) {
        let kek = Kek::generate();
        let mut ring = KeyRing::new(RotationPolicy::default());
        ring.tick_with(now, &kek, &mut keys_from(0)).unwrap();
        (ring, kek)
    }

    /// Accepts the tenant's Azure-form issuers for Key Vault (own and public audience).
    pub fn validator() -> Validator {
        let mut audiences = vec!["https://vault.lanyard.localhost:8443"];
        audiences.extend_from_slice(azure_audiences::KEY_VAULT);
        Validator::new(ValidationConfig::new(
            &IssuerConfig::default(),
            [tenant()],
            audiences,
        ))
    }

    /// A v1 Key Vault token for `p` issued at `now`.
    pub fn mint_for(ring: &KeyRing, p: &Principal, now: i64) -> String {
        let req =
            TokenRequest::managed_identity(p, &vm(), "https://vault.azure.net", T0 - 400 * DAY)
                .unwrap();
        mint(ring, &TokenPolicy::default().claims(&req, now))
            .unwrap()
            .access_token
    }

    pub fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    pub fn unb64(text: &str) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(text).unwrap()
    }

    /// A compact JWS with any header and claims, signed by `sign` (or with an empty-ish
    /// signature if it returns nothing).
    pub fn jwt(header: &Value, claims: &Value, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
        let input = format!(
            "{}.{}",
            b64(&serde_json::to_vec(header).unwrap()),
            b64(&serde_json::to_vec(claims).unwrap())
        );
        let sig = sign(input.as_bytes());
        format!("{input}.{}", b64(&sig))
    }

    /// The decoded claims of a compact JWT.
    pub fn claims_of(token: &str) -> Value {
        serde_json::from_slice(&unb64(token.split('.').nth(1).unwrap())).unwrap()
    }

    pub fn header_of(token: &str) -> Value {
        serde_json::from_slice(&unb64(token.split('.').next().unwrap())).unwrap()
    }

    /// Replaces the claims of `token`, keeping its header and signature.
    pub fn with_claims(token: &str, claims: &Value) -> String {
        let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
        parts[1] = b64(&serde_json::to_vec(claims).unwrap());
        parts.join(".")
    }
}

use kit::*;

// ---------------------------------------------------------------------------------------
// Mint and validate

#[test]
fn v1_managed_identity_token_round_trips() {
    let (ring, _) = ring_at(T0);
    let p = system_assigned();
    let token = mint_for(&ring, &p, T0);

    let header = header_of(&token);
    let kid = ring.current().unwrap().kid().to_string();
    assert_eq!(
        header,
        json!({"typ": "JWT", "alg": "RS256", "kid": kid, "x5t": kid})
    );
    let raw_header = String::from_utf8(unb64(token.split('.').next().unwrap())).unwrap();
    assert_eq!(
        raw_header,
        format!(r#"{{"typ":"JWT","alg":"RS256","kid":"{kid}","x5t":"{kid}"}}"#)
    );
    let raw_claims = String::from_utf8(unb64(token.split('.').nth(1).unwrap())).unwrap();
    assert!(raw_claims.starts_with(r#"{"aud":"https://vault.azure.net","iss":"#));

    let v = validator();
    let ok = v.validate(&token, &ring, &NoRevocation, T0 + 60).unwrap();
    assert_eq!(ok.object_id, p.object_id);
    assert_eq!(ok.tenant_id, tenant());
    assert_eq!(ok.kid, kid);
    assert_eq!(ok.claims.ver, "1.0");
    assert_eq!(
        ok.claims.iss,
        format!("https://sts.windows.net/{}/", tenant())
    );
    assert_eq!(ok.claims.appid, p.client_id().map(|c| c.to_string()));
    assert_eq!(ok.claims.xms_mirid.as_deref(), Some(vm().as_str()));
    assert_eq!(ok.claims.exp - ok.claims.iat, 24 * HOUR);
}

#[test]
fn v2_application_token_round_trips() {
    let (ring, _) = ring_at(T0);
    let app = principal(ServicePrincipalSource::Application);
    let req = TokenRequest::application(
        &app,
        ClientAuthMethod::Certificate,
        "https://vault.lanyard.localhost:8443/",
        0,
    )
    .unwrap()
    .with_version(TokenVersion::V2);
    let (minted, claims) = lanyard_token::issue(&ring, &TokenPolicy::default(), &req, T0).unwrap();
    assert_eq!(minted.expires_on, T0 + 24 * HOUR);
    assert_eq!(minted.expires_in, 24 * HOUR);
    assert!(!format!("{minted:?}").contains(&minted.access_token[..40]));

    let ok = validator()
        .validate(&minted.access_token, &ring, &NoRevocation, T0)
        .unwrap();
    assert_eq!(ok.claims, claims);
    assert_eq!(ok.claims.ver, "2.0");
    assert_eq!(
        ok.claims.iss,
        format!("https://login.microsoftonline.com/{}/v2.0", tenant())
    );
    assert_eq!(ok.claims.azp, app.client_id().map(|c| c.to_string()));
    assert_eq!(ok.claims.azpacr.as_deref(), Some("2"));
    assert_eq!(ok.claims.appid, None);
}

#[test]
fn own_issuer_host_is_accepted_only_when_configured() {
    let (ring, _) = ring_at(T0);
    let own = IssuerConfig::on_host("https://login.lanyard.localhost:8443");
    let policy = TokenPolicy {
        issuers: own.clone(),
        ..TokenPolicy::default()
    };
    let p = system_assigned();
    let req = TokenRequest::managed_identity(&p, &vm(), "https://vault.azure.net", 0).unwrap();
    let token = mint(&ring, &policy.claims(&req, T0)).unwrap().access_token;
    assert!(matches!(
        validator().validate(&token, &ring, &NoRevocation, T0),
        Err(ValidationError::WrongIssuer(_))
    ));
    let both = Validator::new(
        ValidationConfig::new(
            &IssuerConfig::default(),
            [tenant()],
            ["https://vault.azure.net"],
        )
        .with_issuers(&own),
    );
    assert!(both.validate(&token, &ring, &NoRevocation, T0).is_ok());
}

#[test]
fn audiences_match_with_or_without_trailing_slash() {
    let (ring, _) = ring_at(T0);
    let p = system_assigned();
    let v = validator();
    for aud in [
        "https://vault.azure.net",
        "https://vault.azure.net/",
        "https://vault.lanyard.localhost:8443",
        "https://vault.lanyard.localhost:8443/",
    ] {
        let req = TokenRequest::managed_identity(&p, &vm(), aud, 0).unwrap();
        let token = mint(&ring, &TokenPolicy::default().claims(&req, T0)).unwrap();
        let ok = v
            .validate(&token.access_token, &ring, &NoRevocation, T0)
            .unwrap();
        assert_eq!(ok.claims.aud, aud);
    }
}

// ---------------------------------------------------------------------------------------
// Every refusal

fn assert_refused(token: &str, ring: &KeyRing, now: i64, want: impl Fn(&ValidationError) -> bool) {
    // Through the cache path and the uncached path alike.
    let v = validator();
    let err = v.validate(token, ring, &NoRevocation, now).unwrap_err();
    assert!(want(&err), "unexpected error {err:?}");
    let err = v
        .validate_uncached(token, ring, &NoRevocation, now)
        .unwrap_err();
    assert!(want(&err), "unexpected error {err:?}");
    assert_eq!(v.cache_len(), 0, "a refused token was cached");
}

#[test]
fn alg_none_is_refused() {
    let (ring, _) = ring_at(T0);
    let good = mint_for(&ring, &system_assigned(), T0);
    let kid = ring.current().unwrap().kid().to_string();
    let claims = claims_of(&good);
    let none = jwt(
        &json!({"alg": "none", "typ": "JWT", "kid": kid}),
        &claims,
        |_| vec![],
    );
    // `header.payload.` with an empty signature is malformed before `alg` is even read.
    assert_refused(&none, &ring, T0, |e| {
        matches!(e, ValidationError::Malformed(_))
    });
    let none_with_sig = jwt(&json!({"alg": "none", "kid": kid}), &claims, |_| vec![0]);
    assert_refused(
        &none_with_sig,
        &ring,
        T0,
        |e| matches!(e, ValidationError::UnsupportedAlgorithm(a) if a == "none"),
    );
    let none_upper = jwt(&json!({"alg": "None", "kid": kid}), &claims, |_| vec![0]);
    assert_refused(&none_upper, &ring, T0, |e| {
        matches!(e, ValidationError::UnsupportedAlgorithm(_))
    });
}

#[test]
fn hs256_keyed_with_our_public_key_is_refused() {
    use ring::hmac;
    let (ring, _) = ring_at(T0);
    let good = mint_for(&ring, &system_assigned(), T0);
    let current = ring.current().unwrap();
    let kid = current.kid().to_string();
    let claims = claims_of(&good);
    // The classic confusion attack: HMAC keyed with public material an attacker can read.
    let public_forms: Vec<Vec<u8>> = vec![
        current.certificate_der().to_vec(),
        serde_json::to_vec(&ring.jwks()).unwrap(),
        unb64(current.jwk().n.as_deref().unwrap()),
    ];
    for public in public_forms {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &public);
        let forged = jwt(
            &json!({"typ": "JWT", "alg": "HS256", "kid": kid}),
            &claims,
            |m| hmac::sign(&key, m).as_ref().to_vec(),
        );
        assert_refused(
            &forged,
            &ring,
            T0,
            |e| matches!(e, ValidationError::UnsupportedAlgorithm(a) if a == "HS256"),
        );
    }
}

#[test]
fn other_algorithms_are_refused_even_with_a_valid_rsa_key() {
    let (ring, _) = ring_at(T0);
    let good = mint_for(&ring, &system_assigned(), T0);
    let kid = ring.current().unwrap().kid().to_string();
    let pair = ring::signature::RsaKeyPair::from_pkcs8(&pkcs8(0)).unwrap();
    let rng = ring::rand::SystemRandom::new();
    let ps256 = jwt(
        &json!({"alg": "PS256", "kid": kid}),
        &claims_of(&good),
        |m| {
            let mut sig = vec![0; pair.public().modulus_len()];
            pair.sign(&ring::signature::RSA_PSS_SHA256, &rng, m, &mut sig)
                .unwrap();
            sig
        },
    );
    assert_refused(
        &ps256,
        &ring,
        T0,
        |e| matches!(e, ValidationError::UnsupportedAlgorithm(a) if a == "PS256"),
    );
}

#[test]
fn a_kid_never_issued_is_refused() {
    let (ring, _) = ring_at(T0);
    let good = mint_for(&ring, &system_assigned(), T0);
    // Signed by a real RSA key we never published, claiming its own kid.
    let stranger = SigningKey::from_pkcs8(&pkcs8(5), T0).unwrap();
    let forged = lanyard_token::mint::sign_jwt(&stranger, &claims_of(&good)).unwrap();
    assert_refused(
        &forged,
        &ring,
        T0,
        |e| matches!(e, ValidationError::UnknownKey(k) if k == stranger.kid()),
    );
    // No kid at all.
    let no_kid = jwt(&json!({"alg": "RS256"}), &claims_of(&good), |m| {
        stranger.sign(m).unwrap()
    });
    assert_refused(&no_kid, &ring, T0, |e| {
        matches!(e, ValidationError::Malformed(_))
    });
}

#[test]
fn forged_signatures_are_refused() {
    let (ring, _) = ring_at(T0);
    let good = mint_for(&ring, &system_assigned(), T0);
    let kid = ring.current().unwrap().kid().to_string();

    // Claims changed under the original signature.
    let mut claims = claims_of(&good);
    claims["oid"] = json!(Uuid::new_v4().to_string());
    assert_refused(&with_claims(&good, &claims), &ring, T0, |e| {
        matches!(e, ValidationError::BadSignature)
    });

    // Our kid, another key's signature.
    let stranger = SigningKey::from_pkcs8(&pkcs8(5), T0).unwrap();
    let forged = jwt(
        &json!({"typ": "JWT", "alg": "RS256", "kid": kid, "x5t": kid}),
        &claims_of(&good),
        |m| stranger.sign(m).unwrap(),
    );
    assert_refused(&forged, &ring, T0, |e| {
        matches!(e, ValidationError::BadSignature)
    });

    // One flipped bit in the signature.
    let mut parts: Vec<String> = good.split('.').map(str::to_string).collect();
    let mut sig = unb64(&parts[2]);
    sig[100] ^= 0x01;
    parts[2] = b64(&sig);
    assert_refused(&parts.join("."), &ring, T0, |e| {
        matches!(e, ValidationError::BadSignature)
    });

    // Truncated signature.
    parts[2] = b64(&sig[..128]);
    assert_refused(&parts.join("."), &ring, T0, |e| {
        matches!(e, ValidationError::BadSignature)
    });
}

#[test]
fn expiry_and_not_before_follow_the_clock_with_five_minutes_skew() {
    let (ring, _) = ring_at(T0);
    let clock = ManualClock::at_unix(T0);
    let token = mint_for(&ring, &system_assigned(), clock.unix());
    let v = validator();
    let exp = T0 + 24 * HOUR;

    // Not yet valid: nbf = T0, so more than 5 minutes before it is refused.
    let early = T0 - 301;
    assert!(matches!(
        v.validate(&token, &ring, &NoRevocation, early),
        Err(ValidationError::NotYetValid { nbf }) if nbf == T0
    ));
    assert!(v.validate(&token, &ring, &NoRevocation, T0 - 300).is_ok());

    clock.advance(Duration::from_secs(24 * 3600 + 300));
    assert_eq!(clock.unix(), exp + 300);
    assert!(v
        .validate(&token, &ring, &NoRevocation, clock.unix())
        .is_ok());
    clock.advance(Duration::from_secs(1));
    // Cached by now: the hit must still see the expiry.
    assert!(v.cache_len() > 0);
    assert!(matches!(
        v.validate(&token, &ring, &NoRevocation, clock.unix()),
        Err(ValidationError::Expired { exp: e }) if e == exp
    ));
    assert!(matches!(
        v.validate_uncached(&token, &ring, &NoRevocation, clock.unix()),
        Err(ValidationError::Expired { .. })
    ));

    let strict = Validator::new(
        ValidationConfig::new(
            &IssuerConfig::default(),
            [tenant()],
            ["https://vault.azure.net"],
        )
        .with_skew_secs(0),
    );
    assert!(strict.validate(&token, &ring, &NoRevocation, exp).is_ok());
    assert!(strict
        .validate(&token, &ring, &NoRevocation, exp + 1)
        .is_err());
}

#[test]
fn other_audience_is_refused() {
    let (ring, _) = ring_at(T0);
    let p = system_assigned();
    for aud in [
        "https://storage.azure.com",
        "https://vault.azure.net.evil",
        "https://VAULT.azure.net",
    ] {
        let req = TokenRequest::managed_identity(&p, &vm(), aud, 0).unwrap();
        let token = mint(&ring, &TokenPolicy::default().claims(&req, T0)).unwrap();
        assert_refused(&token.access_token, &ring, T0, |e| {
            matches!(e, ValidationError::WrongAudience(_))
        });
    }
}

#[test]
fn other_tenant_and_mismatched_issuer_are_refused() {
    let (ring, _) = ring_at(T0);
    let mut p = system_assigned();
    p.tenant_id = Uuid::new_v4();
    let other = mint_for(&ring, &p, T0);
    assert_refused(&other, &ring, T0, |e| {
        matches!(e, ValidationError::WrongTenant(_))
    });

    // Right tenant, issuer of another tenant: re-signed so only the issuer is wrong.
    let good = mint_for(&ring, &system_assigned(), T0);
    let mut claims = claims_of(&good);
    claims["iss"] = json!(format!("https://sts.windows.net/{}/", Uuid::new_v4()));
    let resigned = lanyard_token::mint::sign_jwt(ring.current().unwrap(), &claims).unwrap();
    assert_refused(&resigned, &ring, T0, |e| {
        matches!(e, ValidationError::WrongIssuer(_))
    });
    claims["iss"] = json!("https://evil.example/");
    let resigned = lanyard_token::mint::sign_jwt(ring.current().unwrap(), &claims).unwrap();
    assert_refused(&resigned, &ring, T0, |e| {
        matches!(e, ValidationError::WrongIssuer(_))
    });
}

#[test]
fn revoked_principals_are_refused_at_once_even_from_cache() {
    let (ring, _) = ring_at(T0);
    let p = system_assigned();
    let other = system_assigned();
    let token = mint_for(&ring, &p, T0);
    let other_token = mint_for(&ring, &other, T0);
    let v = validator();
    assert!(v.validate(&token, &ring, &NoRevocation, T0 + 10).is_ok());
    assert_eq!(v.cache_len(), 1);

    // Identity detached at T0 + 100: tokens issued before are refused, later ones pass.
    let oid = p.object_id;
    let detached = move |o: Uuid| (o == oid).then_some(T0 + 100);
    assert_eq!(
        v.validate(&token, &ring, &detached, T0 + 101).unwrap_err(),
        ValidationError::Revoked
    );
    assert!(v.validate(&other_token, &ring, &detached, T0 + 101).is_ok());
    let fresh = mint_for(&ring, &p, T0 + 100);
    assert!(v.validate(&fresh, &ring, &detached, T0 + 101).is_ok());

    // Deleted principal: nothing it ever held is valid.
    let deleted = move |o: Uuid| (o == oid).then_some(i64::MAX);
    assert_eq!(
        v.validate(&fresh, &ring, &deleted, T0 + 101).unwrap_err(),
        ValidationError::Revoked
    );
}

#[test]
fn revocation_per_host_spares_the_identity_elsewhere() {
    struct DetachedFrom(Uuid, String, i64);
    impl Revocation for DetachedFrom {
        fn valid_after(&self, _oid: Uuid) -> Option<i64> {
            None
        }
        fn valid_after_for_host(&self, oid: Uuid, host: &str) -> Option<i64> {
            (oid == self.0 && host.eq_ignore_ascii_case(&self.1)).then_some(self.2)
        }
    }
    let (ring, _) = ring_at(T0);
    let p = principal(ServicePrincipalSource::UserAssigned { identity: uai() });
    let vm2 = ResourceId::parse(
        "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm2",
    )
    .unwrap();
    let token_for = |host: &ResourceId| {
        let req = TokenRequest::managed_identity(&p, host, "https://vault.azure.net", 0).unwrap();
        mint(&ring, &TokenPolicy::default().claims(&req, T0))
            .unwrap()
            .access_token
    };
    let rev = DetachedFrom(p.object_id, vm().as_str().to_string(), T0 + 1);
    let v = validator();
    assert_eq!(
        v.validate(&token_for(&vm()), &ring, &rev, T0).unwrap_err(),
        ValidationError::Revoked
    );
    assert!(v.validate(&token_for(&vm2), &ring, &rev, T0).is_ok());
}

#[test]
fn cache_is_bounded_and_hits_match_the_full_check() {
    let (ring, _) = ring_at(T0);
    let v = Validator::with_cache_capacity(
        ValidationConfig::new(
            &IssuerConfig::default(),
            [tenant()],
            ["https://vault.azure.net"],
        ),
        16,
    );
    let p = system_assigned();
    // 16 + 3k inserts leave the cache exactly full (each eviction frees three slots),
    // so the first insert below triggers the sweep of expired entries.
    let tokens: Vec<String> = (0..40).map(|i| mint_for(&ring, &p, T0 + i)).collect();
    for t in &tokens {
        let a = v.validate(t, &ring, &NoRevocation, T0 + 50).unwrap();
        let b = v.validate(t, &ring, &NoRevocation, T0 + 50).unwrap();
        assert_eq!(a, b);
        assert!(v.cache_len() <= 16);
    }
    assert!(v.cache_len() > 0);
    // Expired entries are swept first when the cache is full.
    let late: Vec<String> = (0..4)
        .map(|i| mint_for(&ring, &p, T0 + 3 * DAY + i))
        .collect();
    for t in &late {
        v.validate(t, &ring, &NoRevocation, T0 + 3 * DAY + 10)
            .unwrap();
    }
    assert_eq!(v.cache_len(), 4);
    v.clear_cache();
    assert_eq!(v.cache_len(), 0);
}

#[test]
fn a_cached_token_fails_once_its_key_is_no_longer_published() {
    let (ring, kek) = ring_at(T0);
    let token = mint_for(&ring, &system_assigned(), T0);
    let v = validator();
    assert!(v.validate(&token, &ring, &NoRevocation, T0).is_ok());
    // Another ring (e.g. after an emergency wipe) does not publish that key.
    let mut other = KeyRing::new(RotationPolicy::default());
    other.tick_with(T0, &kek, &mut keys_from(3)).unwrap();
    assert!(matches!(
        v.validate(&token, &other, &NoRevocation, T0),
        Err(ValidationError::UnknownKey(_))
    ));
}

// ---------------------------------------------------------------------------------------
// Rotation

#[test]
fn rotation_over_four_weeks_keeps_every_invariant() {
    let clock = ManualClock::at_unix(T0);
    let kek = Kek::generate();
    let policy = RotationPolicy::default();
    let mut ring = KeyRing::new(policy);
    let mut keys = keys_from(0);
    let v = validator();
    let p = system_assigned();

    // Every token minted so far: (token, kid, exp).
    let mut minted: Vec<(String, String, i64)> = Vec::new();
    // When each kid first appeared in the JWKS, and when it first signed.
    let mut published_at = std::collections::HashMap::<String, i64>::new();
    let mut first_signed = std::collections::HashMap::<String, i64>::new();
    let mut removed = Vec::new();
    let mut activations = 0;

    let step = HOUR;
    let end = T0 + 28 * DAY;
    while clock.unix() <= end {
        let now = clock.unix();
        // INVARIANT: the key about to sign was in the JWKS we served a moment ago (except
        // the bootstrap key, which nothing could have seen earlier).
        let jwks_before: Vec<String> = ring
            .jwks()
            .keys
            .iter()
            .filter_map(|k| k.kid.clone())
            .collect();

        for change in ring.tick_with(now, &kek, &mut keys).unwrap() {
            match change {
                KeyChange::Published { kid, activate_at } => {
                    if now > T0 {
                        assert!(
                            activate_at - now >= policy.publish_lead_secs(),
                            "published too late"
                        );
                    }
                    published_at.insert(kid, now);
                }
                KeyChange::Activated { .. } => activations += 1,
                KeyChange::Removed { kid } => {
                    // INVARIANT: every token the removed key signed has expired (with skew).
                    for (_, _, exp) in minted.iter().filter(|(_, k, _)| *k == kid) {
                        assert!(
                            now > exp + policy.skew_secs,
                            "{kid} removed before its token expired"
                        );
                    }
                    removed.push(kid);
                }
            }
        }
        for kid in ring.jwks().keys.iter().filter_map(|k| k.kid.clone()) {
            published_at.entry(kid).or_insert(now);
        }

        let token = mint_for(&ring, &p, now);
        let kid = header_of(&token)["kid"].as_str().unwrap().to_string();
        if now > T0 {
            assert!(
                jwks_before.contains(&kid),
                "{kid} signed before it was published"
            );
        }
        first_signed.entry(kid.clone()).or_insert(now);
        minted.push((token, kid, now + 24 * HOUR));

        // Every unexpired token validates, whichever key signed it.
        for (token, kid, exp) in &minted {
            if now <= *exp + policy.skew_secs {
                let ok = v.validate(token, &ring, &NoRevocation, now);
                assert!(ok.is_ok(), "token of {kid} refused at {}: {ok:?}", now - T0);
            }
        }
        // Only keys still in the JWKS are looked up; at most current + next + 1 retired here.
        assert!(ring.jwks().keys.len() <= 3);
        clock.advance(Duration::from_secs(step as u64));
    }

    // Bootstrap at T0, then rotations at 7, 14, 21 and 28 days.
    assert_eq!(activations, 5);
    assert_eq!(first_signed.len(), 5);
    for (kid, signed) in &first_signed {
        let lead = signed - published_at[kid];
        if *signed > T0 {
            assert!(
                lead >= policy.publish_lead_secs(),
                "{kid} published only {lead}s before signing"
            );
        }
    }
    // The first three retired keys are gone; each left a day and five minutes after retiring.
    assert_eq!(removed.len(), 3);
}

#[test]
fn next_key_is_published_at_half_life_and_activated_on_schedule() {
    let kek = Kek::generate();
    let policy = RotationPolicy::default();
    let mut ring = KeyRing::new(policy);
    let mut keys = keys_from(0);
    let period = policy.period_secs;

    let changes = ring.tick_with(T0, &kek, &mut keys).unwrap();
    let k1 = ring.current().unwrap().kid().to_string();
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert!(ring.next().is_none());

    assert!(ring
        .tick_with(T0 + period / 2 - 1, &kek, &mut keys)
        .unwrap()
        .is_empty());
    let changes = ring.tick_with(T0 + period / 2, &kek, &mut keys).unwrap();
    let k2 = ring.next().unwrap().kid().to_string();
    assert_eq!(
        changes,
        vec![KeyChange::Published {
            kid: k2.clone(),
            activate_at: T0 + period
        }]
    );
    let jwks: Vec<_> = ring.jwks().keys.into_iter().filter_map(|k| k.kid).collect();
    assert_eq!(jwks, vec![k1.clone(), k2.clone()]);
    assert_eq!(
        ring.current().unwrap().kid(),
        k1,
        "the next key must not sign yet"
    );

    // Late tick: activation happens at the first tick after its time.
    assert!(ring
        .tick_with(T0 + period - 1, &kek, &mut keys)
        .unwrap()
        .is_empty());
    let changes = ring.tick_with(T0 + period + 30, &kek, &mut keys).unwrap();
    assert_eq!(
        changes,
        vec![KeyChange::Activated {
            kid: k2.clone(),
            retired: Some(k1.clone()),
            retired_until: Some(T0 + period + 30 + policy.retention_secs()),
        }]
    );
    assert_eq!(ring.current().unwrap().kid(), k2);
    assert_eq!(ring.record(&k1).unwrap().state, KeyState::Retired);
    assert_eq!(ring.record(&k1).unwrap().retire_at, T0 + period + 30);

    let gone = T0 + period + 30 + policy.retention_secs();
    assert!(ring
        .tick_with(gone - 1, &kek, &mut keys)
        .unwrap()
        .is_empty());
    assert_eq!(
        ring.tick_with(gone, &kek, &mut keys).unwrap(),
        vec![KeyChange::Removed { kid: k1.clone() }]
    );
    assert!(ring.find(&k1).is_none());
}

#[test]
fn a_server_down_past_the_schedule_still_publishes_ahead() {
    let kek = Kek::generate();
    let policy = RotationPolicy::default();
    let mut ring = KeyRing::new(policy);
    let mut keys = keys_from(0);
    ring.tick_with(T0, &kek, &mut keys).unwrap();
    let k1 = ring.current().unwrap().kid().to_string();
    // Nothing ticked for three weeks.
    let late = T0 + 21 * DAY;
    let changes = ring.tick_with(late, &kek, &mut keys).unwrap();
    let KeyChange::Published { activate_at, .. } = &changes[0] else {
        panic!("{changes:?}");
    };
    assert_eq!(*activate_at, late + policy.publish_lead_secs());
    assert_eq!(
        ring.current().unwrap().kid(),
        k1,
        "still signing until the successor is due"
    );
    assert_eq!(ring.record(&k1).unwrap().retire_at, *activate_at);
}

#[test]
fn forced_rotation_publishes_before_it_signs() {
    let clock = ManualClock::at_unix(T0);
    let (mut ring, kek) = ring_at(T0);
    let v = validator();
    let p = system_assigned();
    let k1 = ring.current().unwrap().kid().to_string();
    let old = mint_for(&ring, &p, T0);

    // No next key yet: rotate generates one, publishes it, then switches.
    clock.advance(Duration::from_secs(3600));
    let changes = ring
        .rotate_now_with(clock.unix(), &kek, &mut keys_from(1))
        .unwrap();
    let [KeyChange::Published { kid: k2, .. }, KeyChange::Activated {
        kid: active,
        retired,
        ..
    }] = changes.as_slice()
    else {
        panic!("{changes:?}");
    };
    assert_eq!(active, k2);
    assert_eq!(retired.as_deref(), Some(k1.as_str()));
    assert_eq!(ring.current().unwrap().kid(), k2);
    let new = mint_for(&ring, &p, clock.unix());
    assert_eq!(header_of(&new)["kid"], json!(k2));
    assert!(v.validate(&old, &ring, &NoRevocation, clock.unix()).is_ok());
    assert!(v.validate(&new, &ring, &NoRevocation, clock.unix()).is_ok());

    // With a published next key, rotate uses it and generates nothing.
    ring.tick_with(clock.unix() + 4 * DAY, &kek, &mut keys_from(2))
        .unwrap();
    let k3 = ring.next().unwrap().kid().to_string();
    let changes = ring
        .rotate_now_with(clock.unix() + 4 * DAY, &kek, &mut |_| {
            panic!("must not generate")
        })
        .unwrap();
    assert!(matches!(&changes[..], [KeyChange::Activated { kid, .. }] if *kid == k3));
    // The key it replaced stays published until its tokens expired; the first one is gone.
    let k2_record = ring.record(k2).unwrap();
    assert_eq!(k2_record.state, KeyState::Retired);
    assert_eq!(
        k2_record.remove_at,
        clock.unix() + 4 * DAY + ring.policy().retention_secs()
    );
    assert!(ring.find(&k1).is_none());
}

#[test]
fn real_key_generation_bootstraps_a_ring() {
    // The one test that pays for RSA generation in a debug build.
    let clock = ManualClock::at_unix(T0);
    let kek = Kek::generate();
    let mut ring = KeyRing::new(RotationPolicy::default());
    let changes = ring.tick(&clock, &kek).unwrap();
    assert_eq!(changes.len(), 2);
    let key = ring.current().unwrap();
    let jwk = key.jwk();
    assert_eq!(jwk.kty, "RSA");
    assert_eq!(jwk.key_use.as_deref(), Some("sig"));
    assert_eq!(jwk.e.as_deref(), Some("AQAB"));
    assert_eq!(unb64(jwk.n.as_deref().unwrap()).len(), 256);
    assert_eq!(jwk.kid, jwk.x5t);
    let token = mint_for(&ring, &system_assigned(), T0);
    assert!(validator()
        .validate(&token, &ring, &NoRevocation, T0)
        .is_ok());
}

#[test]
fn jwks_has_azure_shape_and_kid_is_the_certificate_thumbprint() {
    let (mut ring, kek) = ring_at(T0);
    ring.tick_with(T0 + 4 * DAY, &kek, &mut keys_from(1))
        .unwrap();
    let json: Value = serde_json::from_str(&ring.jwks().to_json()).unwrap();
    let keys = json["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    for k in keys {
        let obj = k.as_object().unwrap();
        let mut names: Vec<_> = obj.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["e", "kid", "kty", "n", "use", "x5c", "x5t"]);
        let cert = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            k["x5c"][0].as_str().unwrap(),
        )
        .unwrap();
        let thumb = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &cert);
        assert_eq!(k["kid"], json!(b64(thumb.as_ref())));
        assert_eq!(k["x5t"], k["kid"]);
        assert_eq!(k["kid"].as_str().unwrap().len(), 27);
        // The certificate carries the same public key the JWK names.
        let cred = CertificateCredential::from_der(&cert).unwrap();
        assert_eq!(cred.x5t(), k["kid"].as_str().unwrap());
    }
}

// ---------------------------------------------------------------------------------------
// Persistence

#[test]
fn key_ring_survives_storage_and_tokens_validate_after_reload() {
    // A one-day period, so current, next and retired keys coexist.
    let policy = RotationPolicy {
        period_secs: DAY,
        ..RotationPolicy::default()
    };
    let kek = Kek::generate();
    let mut ring = KeyRing::new(policy);
    let mut keys = keys_from(0);
    ring.tick_with(T0, &kek, &mut keys).unwrap();
    ring.tick_with(T0 + 12 * HOUR, &kek, &mut keys).unwrap();
    let first = ring.current().unwrap().kid().to_string();
    let by_first = mint_for(&ring, &system_assigned(), T0 + 23 * HOUR);
    assert_eq!(header_of(&by_first)["kid"], json!(first));
    ring.tick_with(T0 + 24 * HOUR, &kek, &mut keys).unwrap();
    let now = T0 + 36 * HOUR;
    ring.tick_with(now, &kek, &mut keys).unwrap();
    let records = ring.stored();
    assert_eq!(
        records.iter().map(|r| r.state).collect::<Vec<_>>(),
        vec![KeyState::Current, KeyState::Next, KeyState::Retired]
    );
    let token = mint_for(&ring, &system_assigned(), now);

    let json = serde_json::to_string(&records).unwrap();
    assert!(json.contains("sealedPkcs8"));
    for i in 0..6 {
        let raw = b64(&pkcs8(i));
        assert!(!json.contains(&raw[40..80]), "private key in the clear");
    }
    for r in &records {
        assert!(format!("{r:?}").contains("<redacted>"));
    }
    let back: Vec<StoredKey> = serde_json::from_str(&json).unwrap();
    assert_eq!(back, records);

    let reloaded = KeyRing::load(policy, back.clone(), &kek).unwrap();
    assert_eq!(reloaded.stored(), records);
    assert_eq!(reloaded.jwks(), ring.jwks());
    assert_eq!(
        reloaded.current().unwrap().kid(),
        ring.current().unwrap().kid()
    );
    assert!(validator()
        .validate(&token, &reloaded, &NoRevocation, now)
        .is_ok());
    // A token of the retired key, too.
    assert!(validator()
        .validate(&by_first, &reloaded, &NoRevocation, now)
        .is_ok());
    // The reloaded ring signs, and plans the same future.
    let again = mint_for(&reloaded, &system_assigned(), now);
    assert!(validator()
        .validate(&again, &ring, &NoRevocation, now)
        .is_ok());
    assert_eq!(reloaded.plan(T0 + 30 * DAY), ring.plan(T0 + 30 * DAY));

    // The wrong KEK, or a sealed key moved onto another record, does not open.
    assert!(matches!(
        KeyRing::load(policy, back.clone(), &Kek::generate()),
        Err(lanyard_token::KeyError::Unseal { .. })
    ));
    let mut swapped = back.clone();
    swapped[0].sealed_pkcs8 = back[1].sealed_pkcs8.clone();
    assert!(KeyRing::load(policy, swapped, &kek).is_err());
    let mut doubled = back.clone();
    doubled[1].state = KeyState::Current;
    assert!(matches!(
        KeyRing::load(policy, doubled, &kek),
        Err(lanyard_token::KeyError::Inconsistent(_))
    ));
}

#[test]
fn kek_file_is_created_0600_and_reloaded() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("lanyard-kek-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("kek");

    let created = Kek::load_or_create(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let sealed = created.seal(b"x", b"aad").unwrap();
    let loaded = Kek::load_or_create(&path).unwrap();
    assert_eq!(loaded.open(&sealed, b"aad").unwrap(), b"x");
    assert_eq!(loaded.fingerprint(), created.fingerprint());
    // No temporary files left behind.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    // The file's text is accepted as LANYARD_KEK.
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        Kek::from_env_value(&text).unwrap().fingerprint(),
        created.fingerprint()
    );

    for insecure in [0o640, 0o604, 0o644, 0o666] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(insecure)).unwrap();
        let err = Kek::load_or_create(&path).unwrap_err();
        assert!(matches!(err, KekError::InsecurePermissions { mode, .. } if mode == insecure));
        assert!(err.to_string().contains("chmod 600"));
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
    assert!(Kek::load_or_create(&path).is_ok());

    std::fs::write(dir.join("bad"), "short").unwrap();
    std::fs::set_permissions(dir.join("bad"), std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(Kek::load_or_create(&dir.join("bad")).is_err());
    std::fs::create_dir(dir.join("adir")).unwrap();
    assert!(matches!(
        Kek::load_or_create(&dir.join("adir")),
        Err(KekError::NotAFile(_))
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn kek_creation_races_settle_on_one_key() {
    let dir = std::env::temp_dir().join(format!("lanyard-kek-race-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = Arc::new(dir.join("kek"));
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let path = Arc::clone(&path);
            std::thread::spawn(move || Kek::load_or_create(&path).unwrap().fingerprint())
        })
        .collect();
    let prints: std::collections::HashSet<String> =
        handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(prints.len(), 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---------------------------------------------------------------------------------------
// Client secrets

#[test]
fn client_secret_hash_verifies_and_rejects() {
    let (secret, record) = generate_client_secret();
    let stored = serde_json::to_string(&record).unwrap();
    let record: SecretHash = serde_json::from_str(&stored).unwrap();
    assert!(record.verify(secret.expose()));
    assert_eq!(record.hint, secret.hint());
    let mut wrong = secret.expose().to_string();
    wrong.replace_range(39.., if wrong.ends_with('A') { "B" } else { "A" });
    assert!(!record.verify(&wrong));
    assert!(!record.verify(&format!("{} ", secret.expose())));
    let (other, _) = generate_client_secret();
    assert!(!record.verify(other.expose()));
}

// ---------------------------------------------------------------------------------------
// Certificate assertions

const ENDPOINT_V2: &str =
    "https://login.lanyard.localhost:8443/11111111-2222-3333-4444-555555555555/oauth2/v2.0/token";
const ENDPOINT_V1: &str =
    "https://login.lanyard.localhost:8443/11111111-2222-3333-4444-555555555555/oauth2/token";

struct ClientCert {
    key: SigningKey,
    pair: ring::signature::RsaKeyPair,
    cred: CertificateCredential,
}

fn client_cert(i: usize) -> ClientCert {
    let key = SigningKey::from_pkcs8(&pkcs8(i), T0).unwrap();
    let cred = CertificateCredential::from_der(key.certificate_der()).unwrap();
    ClientCert {
        pair: ring::signature::RsaKeyPair::from_pkcs8(&pkcs8(i)).unwrap(),
        key,
        cred,
    }
}

fn assertion_claims(client: &str, aud: &str, now: i64) -> Value {
    json!({"aud": aud, "iss": client, "sub": client, "jti": Uuid::new_v4().to_string(),
           "nbf": now, "iat": now, "exp": now + 600})
}

#[test]
fn certificate_assertions_are_accepted_rs256_x5t_and_ps256_x5t_s256() {
    let clock = ManualClock::at_unix(T0);
    let client = Uuid::new_v4().to_string();
    let c = client_cert(3);
    let other = client_cert(4);
    let certs = vec![other.cred.clone(), c.cred.clone()];
    let endpoints = vec![ENDPOINT_V1.to_string(), ENDPOINT_V2.to_string()];

    // MSAL Python shape: RS256 + x5t.
    let rs = jwt(
        &json!({"alg": "RS256", "typ": "JWT", "x5t": c.cred.x5t()}),
        &assertion_claims(&client, ENDPOINT_V2, T0),
        |m| c.key.sign(m).unwrap(),
    );
    let ok = verify_client_assertion(&rs, &client, &endpoints, &certs, &clock, CERT_MAX).unwrap();
    assert_eq!(ok.certificate, &c.cred);
    assert_eq!(ok.exp, T0 + 600);
    assert!(!ok.jti.is_empty());

    // MSAL Node shape: PS256 + x5t#S256, v1 endpoint as audience.
    let rng = ring::rand::SystemRandom::new();
    let ps = jwt(
        &json!({"alg": "PS256", "typ": "JWT", "x5t#S256": c.cred.x5t_s256()}),
        &assertion_claims(&client, ENDPOINT_V1, T0),
        |m| {
            let mut sig = vec![0; c.pair.public().modulus_len()];
            c.pair
                .sign(&ring::signature::RSA_PSS_SHA256, &rng, m, &mut sig)
                .unwrap();
            sig
        },
    );
    assert!(verify_client_assertion(&ps, &client, &endpoints, &certs, &clock, CERT_MAX).is_ok());

    // PEM registration gives the same credential.
    let pem = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, c.cred.der())
    );
    assert_eq!(CertificateCredential::from_pem(&pem).unwrap(), c.cred);
    let stored = serde_json::to_string(&c.cred).unwrap();
    let back: CertificateCredential = serde_json::from_str(&stored).unwrap();
    assert_eq!(back.x5t(), c.cred.x5t());
    assert_eq!(c.cred.thumbprint_hex().len(), 40);
}

#[test]
fn certificate_assertions_are_refused_for_each_fault() {
    let clock = ManualClock::at_unix(T0);
    let client = Uuid::new_v4().to_string();
    let c = client_cert(3);
    let stranger = client_cert(4);
    let certs = vec![c.cred.clone()];
    let endpoints = vec![ENDPOINT_V2.to_string()];
    let header = json!({"alg": "RS256", "typ": "JWT", "x5t": c.cred.x5t()});
    let sign = |claims: &Value| jwt(&header, claims, |m| c.key.sign(m).unwrap());
    let check =
        |token: &str| verify_client_assertion(token, &client, &endpoints, &certs, &clock, CERT_MAX);

    let mut claims = assertion_claims(&client, ENDPOINT_V2, T0);
    assert!(check(&sign(&claims)).is_ok());

    // Another certificate's key, our x5t.
    let forged = jwt(&header, &claims, |m| stranger.key.sign(m).unwrap());
    assert_eq!(check(&forged).unwrap_err(), AssertionError::BadSignature);
    // A certificate that is not registered.
    let unknown = jwt(
        &json!({"alg": "RS256", "x5t": stranger.cred.x5t()}),
        &claims,
        |m| stranger.key.sign(m).unwrap(),
    );
    assert!(matches!(
        check(&unknown).unwrap_err(),
        AssertionError::UnknownKey(_)
    ));
    // HS256 and none.
    let hs = jwt(
        &json!({"alg": "HS256", "x5t": c.cred.x5t()}),
        &claims,
        |_| vec![1; 32],
    );
    assert!(matches!(
        check(&hs).unwrap_err(),
        AssertionError::UnsupportedAlgorithm(_)
    ));
    let none = jwt(
        &json!({"alg": "none", "x5t": c.cred.x5t()}),
        &claims,
        |_| vec![1],
    );
    assert!(matches!(
        check(&none).unwrap_err(),
        AssertionError::UnsupportedAlgorithm(_)
    ));

    claims["aud"] = json!("https://login.microsoftonline.com/common/oauth2/v2.0/token");
    assert!(matches!(
        check(&sign(&claims)).unwrap_err(),
        AssertionError::WrongAudience(_)
    ));
    claims["aud"] = json!([ENDPOINT_V2]);
    assert!(check(&sign(&claims)).is_ok());

    let mut wrong_iss = claims.clone();
    wrong_iss["iss"] = json!(Uuid::new_v4().to_string());
    assert!(matches!(
        check(&sign(&wrong_iss)).unwrap_err(),
        AssertionError::WrongClient { .. }
    ));
    let mut wrong_sub = claims.clone();
    wrong_sub["sub"] = json!("someone");
    assert!(matches!(
        check(&sign(&wrong_sub)).unwrap_err(),
        AssertionError::WrongClient { .. }
    ));

    let mut no_jti = claims.clone();
    no_jti.as_object_mut().unwrap().remove("jti");
    assert_eq!(
        check(&sign(&no_jti)).unwrap_err(),
        AssertionError::MissingClaim("jti")
    );
    let mut no_exp = claims.clone();
    no_exp.as_object_mut().unwrap().remove("exp");
    assert_eq!(
        check(&sign(&no_exp)).unwrap_err(),
        AssertionError::MissingClaim("exp")
    );

    let mut expired = claims.clone();
    expired["exp"] = json!(T0 - 301);
    assert!(matches!(
        check(&sign(&expired)).unwrap_err(),
        AssertionError::Expired { .. }
    ));
    let mut early = claims.clone();
    early["nbf"] = json!(T0 + 301);
    assert!(matches!(
        check(&sign(&early)).unwrap_err(),
        AssertionError::NotYetValid { .. }
    ));

    // The same assertion, ten minutes and six seconds later.
    let fine = sign(&claims);
    clock.advance(Duration::from_secs(906));
    assert!(matches!(
        check(&fine).unwrap_err(),
        AssertionError::Expired { .. }
    ));
}

/// An assertion valid for years is refused, however its times are written: the lifetime from
/// `nbf` (else `iat`) to `exp`, and how far `exp` lies ahead, are both bounded.
#[test]
fn certificate_assertions_valid_for_years_are_refused() {
    let clock = ManualClock::at_unix(T0);
    let client = Uuid::new_v4().to_string();
    let c = client_cert(3);
    let certs = vec![c.cred.clone()];
    let endpoints = vec![ENDPOINT_V2.to_string()];
    let header = json!({"alg": "RS256", "typ": "JWT", "x5t": c.cred.x5t()});
    let sign = |claims: &Value| jwt(&header, claims, |m| c.key.sign(m).unwrap());
    let check = |claims: &Value, max: i64| {
        verify_client_assertion(&sign(claims), &client, &endpoints, &certs, &clock, max)
    };
    let too_long = |claims: &Value, max: i64| match check(claims, max) {
        Err(e @ AssertionError::LifetimeTooLong { .. }) => e,
        other => panic!("{claims} with a limit of {max}: {other:?}"),
    };
    let years = 5 * 365 * DAY;

    // The usual ten minutes passes.
    let normal = assertion_claims(&client, ENDPOINT_V2, T0);
    assert!(check(&normal, CERT_MAX).is_ok());

    // exp five years ahead.
    let mut long = normal.clone();
    long["exp"] = json!(T0 + years);
    let err = too_long(&long, CERT_MAX);
    assert_eq!(
        lanyard_token::TokenServiceError::from(&err).aadsts_code(),
        700024
    );
    // ... with neither nbf nor iat to measure from.
    let mut bare = long.clone();
    bare.as_object_mut().unwrap().remove("nbf");
    bare.as_object_mut().unwrap().remove("iat");
    too_long(&bare, CERT_MAX);
    // Valid since years ago, expiring in ten minutes: nbf, or iat without nbf.
    let mut old = normal.clone();
    old["nbf"] = json!(T0 - years);
    too_long(&old, CERT_MAX);
    let mut old_iat = normal.clone();
    old_iat.as_object_mut().unwrap().remove("nbf");
    old_iat["iat"] = json!(T0 - years);
    too_long(&old_iat, CERT_MAX);

    // The limit is inclusive; a second more is refused.
    let mut at_limit = normal.clone();
    at_limit["exp"] = json!(T0 + CERT_MAX);
    assert!(check(&at_limit, CERT_MAX).is_ok());
    at_limit["exp"] = json!(T0 + CERT_MAX + 1);
    too_long(&at_limit, CERT_MAX);
    // A client whose clock runs a little ahead is within the skew.
    let mut ahead = normal.clone();
    ahead["nbf"] = json!(T0 + 200);
    ahead["iat"] = json!(T0 + 200);
    ahead["exp"] = json!(T0 + 200 + CERT_MAX);
    assert!(check(&ahead, CERT_MAX).is_ok());
    // The limit is the caller's.
    assert!(check(&normal, 600).is_ok());
    too_long(&normal, 599);
}

// ---------------------------------------------------------------------------------------
// Federated assertions

const GITHUB: &str = "https://token.actions.githubusercontent.com";
const EXCHANGE: &str = "api://AzureADTokenExchange";

fn fic(name: &str, issuer: &str, subject: &str) -> FederatedCredential {
    FederatedCredential {
        name: name.into(),
        issuer: issuer.into(),
        subject: subject.into(),
        audiences: vec![EXCHANGE.into()],
    }
}

struct ExternalIssuer {
    ec: ring::signature::EcdsaKeyPair,
    rsa: SigningKey,
    jwks: String,
}

fn external_issuer() -> ExternalIssuer {
    use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    let rng = ring::rand::SystemRandom::new();
    let pk8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let ec =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pk8.as_ref(), &rng).unwrap();
    let point = ec.public_key().as_ref();
    let rsa = SigningKey::from_pkcs8(&pkcs8(4), T0).unwrap();
    let mut rsa_jwk = serde_json::to_value(rsa.jwk()).unwrap();
    rsa_jwk["kid"] = json!("rsa-1");
    rsa_jwk["alg"] = json!("RS256");
    let jwks = json!({"keys": [
        {"kty": "EC", "crv": "P-256", "kid": "ec-1", "use": "sig", "alg": "ES256",
         "x": b64(&point[1..33]), "y": b64(&point[33..65])},
        rsa_jwk,
    ]})
    .to_string();
    ExternalIssuer { ec, rsa, jwks }
}

impl ExternalIssuer {
    fn es256(&self, claims: &Value) -> String {
        let rng = ring::rand::SystemRandom::new();
        jwt(
            &json!({"alg": "ES256", "typ": "JWT", "kid": "ec-1"}),
            claims,
            |m| self.ec.sign(&rng, m).unwrap().as_ref().to_vec(),
        )
    }

    fn rs256(&self, claims: &Value) -> String {
        jwt(
            &json!({"alg": "RS256", "typ": "JWT", "kid": "rsa-1"}),
            claims,
            |m| self.rsa.sign(m).unwrap(),
        )
    }
}

fn workflow_claims(sub: &str, aud: Value, now: i64) -> Value {
    json!({"iss": GITHUB, "sub": sub, "aud": aud, "iat": now, "nbf": now, "exp": now + 300,
           "jti": "j", "repository": "octo/app"})
}

#[test]
fn federated_assertions_match_issuer_subject_and_audience() {
    let clock = ManualClock::at_unix(T0);
    let issuer = external_issuer();
    let subject = "repo:octo/app:environment:prod";
    let creds = vec![
        fic(
            "k8s",
            "https://oidc.k8s.example/",
            "system:serviceaccount:ns:sa",
        ),
        fic("gh-prod", GITHUB, subject),
    ];
    let claims = workflow_claims(subject, json!(EXCHANGE), T0);

    for token in [issuer.es256(&claims), issuer.rs256(&claims)] {
        assert_eq!(peek_unverified_issuer(&token).unwrap(), GITHUB);
        let matched =
            verify_federated_assertion(&token, &issuer.jwks, &creds, &clock, FED_MAX).unwrap();
        assert_eq!(matched.name, "gh-prod");
    }
    // Kubernetes puts `aud` in an array.
    let arr = workflow_claims(subject, json!(["other", EXCHANGE]), T0);
    assert_eq!(
        verify_federated_assertion(&issuer.es256(&arr), &issuer.jwks, &creds, &clock, FED_MAX)
            .unwrap()
            .name,
        "gh-prod"
    );
}

#[test]
fn federated_assertions_are_refused_on_any_mismatch() {
    let clock = ManualClock::at_unix(T0);
    let issuer = external_issuer();
    let subject = "repo:octo/app:environment:prod";
    let creds = vec![fic("gh-prod", GITHUB, subject)];
    let no_match = |claims: &Value| {
        let err = verify_federated_assertion(
            &issuer.es256(claims),
            &issuer.jwks,
            &creds,
            &clock,
            FED_MAX,
        )
        .unwrap_err();
        assert!(
            matches!(err, AssertionError::NoMatchingCredential { .. }),
            "{err:?}"
        );
        err
    };

    // Subject: exact, case-sensitive, no prefix matching.
    no_match(&workflow_claims(
        "repo:octo/app:environment:dev",
        json!(EXCHANGE),
        T0,
    ));
    no_match(&workflow_claims(
        "repo:octo/app:environment:PROD",
        json!(EXCHANGE),
        T0,
    ));
    no_match(&workflow_claims("repo:octo/app", json!(EXCHANGE), T0));
    // Audience.
    let err = no_match(&workflow_claims(subject, json!("api://other"), T0));
    assert!(err.to_string().contains("api://other"));
    no_match(&workflow_claims(subject, json!([]), T0));
    // Issuer: exact, a trailing slash is a different issuer.
    let mut claims = workflow_claims(subject, json!(EXCHANGE), T0);
    claims["iss"] = json!(format!("{GITHUB}/"));
    no_match(&claims);

    // Signature, key and time faults come before matching.
    let good = workflow_claims(subject, json!(EXCHANGE), T0);
    let token = issuer.es256(&good);
    let tampered = with_claims(
        &token,
        &workflow_claims("repo:evil/app:environment:prod", json!(EXCHANGE), T0),
    );
    assert_eq!(
        verify_federated_assertion(&tampered, &issuer.jwks, &creds, &clock, FED_MAX).unwrap_err(),
        AssertionError::BadSignature
    );
    let other_jwks = external_issuer().jwks;
    assert_eq!(
        verify_federated_assertion(&token, &other_jwks, &creds, &clock, FED_MAX).unwrap_err(),
        AssertionError::BadSignature
    );
    let unknown_kid = jwt(&json!({"alg": "ES256", "kid": "nope"}), &good, |_| {
        vec![0; 64]
    });
    assert!(matches!(
        verify_federated_assertion(&unknown_kid, &issuer.jwks, &creds, &clock, FED_MAX)
            .unwrap_err(),
        AssertionError::UnknownKey(_)
    ));
    // An RS256 header naming the EC key.
    let confused = jwt(&json!({"alg": "RS256", "kid": "ec-1"}), &good, |m| {
        issuer.rsa.sign(m).unwrap()
    });
    assert!(matches!(
        verify_federated_assertion(&confused, &issuer.jwks, &creds, &clock, FED_MAX).unwrap_err(),
        AssertionError::UnsupportedAlgorithm(_)
    ));
    let hs = jwt(&json!({"alg": "HS256", "kid": "ec-1"}), &good, |_| {
        vec![0; 32]
    });
    assert!(matches!(
        verify_federated_assertion(&hs, &issuer.jwks, &creds, &clock, FED_MAX).unwrap_err(),
        AssertionError::UnsupportedAlgorithm(_)
    ));
    assert_eq!(
        verify_federated_assertion(&token, "not json", &creds, &clock, FED_MAX).unwrap_err(),
        AssertionError::BadJwks
    );
    clock.advance(Duration::from_secs(300 + 301));
    assert!(matches!(
        verify_federated_assertion(&token, &issuer.jwks, &creds, &clock, FED_MAX).unwrap_err(),
        AssertionError::Expired { .. }
    ));
}

/// A federated assertion valid for years is refused; a Kubernetes token of up to 24 hours
/// (what Azure workload identity allows) passes by default.
#[test]
fn federated_assertions_valid_for_years_are_refused() {
    let clock = ManualClock::at_unix(T0);
    let issuer = external_issuer();
    let subject = "system:serviceaccount:prod:worker";
    let creds = vec![fic("k8s", GITHUB, subject)];
    let check = |claims: &Value, max: i64| {
        verify_federated_assertion(&issuer.rs256(claims), &issuer.jwks, &creds, &clock, max)
    };
    let with_exp = |exp: i64| {
        let mut c = workflow_claims(subject, json!([EXCHANGE]), T0);
        c["exp"] = json!(exp);
        c
    };
    assert!(check(&with_exp(T0 + HOUR), FED_MAX).is_ok());
    assert!(check(&with_exp(T0 + DAY), FED_MAX).is_ok());
    let years = with_exp(T0 + 5 * 365 * DAY);
    let err = check(&years, FED_MAX).unwrap_err();
    assert!(
        matches!(err, AssertionError::LifetimeTooLong { .. }),
        "{err:?}"
    );
    assert_eq!(
        lanyard_token::TokenServiceError::from(&err).aadsts_code(),
        700024
    );
    // Issued years ago, still unexpired.
    let mut old = with_exp(T0 + 600);
    old["iat"] = json!(T0 - 5 * 365 * DAY);
    old["nbf"] = json!(T0 - 5 * 365 * DAY);
    assert!(matches!(
        check(&old, FED_MAX).unwrap_err(),
        AssertionError::LifetimeTooLong { .. }
    ));
    // A tighter configured limit refuses a day-long token.
    assert!(matches!(
        check(&with_exp(T0 + DAY), HOUR).unwrap_err(),
        AssertionError::LifetimeTooLong { .. }
    ));
}

// ---------------------------------------------------------------------------------------
// Parsers never panic

mod never_panics {
    use super::*;
    use proptest::prelude::*;
    use std::sync::OnceLock;

    struct Fixture {
        ring: KeyRing,
        validator: Validator,
        certs: Vec<CertificateCredential>,
        jwks: String,
        good: String,
    }

    fn fixture() -> &'static Fixture {
        static F: OnceLock<Fixture> = OnceLock::new();
        F.get_or_init(|| {
            let (ring, _) = ring_at(T0);
            let good = mint_for(&ring, &system_assigned(), T0);
            Fixture {
                certs: vec![CertificateCredential::from_der(
                    ring.current().unwrap().certificate_der(),
                )
                .unwrap()],
                jwks: ring.jwks().to_json(),
                validator: validator(),
                ring,
                good,
            }
        })
    }

    fn exercise(token: &str) {
        let f = fixture();
        let clock = ManualClock::at_unix(T0);
        let _ = f.validator.validate(token, &f.ring, &NoRevocation, T0);
        let _ = peek_unverified_issuer(token);
        let _ = verify_client_assertion(
            token,
            "c",
            &[ENDPOINT_V2.to_string()],
            &f.certs,
            &clock,
            CERT_MAX,
        );
        let _ =
            verify_federated_assertion(token, &f.jwks, &[fic("a", GITHUB, "s")], &clock, FED_MAX);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn arbitrary_strings(s in ".{0,300}") {
            exercise(&s);
        }

        #[test]
        fn arbitrary_three_segment_tokens(
            h in "[A-Za-z0-9_=+/-]{0,80}",
            p in "[A-Za-z0-9_=+/-]{0,200}",
            s in "[A-Za-z0-9_=+/-]{0,400}",
        ) {
            exercise(&format!("{h}.{p}.{s}"));
        }

        #[test]
        fn arbitrary_json_in_valid_base64(header in ".{0,60}", payload in ".{0,200}") {
            let token = format!("{}.{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()), "AAAA");
            exercise(&token);
        }

        #[test]
        fn mutated_real_tokens_are_never_accepted(pos in 0usize..1400, byte in any::<u8>()) {
            let f = fixture();
            let mut bytes = f.good.clone().into_bytes();
            let pos = pos % bytes.len();
            prop_assume!(bytes[pos] != byte);
            bytes[pos] = byte;
            if let Ok(mutated) = String::from_utf8(bytes) {
                // A fresh validator: no cache hit can stand in for the mutated token.
                let r = validator().validate(&mutated, &f.ring, &NoRevocation, T0);
                prop_assert!(r.is_err(), "accepted a mutated token at {}", pos);
            }
        }
    }
}
