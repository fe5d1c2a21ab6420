//! The bodies of Lanyard's fuzz targets, one function per target, shared by the libFuzzer
//! binaries (`fuzz_targets/*.rs`) and by the replay test below, which runs them over the
//! committed seeds (and a bounded, seeded mutation run) on a stable toolchain.
//!
//! Layout:
//! - [`resource_id`]: ARM resource ids, the control plane's path router and `$filter`s.
//! - [`jwt_validate`]: the shared token validator, on raw input and on mutations of a token
//!   signed by a real key; JWKS documents; unverified issuer peeking.
//! - [`identity_query`]: the identity endpoints' query parser and request readers.
//! - [`token_form`]: the token endpoint's form parser, HTTP Basic client authentication and
//!   the requested resource; Graph's `$filter`.
//! - [`arm_bodies`]: JSON bodies through the control plane's pure planners (identity
//!   blocks, resources, identities, federated credentials, role assignments and definitions,
//!   groups, vault properties).
//! - [`keyvault_requests`]: Key Vault paths and bodies.
//! - [`blob_requests`]: blob paths, queries, headers and block lists.
//!
//! Every target checks more than "no panic" where a property is cheap to state: ids
//! round-trip, a mutated token never validates, parsers that accept say what they accepted.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use lanyard_domain::{ChangeMode, IdentityChange, IdentityState, ResourceId};
use lanyard_storage::{Change, ResourceRecord};
use lanyard_token::{
    AccessTokenClaims, JwkSet, KeySet, NoRevocation, SigningKey, ValidationConfig, Validator,
};
use serde_json::{json, Value};
use time::OffsetDateTime;
use uuid::Uuid;

/// Splits fuzz input into `n` parts at `\0` bytes (missing parts are empty).
fn parts(data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut out: Vec<&[u8]> = data.splitn(n, |b| *b == 0).collect();
    while out.len() < n {
        out.push(&[]);
    }
    out
}

fn text(data: &[u8]) -> String {
    String::from_utf8_lossy(data).into_owned()
}

// ------------------------------------------------------------------------------------------
// Resource ids, ARM paths and filters

pub fn resource_id(data: &[u8]) {
    let input = text(data);
    if let Ok(id) = ResourceId::parse(&input) {
        // The formatted id parses back to the same id, with the same text.
        let again = ResourceId::parse(id.as_str()).expect("a formatted id parses");
        assert_eq!(again.as_str(), id.as_str());
        assert_eq!(again.key(), id.key());
        assert_eq!(id.key(), id.as_str().to_ascii_lowercase());
        assert!(id.is_within(&ResourceId::root()));
        assert!(id.is_within(&id));
        // Every ancestor contains it; the chain ends at the root, and never loops.
        let mut count = 0;
        for ancestor in id.ancestors() {
            assert!(id.is_within(&ancestor), "{id} not within {ancestor}");
            count += 1;
            assert!(count < 10_000, "ancestors of {id} do not end");
        }
        if let Some(parent) = id.parent() {
            assert!(
                !parent.is_within(&id) || parent == id,
                "{parent} within {id}"
            );
            assert_ne!(parent.key(), id.key());
        }
        let _ = id.resource_type();
        let _ = id.name();
        let _ = lanyard_arm::kinds::of(&id);
        let _ = lanyard_arm::plan::removal::top_level(&id);
    }
    let _ = lanyard_arm::route::parse(&input);
    let _ = lanyard_arm::filter::parse(&input);
    let _ = lanyard_arm::request::parse_query(Some(&input));
}

// ------------------------------------------------------------------------------------------
// Token validation

struct TokenFixture {
    keys: KeySet,
    validator: Validator,
    token: String,
    now: i64,
}

const TENANT: Uuid = Uuid::from_u128(0x7e0a_0000_0000_4000_8000_0000_0000_0001);
const AUDIENCE: &str = "https://management.azure.com/";

/// An RSA-2048 key made for these targets only (generating one per process is too slow
/// under the sanitizer for libFuzzer's per-input timeout).
const FUZZ_ONLY_KEY: &[u8] = include_bytes!("../keys/fuzz-only-rsa2048.pk8");

