//! Signing and validation cost: raw RS256 with ring vs our whole mint (claims + sign), and
//! validation with and without the cache. Ends by printing the mint/raw ratio.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use base64::Engine;
use criterion::{criterion_group, criterion_main, Criterion};
use lanyard_domain::{Principal, PrincipalKind, ResourceId, ServicePrincipalSource};
use lanyard_token::claims::{TokenPolicy, TokenRequest};
use lanyard_token::keys::{KeyRing, RotationPolicy, SigningKey};
use lanyard_token::validate::{ValidationConfig, Validator};
use lanyard_token::{mint, IssuerConfig, Kek, NoRevocation};
use uuid::Uuid;

const T0: i64 = 1_700_000_000;

struct Setup {
    ring: KeyRing,
    raw: ring::signature::RsaKeyPair,
    policy: TokenPolicy,
    request: TokenRequest,
    config: ValidationConfig,
}

fn setup() -> Setup {
    let pem = include_str!("../tests/fixtures/test-rsa-1.pem");
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let pkcs8 = base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap();
    let kek = Kek::generate();
    let mut ring = KeyRing::new(RotationPolicy::default());
    ring.tick_with(T0, &kek, &mut |now| SigningKey::from_pkcs8(&pkcs8, now))
        .unwrap();
    let host = ResourceId::parse(
        "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1",
    )
    .unwrap();
    let tenant = Uuid::new_v4();
    let principal = Principal {
        object_id: Uuid::new_v4(),
        tenant_id: tenant,
        display_name: "vm1".into(),
        kind: PrincipalKind::ServicePrincipal {
            client_id: Uuid::new_v4(),
            source: ServicePrincipalSource::SystemAssigned { host: host.clone() },
        },
    };
    let request =
        TokenRequest::managed_identity(&principal, &host, "https://vault.azure.net", T0).unwrap();
    Setup {
        raw: ring::signature::RsaKeyPair::from_pkcs8(&pkcs8).unwrap(),
        ring,
        policy: TokenPolicy::default(),
        request,
        config: ValidationConfig::new(
            &IssuerConfig::default(),
            [tenant],
            ["https://vault.azure.net"],
        ),
    }
}

fn raw_sign(s: &Setup, rng: &ring::rand::SystemRandom, input: &[u8]) -> Vec<u8> {
    let mut sig = vec![0u8; s.raw.public().modulus_len()];
    s.raw
        .sign(&ring::signature::RSA_PKCS1_SHA256, rng, input, &mut sig)
        .unwrap();
    sig
}

fn our_mint(s: &Setup) -> String {
    let claims = s.policy.claims(&s.request, T0);
    mint(&s.ring, &claims).unwrap().access_token
}

fn benches(c: &mut Criterion) {
    let s = setup();
    let rng = ring::rand::SystemRandom::new();
    let token = our_mint(&s);
    // The same bytes our mint signs, so the two measure the same RSA operation.
    let signing_input = token.rsplit_once('.').unwrap().0.as_bytes().to_vec();

    let mut g = c.benchmark_group("sign");
    g.bench_function("raw_rs256_ring", |b| {
        b.iter(|| raw_sign(&s, &rng, black_box(&signing_input)))
    });
    g.bench_function("mint_v1_claims_and_sign", |b| {
        b.iter(|| our_mint(black_box(&s)))
    });
    g.finish();

    let mut g = c.benchmark_group("validate");
    let uncached = Validator::with_cache_capacity(s.config.clone(), 0);
    g.bench_function("uncached", |b| {
        b.iter(|| {
            uncached
                .validate(black_box(&token), &s.ring, &NoRevocation, T0)
                .unwrap()
        })
    });
    let cached = Validator::new(s.config.clone());
    cached.validate(&token, &s.ring, &NoRevocation, T0).unwrap();
    g.bench_function("cached", |b| {
        b.iter(|| {
            cached
                .validate(black_box(&token), &s.ring, &NoRevocation, T0)
                .unwrap()
        })
    });
    g.finish();

    // The ratio, measured directly: how much our mint adds on top of the RSA signature.
    let n = 300;
    let t = Instant::now();
    for _ in 0..n {
        black_box(raw_sign(&s, &rng, &signing_input));
    }
    let raw = t.elapsed();
    let t = Instant::now();
    for _ in 0..n {
        black_box(our_mint(&s));
    }
    let full = t.elapsed();
    println!(
        "mint/raw ratio: {:.3} (raw {:.1} µs, mint {:.1} µs per token)",
        full.as_secs_f64() / raw.as_secs_f64(),
        raw.as_secs_f64() * 1e6 / f64::from(n),
        full.as_secs_f64() * 1e6 / f64::from(n),
    );
}

criterion_group! {
    name = sign;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500));
    targets = benches
}

criterion_main!(sign);
