//! The secrets API's bodies: requests parsed strictly (with errors that never echo a secret
//! value), answers shaped as Key Vault writes them (`SecretBundle`, `SecretItem`,
//! `DeletedSecretBundle`, pages with `nextLink`). Pure.

use std::collections::BTreeMap;
use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Map, Value};
use zeroize::Zeroizing;

use crate::errors::KvError;
use crate::stored::{Attributes, DeletedDoc, SecretMeta};
use crate::vault::VaultSettings;

/// Largest secret value Key Vault accepts, in bytes.
pub const MAX_VALUE_BYTES: usize = 25 * 1024;
/// Most tags a secret may carry.
pub const MAX_TAGS: usize = 15;
const MAX_TAG_NAME: usize = 512;
const MAX_TAG_VALUE: usize = 256;
const MAX_CONTENT_TYPE: usize = 255;
/// `maxresults` bounds and default.
pub const MAX_PAGE: u32 = 25;
/// The api-version echoed in `nextLink` when the request had none.
pub const DEFAULT_API_VERSION: &str = "7.5";

/// A secret value in memory: wiped on drop, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(Zeroizing<String>);

impl SecretValue {
    pub fn new(value: String) -> Self {
        Self(Zeroizing::new(value))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue(<redacted>)")
    }
}

/// Attribute changes a request asks for; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttributeChange {
    pub enabled: Option<bool>,
    pub nbf: Option<i64>,
    pub exp: Option<i64>,
}

impl AttributeChange {
    /// New attributes at `now`: enabled unless told otherwise.
    pub fn create(&self, now: i64) -> Attributes {
        Attributes {
            enabled: self.enabled.unwrap_or(true),
            nbf: self.nbf,
            exp: self.exp,
            created: now,
            updated: now,
        }
    }

    pub fn apply(&self, to: &mut Attributes, now: i64) {
        if let Some(e) = self.enabled {
            to.enabled = e;
        }
        if let Some(n) = self.nbf {
            to.nbf = Some(n);
        }
        if let Some(x) = self.exp {
            to.exp = Some(x);
        }
        to.updated = now;
    }
}

/// `PUT /secrets/{name}`.
#[derive(Debug, Clone)]
pub struct SetSecret {
    pub value: SecretValue,
    pub content_type: Option<String>,
    pub tags: Option<BTreeMap<String, String>>,
    pub attributes: AttributeChange,
}

/// `PATCH /secrets/{name}/{version}`.
#[derive(Debug, Clone, Default)]
pub struct UpdateSecret {
    pub content_type: Option<String>,
    pub tags: Option<BTreeMap<String, String>>,
    pub attributes: AttributeChange,
}

fn object(body: &[u8]) -> Result<Map<String, Value>, KvError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(KvError::bad("The request body is required."));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(KvError::bad("The request body must be a JSON object.")),
        // serde's message names a position, never the input's text.
        Err(e) => Err(KvError::bad(format!(
            "The request body is not valid JSON (line {}, column {}).",
            e.line(),
            e.column()
        ))),
    }
}

fn present<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    m.get(key).filter(|v| !v.is_null())
}

fn content_type(m: &Map<String, Value>) -> Result<Option<String>, KvError> {
    match present(m, "contentType") {
        None => Ok(None),
        Some(Value::String(s)) if s.len() <= MAX_CONTENT_TYPE => Ok(Some(s.clone())),
        Some(Value::String(_)) => Err(KvError::bad(format!(
            "The property 'contentType' is longer than {MAX_CONTENT_TYPE} characters."
        ))),
        Some(_) => Err(KvError::bad("The property 'contentType' must be a string.")),
    }
}

fn tags(m: &Map<String, Value>) -> Result<Option<BTreeMap<String, String>>, KvError> {
    let Some(v) = present(m, "tags") else {
        return Ok(None);
    };
    let obj = v
        .as_object()
        .ok_or_else(|| KvError::bad("The property 'tags' must be an object of strings."))?;
    if obj.len() > MAX_TAGS {
        return Err(KvError::bad(format!(
            "A secret carries at most {MAX_TAGS} tags; the request has {}.",
            obj.len()
        )));
    }
    let mut out = BTreeMap::new();
    for (k, v) in obj {
        let Value::String(s) = v else {
            return Err(KvError::bad(format!(
                "The value of tag '{k}' must be a string."
            )));
        };
        if k.is_empty() || k.len() > MAX_TAG_NAME || s.len() > MAX_TAG_VALUE {
            return Err(KvError::bad(format!(
                "Tag names are 1 to {MAX_TAG_NAME} characters and tag values at most {MAX_TAG_VALUE}."
            )));
        }
        out.insert(k.clone(), s.clone());
    }
    Ok(Some(out))
}