fn token_fixture() -> &'static TokenFixture {
    static FIXTURE: OnceLock<TokenFixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let now = 1_700_000_000;
        let key = SigningKey::from_pkcs8(FUZZ_ONLY_KEY, now).expect("the fuzz key");
        let keys = KeySet::from_jwks(&JwkSet {
            keys: vec![key.jwk().clone()],
        });
        let issuers = lanyard_token::IssuerConfig::default();
        let claims = AccessTokenClaims {
            aud: AUDIENCE.into(),
            iss: issuers.v1(TENANT),
            iat: now,
            nbf: now,
            exp: now + 3600,
            aio: None,
            appid: Some(Uuid::from_u128(2).to_string()),
            appidacr: Some("1".into()),
            azp: None,
            azpacr: None,
            idp: Some(issuers.v1(TENANT)),
            idtyp: Some("app".into()),
            oid: Uuid::from_u128(3).to_string(),
            rh: None,
            sub: Uuid::from_u128(3).to_string(),
            tid: TENANT.to_string(),
            uti: None,
            ver: "1.0".into(),
            xms_az_rid: None,
            xms_mirid: None,
            xms_tcdt: None,
        };
        let token = lanyard_token::mint::sign_jwt(&key, &claims).expect("sign");
        // No cache: every input is validated in full.
        let validator = Validator::with_cache_capacity(
            ValidationConfig::new(&issuers, [TENANT], [AUDIENCE]),
            0,
        );
        let fx = TokenFixture {
            keys,
            validator,
            token,
            now,
        };
        assert!(
            validate(&fx, &fx.token).is_ok(),
            "the fixture token validates"
        );
        fx
    })
}

fn validate(
    fx: &TokenFixture,
    token: &str,
) -> Result<std::sync::Arc<lanyard_token::ValidatedToken>, lanyard_token::ValidationError> {
    fx.validator
        .validate(token, &fx.keys, &NoRevocation, fx.now)
}

/// Input byte 0 chooses: raw input as a token, or the valid token with a splice of the
/// rest of the input at a position. A token that differs from the one we signed must
/// never validate.
pub fn jwt_validate(data: &[u8]) {
    let fx = token_fixture();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let candidate = match mode % 4 {
        0 => text(rest),
        1 | 2 => {
            // Overwrite a span of the token at a position the input picks.
            let at = rest.first().map_or(0, |b| usize::from(*b)) * fx.token.len() / 256;
            let splice = text(rest.get(1..).unwrap_or_default());
            let mut t = fx.token.clone();
            let end = (at + splice.len()).min(t.len());
            if t.is_char_boundary(at) && t.is_char_boundary(end) {
                t.replace_range(at..end, &splice);
            }
            if mode % 4 == 2 {
                let mut len = t.len().saturating_sub(usize::from(mode / 4));
                while !t.is_char_boundary(len) {
                    len -= 1;
                }
                t.truncate(len);
            }
            t
        }
        _ => {
            // Replace one whole segment (header, payload or signature) with the input.
            let i = usize::from(mode / 4) % 3;
            let mut segs: Vec<String> = fx.token.split('.').map(str::to_string).collect();
            segs[i] = text(rest);
            segs.join(".")
        }
    };
    let result = validate(fx, &candidate);
    if candidate != fx.token {
        assert!(
            result.is_err(),
            "a token other than the one signed validated: {candidate:?}"
        );
    }
    let _ = lanyard_token::peek_unverified_issuer(&candidate);
    if let Ok(set) = JwkSet::parse(&text(rest)) {
        let keys = KeySet::from_jwks(&set);
        // A key set from arbitrary JSON is only ever a lookup table.
        let _ = fx
            .validator
            .validate(&fx.token, &keys, &NoRevocation, fx.now);
    }
}

// ------------------------------------------------------------------------------------------
// Identity endpoints

pub fn identity_query(data: &[u8]) {
    use lanyard_imds::protocol::{app_service_request, imds_request, parse_query};
    let query = text(data);
    if let Ok(map) = parse_query(&query) {
        for k in map.keys() {
            assert_eq!(k, &k.to_ascii_lowercase());
        }
        if let Ok(ask) = imds_request(&map) {
            assert!(!ask.resource.is_empty());
        }
        let _ = app_service_request(&map);
    }
}

// ------------------------------------------------------------------------------------------
// Token endpoint

