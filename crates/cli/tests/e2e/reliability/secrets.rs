//! Secrets stay secret. The real `lanyard serve`, logging at `LANYARD_LOG=debug`, is made
//! to handle known secret values: client secrets from Graph `addPassword` (used, and also
//! a wrong one tried), Key Vault secret values (set, updated, backed up, deleted, recovered,
//! and one refused for lack of permission), access tokens, a session's identity header.
//! Then the database (SQLite: the file and its WAL, while running and after shutdown;
//! PostgreSQL: every row of every table), the blob directory and the server's log are
//! searched for each value, raw and encoded (base64 in all three alignments, base64url,
//! hex, JSON- and percent-escaped), and for the key material: the key-encryption key, the
//! CA's private key, and every signing key's PKCS#8 (unsealed here with the KEK). Controls
//! make sure the search would find things: a tag and a blob's content, both meant to be
//! stored, are found. Key files (`kek`, `ca-key.pem`, `admin.json`) and every other file
//! the server wrote (the database, blob content) but the public `ca.pem` and `endpoints.json`
//! are mode 0600.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use reqwest::Method;
use serde_json::json;

use super::kit::*;
use crate::both_backends;
use crate::support::{free_port, Backend};

both_backends!(secrets_never_reach_storage_or_logs);

/// Where a secret may legitimately be kept (file names in the data directory).
struct Secret {
    what: String,
    bytes: Vec<u8>,
    allowed_in: &'static [&'static str],
}

fn secret(what: impl Into<String>, value: impl AsRef<[u8]>) -> Secret {
    Secret {
        what: what.into(),
        bytes: value.as_ref().to_vec(),
        allowed_in: &[],
    }
}