fn attributes(m: &Map<String, Value>) -> Result<AttributeChange, KvError> {
    let Some(v) = present(m, "attributes") else {
        return Ok(AttributeChange::default());
    };
    let a = v
        .as_object()
        .ok_or_else(|| KvError::bad("The property 'attributes' must be an object."))?;
    let enabled = match present(a, "enabled") {
        None => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => {
            return Err(KvError::bad(
                "The attribute 'enabled' must be true or false.",
            ))
        }
    };
    let time = |name: &str| match present(a, name) {
        None => Ok(None),
        Some(v) => v.as_i64().filter(|t| *t >= 0).map(Some).ok_or_else(|| {
            KvError::bad(format!(
                "The attribute '{name}' must be a time in whole seconds since 1970-01-01."
            ))
        }),
    };
    Ok(AttributeChange {
        enabled,
        nbf: time("nbf")?,
        exp: time("exp")?,
    })
}

/// Parses a set request. The value's size is checked before anything is kept.
pub fn parse_set(body: &[u8]) -> Result<SetSecret, KvError> {
    let mut m = object(body)?;
    let value = match m.remove("value") {
        Some(Value::String(s)) => SecretValue::new(s),
        None | Some(Value::Null) => return Err(KvError::bad("The property 'value' is required.")),
        // Not echoed: it may be the secret written the wrong way.
        Some(_) => return Err(KvError::bad("The property 'value' must be a string.")),
    };
    if value.expose().len() > MAX_VALUE_BYTES {
        return Err(KvError::ValueTooLarge {
            size: value.expose().len(),
            limit: MAX_VALUE_BYTES,
        });
    }
    Ok(SetSecret {
        value,
        content_type: content_type(&m)?,
        tags: tags(&m)?,
        attributes: attributes(&m)?,
    })
}

/// Parses an update request (an empty body changes nothing but `updated`).
pub fn parse_update(body: &[u8]) -> Result<UpdateSecret, KvError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(UpdateSecret::default());
    }
    let m = object(body)?;
    if m.contains_key("value") {
        return Err(KvError::bad(
            "A secret's value cannot be updated; set a new version with PUT /secrets/{name}.",
        ));
    }
    Ok(UpdateSecret {
        content_type: content_type(&m)?,
        tags: tags(&m)?,
        attributes: attributes(&m)?,
    })
}

/// Parses a restore request: the backup blob.
pub fn parse_restore(body: &[u8]) -> Result<String, KvError> {
    let m = object(body)?;
    match present(&m, "value") {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        _ => Err(KvError::bad(
            "The property 'value' is required and must be the backup blob (a string).",
        )),
    }
}

/// Where a vault's ids point and how its secrets are retained.
#[derive(Debug, Clone, Copy)]
pub struct Shape<'a> {
    /// `https://{vault}.vault.{domain}[:{port}]`, no trailing slash.
    pub vault_url: &'a str,
    pub settings: &'a VaultSettings,
}