pub fn token_form(data: &[u8]) {
    use lanyard_login::form::{apply_basic_auth, parse_form, requested_resource, EndpointVersion};
    let p = parts(data, 3);
    let content_type = text(p[0]);
    let authorization = text(p[1]);
    let Ok(mut form) = parse_form(Some(&content_type), p[2]) else {
        let _ = parse_form(Some("application/x-www-form-urlencoded"), p[2]);
        return;
    };
    for v in [
        &form.client_id,
        &form.client_secret,
        &form.scope,
        &form.resource,
    ]
    .into_iter()
    .flatten()
    {
        assert!(!v.is_empty(), "empty values count as absent");
    }
    let _ = apply_basic_auth(&mut form, Some(&authorization));
    for version in [EndpointVersion::V1, EndpointVersion::V2] {
        if let Ok(resource) = requested_resource(&form, version) {
            assert!(resource.len() <= 512);
            assert!(!resource.chars().any(char::is_control));
        }
    }
    let _ = lanyard_token::scope_to_resource(&authorization);
    let _ = lanyard_login::apps::Filter::parse(&authorization);
}

// ------------------------------------------------------------------------------------------
// Control-plane bodies

const SUB: &str = "00000000-0000-4000-8000-0000000000aa";
const RG: &str = "/subscriptions/00000000-0000-4000-8000-0000000000aa/resourceGroups/rg1";

fn record(id: &str, body: Value) -> ResourceRecord {
    let id = ResourceId::parse(id).expect("fixture id");
    let t = OffsetDateTime::from_unix_timestamp(1_600_000_000).expect("time");
    ResourceRecord {
        resource_type: id.resource_type(),
        id,
        body,
        created_at: t,
        updated_at: t,
    }
}

fn with_ctx<T>(f: impl FnOnce(&lanyard_arm::plan::Context<'_>) -> T) -> T {
    let counter = std::sync::atomic::AtomicU64::new(1);
    let next = || {
        Uuid::from_u128(
            u128::from(counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed)) << 64,
        )
    };
    let revoke = |principal| Change::SetRevocation {
        principal,
        valid_after: 1_700_000_001,
    };
    let ctx = lanyard_arm::plan::Context {
        now: OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("time"),
        tenant_id: Uuid::from_u128(0xAAAA),
        caller: Uuid::from_u128(0xC0FFEE),
        correlation_id: "fuzz",
        new_id: &next,
        revoke: &revoke,
    };
    f(&ctx)
}