async fn secrets_never_reach_storage_or_logs(backend: Backend) {
    let seed = seed(&format!("secrets::{backend:?}"));
    let mut rng = Rng::new(seed);
    let db = database(backend).await;
    let url = db.as_ref().map(|d| d.url().to_string());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let log = tmp.path().join("serve.log");
    let mut served = Served::start(
        &dir,
        free_port(),
        url.as_deref(),
        &log,
        &[("LANYARD_LOG", "debug")],
    );
    let t = served.ready(&dir).await;
    let mut secrets: Vec<Secret> = Vec::new();
    secrets.push(Secret {
        what: "the administrator's client secret".into(),
        bytes: t.admin.client_secret.clone().into_bytes(),
        allowed_in: &["admin.json"],
    });

    let arm = t.admin_token(ARM_SCOPE).await;
    let graph = t.admin_token(GRAPH_SCOPE).await;
    let kv = t.admin_token(VAULT_SCOPE).await;
    let st = t.admin_token(STORAGE_SCOPE).await;
    for (what, token) in [
        ("ARM", &arm),
        ("Graph", &graph),
        ("vault", &kv),
        ("storage", &st),
    ] {
        // The signature is what makes a token usable; it must never be stored or logged.
        secrets.push(secret(
            format!("the administrator's {what} token"),
            token.rsplit('.').next().unwrap(),
        ));
    }

    // Control data, meant to be stored: the search must find them.
    let tag_marker = format!("tagmarker{}", rng.word(16));
    let blob_marker = format!("blobcontentmarker{}", rng.word(16));

    let rg = format!("{}/resourceGroups/secrets", t.subscription());
    put_ok(
        &t,
        &arm,
        &format!("{rg}?{RG_API}"),
        &json!({"location": "local", "tags": {"t": tag_marker}}),
    )
    .await;

    // Client secrets: two passwords, both used; a wrong one tried.
    let app = create_app(&t, &graph, "secrets-app").await;
    secrets.push(secret("a Graph addPassword secret", &app.secret));
    let second = call(
        &t.http,
        Method::POST,
        &t.arm(&format!("/v1.0/applications/{}/addPassword", app.id)),
        bearer_json(
            &graph,
            &json!({"passwordCredential": {"displayName": "second"}}),
        ),
    )
    .await;
    assert!(
        second.status == 200 || second.status == 201,
        "{}",
        second.text
    );
    let second = second.json["secretText"].as_str().unwrap().to_string();
    secrets.push(secret("a second addPassword secret", &second));
    for s in [&app.secret, &second] {
        let token = t.token(&app.client_id, s, ARM_SCOPE).await;
        secrets.push(secret("an app's token", token.rsplit('.').next().unwrap()));
    }
    let wrong = format!("Wr0ng~{}", rng.word(30));
    let (status, _) = t.try_token(&app.client_id, &wrong, ARM_SCOPE).await;
    assert_eq!(status, 401);
    secrets.push(secret("a wrong client secret someone tried", &wrong));

    // Key Vault values.
    let vault = format!("{rg}/providers/Microsoft.KeyVault/vaults/kvsecrets");
    put_ok(
        &t,
        &arm,
        &format!("{vault}?{KV_API}"),
        &json!({"location": "local", "properties": {"tenantId": t.tenant(),
            "sku": {"family": "A", "name": "standard"}, "enableRbacAuthorization": true}}),
    )
    .await;
    assign(
        &t,
        &arm,
        &vault,
        KV_SECRETS_OFFICER,
        &t.admin.object_id.to_string(),
    )
    .await;
    let values = [
        format!("db-password-{}", rng.word(24)),
        format!("ünïcödé-ключ-🔑-{}", rng.word(12)),
        format!("{{\"json\": \"inside\", \"k\": \"{}\"}}", rng.word(20)),
        format!(
            "-----BEGIN FAKE KEY-----\n{}\n-----END FAKE KEY-----",
            rng.word(64)
        ),
    ];
    for (i, v) in values.iter().enumerate() {
        let r = call(
            &t.http,
            Method::PUT,
            &t.vault("kvsecrets", &format!("/secrets/s{i}?{SECRETS_API}")),
            bearer_json(&kv, &json!({"value": v, "contentType": "text/plain"})),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text);
        secrets.push(secret(format!("Key Vault value {i}"), v));
    }
    let kvurl = |p: &str| t.vault("kvsecrets", &format!("{p}?{SECRETS_API}"));
    let r = call(&t.http, Method::GET, &kvurl("/secrets/s0"), bearer(&kv)).await;
    assert_eq!(r.json["value"], values[0].as_str());
    let r = call(
        &t.http,
        Method::PATCH,
        &kvurl("/secrets/s0"),
        bearer_json(&kv, &json!({"tags": {"a": "b"}})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = call(
        &t.http,
        Method::POST,
        &kvurl("/secrets/s1/backup"),
        bearer(&kv),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = call(&t.http, Method::DELETE, &kvurl("/secrets/s2"), bearer(&kv)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = call(
        &t.http,
        Method::POST,
        &kvurl("/deletedsecrets/s2/recover"),
        bearer(&kv),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // A value someone without permission tried to write.
    let refused_value = format!("refused-{}", rng.word(24));
    let app_kv = t.token(&app.client_id, &app.secret, VAULT_SCOPE).await;
    let r = call(
        &t.http,
        Method::PUT,
        &kvurl("/secrets/nope"),
        bearer_json(&app_kv, &json!({"value": refused_value})),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text);
    secrets.push(secret("a value refused by RBAC", &refused_value));
    secrets.push(secret(
        "an app's vault token",
        app_kv.rsplit('.').next().unwrap(),
    ));

    // A blob with metadata, and a session's identity header.
    let account = format!("{rg}/providers/Microsoft.Storage/storageAccounts/stsecrets");
    put_ok(
        &t,
        &arm,
        &format!("{account}?{ACCOUNT_API}"),
        &json!({"location": "local", "kind": "StorageV2", "sku": {"name": "Standard_LRS"}}),
    )
    .await;
    assign(
        &t,
        &arm,
        &account,
        BLOB_CONTRIBUTOR,
        &t.admin.object_id.to_string(),
    )
    .await;
    let r = call(
        &t.http,
        Method::PUT,
        &t.blob("stsecrets", "/box1?restype=container"),
        bearer(&st),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = call(
        &t.http,
        Method::PUT,
        &t.blob("stsecrets", "/box1/hello.txt"),
        Req {
            token: Some(&st),
            body: Some((blob_marker.clone().into_bytes(), "text/plain")),
            headers: vec![
                ("x-ms-blob-type", "BlockBlob".into()),
                ("x-ms-meta-owner", "reliability".into()),
            ],
            ..Default::default()
        },
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let (_, session) = vm_with_session(&t, &arm, &rg, "vm1").await;
    let header = session["identityHeader"].as_str().unwrap().to_string();
    let session_id = session["id"].as_str().unwrap().to_string();
    let r = reqwest::Client::new()
        .get(format!(
            "{}?api-version=2019-08-01&resource=https://vault.azure.net",
            session["identityEndpoint"].as_str().unwrap()
        ))
        .header("X-IDENTITY-HEADER", &header)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mi: serde_json::Value = r.json().await.unwrap();
    secrets.push(secret("a session's identity header", &header));
    secrets.push(secret(
        "a managed identity's token",
        mi["access_token"]
            .as_str()
            .unwrap()
            .rsplit('.')
            .next()
            .unwrap(),
    ));

    // Key material.
    let kek_text = std::fs::read_to_string(dir.join("kek")).unwrap();
    let kek_raw = base64::engine::general_purpose::STANDARD
        .decode(kek_text.trim())
        .unwrap();
    secrets.push(Secret {
        what: "the key-encryption key".into(),
        bytes: kek_raw,
        allowed_in: &["kek"],
    });
    let ca_key = pem_body(&std::fs::read_to_string(dir.join("ca-key.pem")).unwrap());
    secrets.push(Secret {
        what: "the CA's private key".into(),
        bytes: ca_key,
        allowed_in: &["ca-key.pem"],
    });
    for (kid, pkcs8) in signing_keys(&dir, url.as_deref()).await {
        secrets.push(secret(format!("signing key {kid} (PKCS#8)"), pkcs8));
    }

    // 1. While running: the SQLite file and its WAL as they are now.
    let mut problems = Vec::new();
    let mut scanned = 0usize;
    let mut found_tag = false;
    if url.is_none() {
        let files = ["lanyard.db", "lanyard.db-wal", "lanyard.db-shm"];
        let mut bytes = Vec::new();
        for f in files {
            if let Ok(b) = std::fs::read(dir.join(f)) {
                bytes.extend(b);
            }
        }
        scanned += bytes.len();
        found_tag |= contains(&bytes, tag_marker.as_bytes());
        problems.extend(leaks(
            &secrets,
            "the running database (file + WAL)",
            &bytes,
            "lanyard.db",
        ));
    }

    // 2. Stopped cleanly: every file of the data directory, the blob tree and the log.
    let status = served.terminate();
    assert!(status.success(), "exit {status:?}");
    let mut found_blob = false;
    for path in files_under(&dir) {
        let rel = path.strip_prefix(&dir).unwrap().display().to_string();
        let bytes = std::fs::read(&path).unwrap();
        scanned += bytes.len();
        found_tag |= contains(&bytes, tag_marker.as_bytes());
        found_blob |= rel.starts_with("blobs") && contains(&bytes, blob_marker.as_bytes());
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        problems.extend(leaks(&secrets, &rel, &bytes, &name));
    }
    let log_bytes = std::fs::read(&log).unwrap();
    scanned += log_bytes.len();
    problems.extend(leaks(&secrets, "the server log", &log_bytes, "serve.log"));
    let debug_lines = String::from_utf8_lossy(&log_bytes)
        .lines()
        .filter(|l| l.contains("DEBUG"))
        .count();
    assert!(
        contains(&log_bytes, session_id.as_bytes()),
        "control: the session's id is not in the log; the search is blind"
    );
    assert!(
        debug_lines > 0,
        "the log has no debug lines: LANYARD_LOG=debug was not honoured"
    );

    // PostgreSQL: every row of every table, as text.
    if let Some(url) = &url {
        let dump = pg_dump(url).await;
        scanned += dump.len();
        found_tag |= contains(&dump, tag_marker.as_bytes());
        problems.extend(leaks(
            &secrets,
            "the PostgreSQL database",
            &dump,
            "postgres",
        ));
    }
    assert!(
        found_tag,
        "control: the group's tag was not found in the database; the search is blind"
    );
    assert!(
        found_blob,
        "control: the blob's content was not found under blobs/; the search is blind"
    );

    // Key files are private.
    let mut modes = BTreeMap::new();
    for name in ["kek", "ca-key.pem", "admin.json"] {
        let mode = std::fs::metadata(dir.join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        modes.insert(name.to_string(), mode);
    }
    // Every other file the server wrote too (database, blobs), but for the public ones.
    for path in files_under(&dir) {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !(path.parent() == Some(dir.as_path())
            && ["ca.pem", "endpoints.json"].contains(&name.as_str()))
        {
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            modes.insert(path.strip_prefix(&dir).unwrap().display().to_string(), mode);
        }
    }
    for (name, mode) in &modes {
        if *mode != 0o600 {
            problems.push(format!("{name} has mode {mode:o}, not 600"));
        }
    }
    let modes: BTreeMap<String, String> = modes
        .into_iter()
        .map(|(k, m)| (k, format!("{m:o}")))
        .collect();
    println!(
        "secrets::{backend:?}: {} secret values and keys searched for in {} bytes (database, data directory, blobs, {} log lines); file modes {modes:?}; {} leaks",
        secrets.len(),
        scanned,
        String::from_utf8_lossy(&log_bytes).lines().count(),
        problems.len()
    );
    assert!(problems.is_empty(), "seed {seed}:\n{}", problems.join("\n"));
    if let Some(db) = db {
        db.cleanup().await.unwrap();
    }
}

/// Where any secret (in any encoding) occurs in `bytes`, except where it may.
fn leaks(secrets: &[Secret], place: &str, bytes: &[u8], file: &str) -> Vec<String> {
    let index = Windows::of(bytes);
    let mut out = Vec::new();
    for s in secrets {
        if s.allowed_in.contains(&file) {
            continue;
        }
        for (encoding, needle) in encodings(&s.bytes) {
            if needle.len() >= 8 && index.might_hold(&needle) && contains(bytes, &needle) {
                out.push(format!("{} found in {place} ({encoding})", s.what));
                break;
            }
        }
    }
    out
}

/// Every 8-byte window of a haystack, so that most needles are ruled out at once.
struct Windows(std::collections::HashSet<u64>);

impl Windows {
    fn of(bytes: &[u8]) -> Self {
        Self(bytes.windows(8).map(word).collect())
    }

    fn might_hold(&self, needle: &[u8]) -> bool {
        self.0.contains(&word(&needle[..8])) && self.0.contains(&word(&needle[needle.len() - 8..]))
    }
}

fn word(w: &[u8]) -> u64 {
    u64::from_le_bytes(w[..8].try_into().unwrap())
}

/// The forms a value could be written in.
fn encodings(v: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    let mut out = vec![("raw", v.to_vec())];
    // base64 of the value at each alignment inside a longer encoded blob: only the middle,
    // which does not depend on the neighbouring bytes.
    for (name, engine) in [("base64", &STANDARD), ("base64url", &URL_SAFE_NO_PAD)] {
        for offset in 0..3usize {
            let mut padded = vec![0u8; offset];
            padded.extend_from_slice(v);
            let text = engine.encode(&padded);
            let start = if offset == 0 { 0 } else { 4 };
            let end = text.len().saturating_sub(4);
            if end > start {
                out.push((name, text.as_bytes()[start..end].to_vec()));
            }
        }
    }
    out.push(("hex", hex_lower(v).into_bytes()));
    out.push(("HEX", hex_lower(v).to_ascii_uppercase().into_bytes()));
    if let Ok(text) = std::str::from_utf8(v) {
        let json = serde_json::to_string(text).unwrap();
        out.push(("JSON-escaped", json.as_bytes()[1..json.len() - 1].to_vec()));
        out.push((
            "percent-encoded",
            urlencoding::encode(text).into_owned().into_bytes(),
        ));
        let ascii_json: String = text
            .chars()
            .map(|c| {
                if c.is_ascii() {
                    c.to_string()
                } else {
                    format!("\\u{:04x}", c as u32)
                }
            })
            .collect();
        out.push(("JSON \\u-escaped", ascii_json.into_bytes()));
    }
    out
}

fn hex_lower(v: &[u8]) -> String {
    v.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    if needle.is_empty() || needle.len() > haystack.len() {
        return false;
    }
    let last = haystack.len() - needle.len();
    let mut i = 0;
    while i <= last {
        match haystack[i..=last].iter().position(|&b| b == needle[0]) {
            None => return false,
            Some(p) => {
                i += p;
                if &haystack[i..i + needle.len()] == needle {
                    return true;
                }
                i += 1;
            }
        }
    }
    false
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The DER inside a PEM file.
fn pem_body(pem: &str) -> Vec<u8> {
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .unwrap()
}

/// Every stored signing key's PKCS#8, unsealed with the data directory's KEK.
async fn signing_keys(dir: &Path, url: Option<&str>) -> Vec<(String, Vec<u8>)> {
    let kek = lanyard_token::Kek::load_or_create(&dir.join("kek")).unwrap();
    let location = url
        .map(str::to_string)
        .unwrap_or_else(|| dir.join("lanyard.db").display().to_string());
    let store = lanyard_storage::open(&location).await.unwrap();
    let mut out = Vec::new();
    for record in store.keys().await.unwrap() {
        let stored: lanyard_token::StoredKey = serde_json::from_value(record.body).unwrap();
        // INVARIANT: the associated data `lanyard_token::keys` seals signing keys with.
        let aad = format!("lanyard-signing-key:{}", stored.kid);
        let pkcs8 = kek.open(&stored.sealed_pkcs8, aad.as_bytes()).unwrap();
        out.push((stored.kid, pkcs8));
    }
    assert!(!out.is_empty(), "no signing keys in the store");
    out
}

/// Every row of every table of the database at `url`, as JSON text.
async fn pg_dump(url: &str) -> Vec<u8> {
    use sqlx::{Connection, Row};
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    let tables: Vec<String> = sqlx::query(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap()
    .iter()
    .map(|r| r.get::<String, _>(0))
    .collect();
    assert!(!tables.is_empty());
    let mut out = Vec::new();
    for table in tables {
        let rows = sqlx::query(&format!("SELECT row_to_json(t)::text FROM \"{table}\" t"))
            .fetch_all(&mut conn)
            .await
            .unwrap();
        for r in rows {
            out.extend(r.get::<String, _>(0).into_bytes());
            out.push(b'\n');
        }
    }
    let _ = conn.close().await;
    out
}