impl Shape<'_> {
    fn attributes(&self, a: &Attributes) -> Value {
        let mut v = json!({
            "enabled": a.enabled,
            "created": a.created,
            "updated": a.updated,
            "recoveryLevel": self.settings.recovery_level(),
            "recoverableDays": self.settings.retention_days,
        });
        if let Some(n) = a.nbf {
            v["nbf"] = json!(n);
        }
        if let Some(x) = a.exp {
            v["exp"] = json!(x);
        }
        v
    }

    fn secret_id(&self, name: &str, version: Option<&str>) -> String {
        match version {
            Some(v) => format!("{}/secrets/{name}/{v}", self.vault_url),
            None => format!("{}/secrets/{name}", self.vault_url),
        }
    }

    fn common(&self, meta: &SecretMeta, id: String) -> Value {
        let mut v = json!({
            "id": id,
            "attributes": self.attributes(&meta.attributes),
        });
        if let Some(ct) = &meta.content_type {
            v["contentType"] = json!(ct);
        }
        if let Some(t) = &meta.tags {
            v["tags"] = json!(t);
        }
        v
    }

    /// `SecretBundle`, with the value only when given.
    pub fn bundle(&self, meta: &SecretMeta, value: Option<&SecretValue>) -> Value {
        let mut v = self.common(meta, self.secret_id(&meta.name, Some(&meta.version)));
        if let Some(value) = value {
            v["value"] = json!(value.expose());
        }
        v
    }

    /// `SecretItem`: the secret's id (list), or the version's (list versions).
    pub fn item(&self, meta: &SecretMeta, with_version: bool) -> Value {
        let version = with_version.then_some(meta.version.as_str());
        self.common(meta, self.secret_id(&meta.name, version))
    }

    fn deleted_common(&self, d: &DeletedDoc, id: String) -> Value {
        let mut v = self.common(&d.meta, id);
        v["recoveryId"] = json!(format!("{}/deletedsecrets/{}", self.vault_url, d.meta.name));
        v["deletedDate"] = json!(d.deleted_date);
        v["scheduledPurgeDate"] = json!(d.scheduled_purge_date);
        v
    }

    /// `DeletedSecretBundle` (never with the value).
    pub fn deleted_bundle(&self, d: &DeletedDoc) -> Value {
        self.deleted_common(d, self.secret_id(&d.meta.name, Some(&d.meta.version)))
    }

    /// `DeletedSecretItem`.
    pub fn deleted_item(&self, d: &DeletedDoc) -> Value {
        self.deleted_common(d, self.secret_id(&d.meta.name, None))
    }

    /// A `nextLink` for `path` (e.g. `/secrets`) continuing after `token`.
    pub fn next_link(&self, path: &str, query: &ListQuery, token: &str) -> String {
        let api: String = form_urlencoded::byte_serialize(query.api_version.as_bytes()).collect();
        format!(
            "{}{path}?api-version={api}&$skiptoken={token}&maxresults={}",
            self.vault_url, query.max
        )
    }
}

/// A page: `{"value": [...], "nextLink": ...}`.
pub fn page(items: Vec<Value>, next_link: Option<String>) -> Value {
    json!({ "value": items, "nextLink": next_link })
}

/// The query of a request, as far as this API reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    pub api_version: String,
    /// `maxresults`, 1 to 25.
    pub max: u32,
    /// `$skiptoken`, decoded: the key to continue after.
    pub after: Option<String>,
}

/// Reads `api-version` (any accepted), `maxresults` and `$skiptoken`.
pub fn parse_query(query: Option<&str>) -> Result<ListQuery, KvError> {
    let mut api_version = None;
    let mut max = None;
    let mut token = None;
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if k.eq_ignore_ascii_case("api-version") {
            api_version.get_or_insert_with(|| v.to_string());
        } else if k.eq_ignore_ascii_case("maxresults") {
            max.get_or_insert_with(|| v.to_string());
        } else if k.eq_ignore_ascii_case("$skiptoken") {
            token.get_or_insert_with(|| v.to_string());
        }
    }
    let max = match max {
        None => MAX_PAGE,
        Some(m) => m
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| {
                KvError::bad(format!(
                    "The value '{m}' of 'maxresults' is invalid: it must be a number from 1 to {MAX_PAGE}."
                ))
            })?,
    };
    let after = token
        .filter(|t| !t.is_empty())
        .map(|t| decode_token(&t))
        .transpose()?;
    Ok(ListQuery {
        api_version: api_version
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| DEFAULT_API_VERSION.to_string()),
        max,
        after,
    })
}

/// A `$skiptoken` for continuing after `key` (a lower-cased name or a version).
pub fn encode_token(key: &str) -> String {
    URL_SAFE_NO_PAD.encode(key.as_bytes())
}