/// The input as JSON, or (when it is not JSON) the input wrapped as a string value in a
/// few places a body could hold it.
pub fn arm_bodies(data: &[u8]) {
    use lanyard_arm::kinds;
    use lanyard_arm::plan::{self, resources::ResourceView};

    let body: Value = match lanyard_arm::request::ArmJson::<Value>::from_bytes(data) {
        Ok(j) => j.0,
        Err(_) => {
            let s = text(data);
            json!({"location": s, "identity": {"type": s}, "properties": {"principalId": s}})
        }
    };
    let group = record(RG, json!({"id": RG, "name": "rg1", "location": "local"}));
    let uai_id = format!("{RG}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/ua1");
    let uai = record(
        &uai_id,
        json!({"id": uai_id, "location": "local", "properties": {
            "principalId": Uuid::from_u128(11).to_string(),
            "clientId": Uuid::from_u128(12).to_string(),
            "tenantId": Uuid::from_u128(0xAAAA).to_string()}}),
    );
    let vm_id = format!("{RG}/providers/Microsoft.Compute/virtualMachines/vm1");
    let vm = record(
        &vm_id,
        json!({"id": vm_id, "location": "local", "identity": {
            "type": "SystemAssigned, UserAssigned",
            "principalId": Uuid::from_u128(21).to_string(),
            "tenantId": Uuid::from_u128(0xAAAA).to_string(),
            "userAssignedIdentities": {&uai_id: {
                "principalId": Uuid::from_u128(11).to_string(),
                "clientId": Uuid::from_u128(12).to_string()}}}}),
    );

    // The identity block alone.
    if let Some(identity) = body.get("identity") {
        if let Ok(change) = IdentityChange::from_json(identity) {
            for mode in [ChangeMode::Put, ChangeMode::Patch] {
                if let Ok(state) = change.apply(&IdentityState::default(), mode) {
                    assert_eq!(state.system_assigned, change.identity_type.has_system());
                }
            }
        }
    }
    let named = plan::resources::named_identities(&body);
    let mut identities = BTreeMap::new();
    identities.insert(uai.id.key().to_string(), uai.clone());
    let vm_kind = kinds::of(&vm.id).expect("vm kind");
    let id = ResourceId::parse(&vm_id).expect("vm id");
    for (existing, mode) in [
        (None, ChangeMode::Put),
        (Some(&vm), ChangeMode::Put),
        (Some(&vm), ChangeMode::Patch),
    ] {
        let view = ResourceView {
            group: &group,
            existing,
            identities: &identities,
        };
        if let Ok(p) = with_ctx(|ctx| plan::resources::write(ctx, vm_kind, &id, &body, view, mode))
        {
            // Only identities the request named can be newly linked.
            for linked in &p.linked {
                assert!(named.iter().any(|n| n.key() == linked.key()), "{linked}");
            }
            assert!((200..300).contains(&p.status));
        }
    }
    let uai_kind = kinds::of(&uai.id).expect("uai kind");
    for (existing, mode) in [(None, ChangeMode::Put), (Some(&uai), ChangeMode::Patch)] {
        let _ = with_ctx(|ctx| {
            plan::identities::write(ctx, uai_kind, &uai.id, &body, &group, existing, mode)
        });
    }
    let fic_id = uai.id.with_child("federatedIdentityCredentials", "fic1");
    if let Some(fic_kind) = kinds::of(&fic_id) {
        let _ = with_ctx(|ctx| {
            plan::identities::put_credential(ctx, fic_kind, &fic_id, &body, &uai, None, 3)
        });
    }
    let _ = plan::assignments::read_request("7b8f0000-0000-4000-8000-000000000001", &body);
    let group_id = ResourceId::parse(RG).expect("rg");
    let _ = with_ctx(|ctx| plan::groups::put(ctx, &group_id, &body, None));
    let _ = with_ctx(|ctx| plan::groups::put(ctx, &group_id, &body, Some(&group)));
    let _ = with_ctx(|ctx| plan::groups::patch(ctx, &group, &body));
    let sub = ResourceId::subscription(SUB);
    let _ = with_ctx(|ctx| {
        plan::roles::put(
            ctx,
            &sub,
            "5b8f0000-0000-4000-8000-000000000002",
            &body,
            &[],
            std::slice::from_ref(&group_id),
        )
    });
    let vault_ctx = lanyard_keyvault::vault::VaultContext {
        tenant_id: Uuid::from_u128(0xAAAA),
        vault_uri: "https://kv1.vault.lanyard.localhost/",
    };
    if let Ok(props) = lanyard_keyvault::vault::validate_put(&body, None, &vault_ctx) {
        let stored = json!({ "properties": props });
        // What was accepted once is accepted again unchanged.
        let again = lanyard_keyvault::vault::validate_patch(&json!({}), &stored, &vault_ctx);
        assert!(
            again.is_ok(),
            "accepted vault properties refused on re-validation: {stored}"
        );
        // A write that does not name the permission model never switches it.
        if let Ok(again) = again {
            assert!(
                !lanyard_keyvault::vault::switches_permission_model(&stored, &again),
                "an empty PATCH switched the permission model: {stored}"
            );
        }
    }
    let mut merged = vm.body.clone();
    lanyard_arm::shape::merge_patch(&mut merged, &body);
    let _ = lanyard_arm::shape::ResolvedIdentity::from_body(&body);
}

// ------------------------------------------------------------------------------------------
// Key Vault

pub fn keyvault_requests(data: &[u8]) {
    use lanyard_keyvault::{route, wire};
    let p = parts(data, 3);
    let path = text(p[0]);
    let query = text(p[1]);
    for method in [
        Method::GET,
        Method::PUT,
        Method::PATCH,
        Method::POST,
        Method::DELETE,
    ] {
        if let Ok(op) = route::parse(&method, &path) {
            if let Some(name) = op.secret() {
                assert!(lanyard_keyvault::names::SecretName::parse(name.as_str()).is_some());
            }
        }
    }
    if let Ok(q) = wire::parse_query(Some(&query)) {
        assert!((1..=25).contains(&q.max));
    }
    if let Ok(set) = wire::parse_set(p[2]) {
        assert!(set.value.expose().len() <= 25 * 1024);
    }
    let _ = wire::parse_update(p[2]);
    let _ = wire::parse_restore(p[2]);
    let _ = lanyard_keyvault::names::valid_vault_name(&path);
    let _ = lanyard_keyvault::vault::valid_access_policy_operation(&path);
}

// ------------------------------------------------------------------------------------------
// Blob storage