fn decode_token(token: &str) -> Result<String, KvError> {
    let bad = || {
        KvError::bad("The '$skiptoken' is invalid; use the nextLink of the previous page as is.")
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('=').as_bytes())
        .map_err(|_| bad())?;
    let key = String::from_utf8(bytes).map_err(|_| bad())?;
    let plausible = !key.is_empty()
        && key.len() <= crate::names::MAX_SECRET_NAME
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    plausible.then_some(key).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_requests() {
        let s = parse_set(br#"{"value":"hunter2","contentType":"text/plain","tags":{"a":"b"},"attributes":{"enabled":false,"exp":2000000000}}"#).unwrap();
        assert_eq!(s.value.expose(), "hunter2");
        assert_eq!(s.attributes.enabled, Some(false));
        assert_eq!(s.attributes.exp, Some(2_000_000_000));
        assert!(!format!("{s:?}").contains("hunter2"));
        for bad in [
            &b""[..],
            b"[]",
            b"{",
            br#"{"contentType":"x"}"#,
            br#"{"value":12345}"#,
            br#"{"value":"x","tags":{"a":1}}"#,
            br#"{"value":"x","attributes":{"exp":"soon"}}"#,
            br#"{"value":"x","attributes":{"enabled":"yes"}}"#,
            br#"{"value":"x","attributes":[]}"#,
        ] {
            let e = parse_set(bad).unwrap_err();
            assert!(
                matches!(e, KvError::BadParameter(_)),
                "{}",
                String::from_utf8_lossy(bad)
            );
            assert!(!e.to_string().contains("12345"));
        }
        let big = format!(r#"{{"value":"{}"}}"#, "x".repeat(MAX_VALUE_BYTES + 1));
        assert!(matches!(
            parse_set(big.as_bytes()),
            Err(KvError::ValueTooLarge { .. })
        ));
        let exact = format!(r#"{{"value":"{}"}}"#, "x".repeat(MAX_VALUE_BYTES));
        assert!(parse_set(exact.as_bytes()).is_ok());
    }

    #[test]
    fn update_requests() {
        assert_eq!(
            parse_update(b"").unwrap().attributes,
            AttributeChange::default()
        );
        let u = parse_update(br#"{"attributes":{"enabled":false},"tags":{}}"#).unwrap();
        assert_eq!(u.attributes.enabled, Some(false));
        assert_eq!(u.tags, Some(BTreeMap::new()));
        assert!(parse_update(br#"{"value":"x"}"#).is_err());
    }

    #[test]
    fn queries_and_tokens() {
        let q = parse_query(Some("api-version=7.5&maxresults=2")).unwrap();
        assert_eq!((q.api_version.as_str(), q.max, q.after), ("7.5", 2, None));
        assert_eq!(parse_query(None).unwrap().max, 25);
        for bad in [
            "maxresults=0",
            "maxresults=26",
            "maxresults=x",
            "$skiptoken=%%%",
            "$skiptoken=Lw",
        ] {
            assert!(parse_query(Some(bad)).is_err(), "{bad}");
        }
        let t = encode_token("db-password");
        let q = parse_query(Some(&format!("$skiptoken={t}"))).unwrap();
        assert_eq!(q.after.as_deref(), Some("db-password"));
    }

    #[test]
    fn shapes() {
        let settings = VaultSettings::from_body(&json!({}), uuid::Uuid::nil());
        let shape = Shape {
            vault_url: "https://kv1.vault.x:1",
            settings: &settings,
        };
        let meta = SecretMeta {
            name: "Db".into(),
            version: "v1".into(),
            content_type: None,
            tags: None,
            attributes: AttributeChange::default().create(5),
        };
        let b = shape.bundle(&meta, Some(&SecretValue::new("s".into())));
        assert_eq!(b["id"], "https://kv1.vault.x:1/secrets/Db/v1");
        assert_eq!(b["value"], "s");
        assert_eq!(b["attributes"]["recoveryLevel"], "Recoverable+Purgeable");
        assert_eq!(b["attributes"]["recoverableDays"], 90);
        assert_eq!(
            shape.item(&meta, false)["id"],
            "https://kv1.vault.x:1/secrets/Db"
        );
        let d = DeletedDoc {
            meta,
            deleted_date: 10,
            scheduled_purge_date: 20,
        };
        let v = shape.deleted_bundle(&d);
        assert_eq!(v["recoveryId"], "https://kv1.vault.x:1/deletedsecrets/Db");
        assert!(v.get("value").is_none());
        let q = parse_query(Some("api-version=2026-04-01&maxresults=1")).unwrap();
        assert_eq!(
            shape.next_link("/secrets", &q, "ZGI"),
            "https://kv1.vault.x:1/secrets?api-version=2026-04-01&$skiptoken=ZGI&maxresults=1"
        );
    }
}