pub fn blob_requests(data: &[u8]) {
    use lanyard_blob::{headers, request, xml};
    let p = parts(data, 4);
    let path = text(p[0]);
    let query = request::Query::parse(Some(&text(p[1])));
    for method in [Method::GET, Method::HEAD, Method::PUT, Method::DELETE] {
        let _ = request::parse(&method, &path, &query);
    }
    // Header lines `name: value`, one per line.
    let mut map = HeaderMap::new();
    for line in p[2].split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        map.append(name, value);
    }
    let _ = headers::metadata(&map);
    if let Ok(Some(range)) = headers::requested_range(&map) {
        for size in [0u64, 1, 100, u64::MAX] {
            if let Ok((offset, length)) = range.clone().resolve(size) {
                // Inside the blob, and not empty.
                assert!(
                    length >= 1 && offset < size && length <= size - offset,
                    "{range:?}: offset {offset} length {length} outside a blob of {size}"
                );
            }
        }
    }
    let _ = headers::request_md5(&map);
    let _ = headers::content_length(&map);
    let conditions = headers::Conditions::from_headers(&map);
    let _ = conditions.check_write(None);
    let _ = xml::parse_block_list(p[3]);
}

#[cfg(test)]
mod replay {
    //! Runs every target over its committed seeds, then over seeded mutations of them, so a
    //! machine without cargo-fuzz (or a nightly compiler) still exercises the same bodies.

    use std::path::Path;

    type Target = fn(&[u8]);

    const TARGETS: &[(&str, Target)] = &[
        ("resource_id", super::resource_id),
        ("jwt_validate", super::jwt_validate),
        ("identity_query", super::identity_query),
        ("token_form", super::token_form),
        ("arm_bodies", super::arm_bodies),
        ("keyvault_requests", super::keyvault_requests),
        ("blob_requests", super::blob_requests),
    ];

    /// splitmix64: small, seeded, good enough to pick mutations.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: usize) -> usize {
            if n == 0 {
                0
            } else {
                (self.next() % n as u64) as usize
            }
        }
    }

    const INTERESTING: &[&[u8]] = &[
        b"\0",
        b"/",
        b"%",
        b"%2F",
        b"..",
        b"\"",
        b"{",
        b"}",
        b"[",
        b"]",
        b"null",
        b"true",
        b"-1",
        b"1e999",
        b"\xff",
        b"\xc3\x28",
        b"=",
        b"&",
        b"providers",
        b"'",
        b"\r\n",
    ];

    fn mutate(rng: &mut Rng, input: &[u8], seeds: &[Vec<u8>]) -> Vec<u8> {
        let mut out = input.to_vec();
        for _ in 0..=rng.below(4) {
            let at = rng.below(out.len() + 1);
            match rng.below(6) {
                0 if !out.is_empty() => {
                    let i = rng.below(out.len());
                    out[i] ^= 1 << rng.below(8);
                }
                1 if !out.is_empty() => {
                    let end = (at + rng.below(16)).min(out.len());
                    out.drain(at.min(end)..end);
                }
                2 => {
                    let token = INTERESTING[rng.below(INTERESTING.len())];
                    out.splice(at..at, token.iter().copied());
                }
                3 if !seeds.is_empty() => {
                    // Splice in part of another seed.
                    let other = &seeds[rng.below(seeds.len())];
                    let from = rng.below(other.len() + 1);
                    let to = (from + rng.below(64)).min(other.len());
                    out.splice(at..at, other[from..to].iter().copied());
                }
                4 => out.truncate(at),
                _ => {
                    let byte = rng.next() as u8;
                    out.insert(at, byte);
                }
            }
        }
        out
    }

    fn seeds(target: &str) -> Vec<Vec<u8>> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("seeds")
            .join(target);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("seeds of `{target}` in {}: {e}", dir.display()))
            .map(|e| e.expect("seed entry").path())
            .collect();
        files.sort();
        files
            .iter()
            .map(|f| std::fs::read(f).expect("seed file"))
            .collect()
    }

    #[test]
    fn seeds_and_mutations() {
        let rounds: usize = std::env::var("LANYARD_FUZZ_REPLAY_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2000);
        let seed: u64 = std::env::var("LANYARD_FUZZ_REPLAY_SEED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0x1a2b_3c4d);
        println!("replay seed {seed}, {rounds} mutations per target");
        for (name, target) in TARGETS {
            let seeds = seeds(name);
            assert!(!seeds.is_empty(), "`{name}` has no seeds");
            for s in &seeds {
                target(s);
            }
            let mut rng = Rng(seed ^ name.len() as u64);
            for _ in 0..rounds {
                let base = &seeds[rng.below(seeds.len())];
                let input = mutate(&mut rng, base, &seeds);
                target(&input);
            }
            println!("{name}: {} seeds, {rounds} mutations", seeds.len());
        }
    }
}
