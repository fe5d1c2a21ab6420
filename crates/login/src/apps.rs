//! App registrations: how an application, its service principal and its credentials are
//! stored, and how Microsoft Graph shows them. Pure: records in, JSON and records out.
//!
//! Model (the simplest that keeps `appId` = client id):
//! - An application and its service principal are **one** [`Principal`]
//!   (`ServicePrincipal { client_id: appId, source: Application }`). Its object id is both the
//!   application's `id` and the service principal's `id` in Graph. Deleting either deletes
//!   both, with every credential and role assignment.
//! - Settings of the application that no other part of Lanyard reads live in one
//!   [`CredentialRecord`] of kind `application` ([`ApplicationSettings`]): whether the
//!   service principal exists yet (`POST /servicePrincipals`), the access-token version the
//!   application wants as a resource, identifier URIs. A principal without that record (the
//!   bootstrap administrator) is an application whose service principal exists.
//! - Credentials are records of kind `secret` (`{"displayName","hash","startDateTime","endDateTime"}`,
//!   only a salted hash of the value), `certificate` (`{"displayName","certificate"}`, the
//!   public certificate) and `federated` (`{"name","issuer","subject","audiences","description"}`).
//!   A record's id is the Graph `keyId` (secrets, certificates) or `id` (federated).

use lanyard_domain::{Principal, PrincipalKind, ServicePrincipalSource, Tenant};
use lanyard_storage::CredentialRecord;
use lanyard_token::credentials::CertificateCredential;
use lanyard_token::{FederatedCredential, SecretHash, TokenVersion};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use uuid::Uuid;

pub const KIND_APPLICATION: &str = "application";
pub const KIND_SECRET: &str = "secret";
pub const KIND_CERTIFICATE: &str = "certificate";
pub const KIND_FEDERATED: &str = "federated";

/// Default lifetime of a password added without `endDateTime`: two years, as Graph.
pub const DEFAULT_PASSWORD_LIFETIME: time::Duration = time::Duration::days(2 * 365);

/// What an application record holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationSettings {
    /// `api.requestedAccessTokenVersion` (`accessTokenAcceptedVersion` in the manifest):
    /// `2` makes the v2 endpoint issue v2 tokens for this application as a resource.
    #[serde(default)]
    pub requested_access_token_version: Option<u8>,
    #[serde(default = "yes")]
    pub service_principal: bool,
    #[serde(default)]
    pub identifier_uris: Vec<String>,
    #[serde(default)]
    pub description: Option<String>,
}

fn yes() -> bool {
    true
}

impl Default for ApplicationSettings {
    fn default() -> Self {
        Self {
            requested_access_token_version: None,
            service_principal: true,
            identifier_uris: Vec::new(),
            description: None,
        }
    }
}

impl ApplicationSettings {
    /// The access-token version this application wants when it is the resource.
    pub fn token_version(&self) -> TokenVersion {
        if self.requested_access_token_version == Some(2) {
            TokenVersion::V2
        } else {
            TokenVersion::V1
        }
    }
}

#[derive(Debug, Clone)]
pub struct SecretEntry {
    pub key_id: Uuid,
    pub display_name: Option<String>,
    pub hash: SecretHash,
    pub start: OffsetDateTime,
    pub end: Option<OffsetDateTime>,
}

impl SecretEntry {
    /// Whether `candidate` is this secret and it is within its validity at `now`.
    pub fn accepts(&self, candidate: &str, now: OffsetDateTime) -> bool {
        self.end.is_none_or(|end| now <= end) && self.hash.verify(candidate)
    }
}

#[derive(Debug, Clone)]
pub struct CertificateEntry {
    pub key_id: Uuid,
    pub display_name: Option<String>,
    pub certificate: CertificateCredential,
}

#[derive(Debug, Clone)]
pub struct FederatedEntry {
    pub id: Uuid,
    pub description: Option<String>,
    pub credential: FederatedCredential,
}

/// A principal's credential records, parsed. Records that do not parse are skipped (and
/// logged): one corrupt record must not lock an application out of its other credentials.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// The `application` record's id and settings, if there is one.
    pub application: Option<(Uuid, ApplicationSettings)>,
    pub secrets: Vec<SecretEntry>,
    pub certificates: Vec<CertificateEntry>,
    pub federated: Vec<FederatedEntry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SecretBody {
    #[serde(default)]
    display_name: Option<String>,
    hash: SecretHash,
    #[serde(default)]
    start_date_time: Option<String>,
    #[serde(default)]
    end_date_time: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CertificateBody {
    #[serde(default)]
    display_name: Option<String>,
    certificate: CertificateCredential,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FederatedBody {
    name: String,
    issuer: String,
    subject: String,
    audiences: Vec<String>,
    #[serde(default)]
    description: Option<String>,
}

fn parse_time(s: &Option<String>) -> Option<OffsetDateTime> {
    s.as_deref()
        .and_then(|s| OffsetDateTime::parse(s, &Rfc3339).ok())
}

impl Credentials {
    pub fn from_records(records: &[CredentialRecord]) -> Self {
        let mut out = Self::default();
        for record in records {
            let body = record.body.clone();
            let parsed = match record.kind.as_str() {
                KIND_APPLICATION => serde_json::from_value::<ApplicationSettings>(body)
                    .map(|s| out.application = Some((record.id, s))),
                KIND_SECRET => serde_json::from_value::<SecretBody>(body).map(|b| {
                    out.secrets.push(SecretEntry {
                        key_id: record.id,
                        display_name: b.display_name,
                        hash: b.hash,
                        start: parse_time(&b.start_date_time).unwrap_or(record.created_at),
                        end: parse_time(&b.end_date_time),
                    })
                }),
                KIND_CERTIFICATE => serde_json::from_value::<CertificateBody>(body).map(|b| {
                    out.certificates.push(CertificateEntry {
                        key_id: record.id,
                        display_name: b.display_name,
                        certificate: b.certificate,
                    })
                }),
                KIND_FEDERATED => serde_json::from_value::<FederatedBody>(body).map(|b| {
                    out.federated.push(FederatedEntry {
                        id: record.id,
                        description: b.description,
                        credential: FederatedCredential {
                            name: b.name,
                            issuer: b.issuer,
                            subject: b.subject,
                            audiences: b.audiences,
                        },
                    })
                }),
                _ => Ok(()),
            };
            if let Err(e) = parsed {
                tracing::warn!(credential = %record.id, kind = %record.kind, error = %e, "skipping an unreadable credential record");
            }
        }
        out
    }

    /// The application's settings (defaults when it has no record).
    pub fn settings(&self) -> ApplicationSettings {
        self.application
            .as_ref()
            .map(|(_, s)| s.clone())
            .unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------------------
// Records

pub fn settings_record(
    id: Uuid,
    principal: Uuid,
    settings: &ApplicationSettings,
    now: OffsetDateTime,
) -> CredentialRecord {
    CredentialRecord {
        id,
        principal_id: principal,
        kind: KIND_APPLICATION.into(),
        body: serde_json::to_value(settings).unwrap_or(Value::Null),
        created_at: now,
    }
}

pub fn secret_record(
    key_id: Uuid,
    principal: Uuid,
    display_name: Option<&str>,
    hash: &SecretHash,
    start: OffsetDateTime,
    end: OffsetDateTime,
) -> CredentialRecord {
    CredentialRecord {
        id: key_id,
        principal_id: principal,
        kind: KIND_SECRET.into(),
        body: json!({
            "displayName": display_name,
            "hash": hash,
            "startDateTime": graph_time(start),
            "endDateTime": graph_time(end),
        }),
        created_at: start,
    }
}

pub fn certificate_record(
    key_id: Uuid,
    principal: Uuid,
    display_name: Option<&str>,
    certificate: &CertificateCredential,
    now: OffsetDateTime,
) -> CredentialRecord {
    CredentialRecord {
        id: key_id,
        principal_id: principal,
        kind: KIND_CERTIFICATE.into(),
        body: json!({ "displayName": display_name, "certificate": certificate }),
        created_at: now,
    }
}

pub fn federated_record(
    id: Uuid,
    principal: Uuid,
    credential: &FederatedCredential,
    description: Option<&str>,
    now: OffsetDateTime,
) -> CredentialRecord {
    CredentialRecord {
        id,
        principal_id: principal,
        kind: KIND_FEDERATED.into(),
        body: json!({
            "name": credential.name,
            "issuer": credential.issuer,
            "subject": credential.subject,
            "audiences": credential.audiences,
            "description": description,
        }),
        created_at: now,
    }
}

// ---------------------------------------------------------------------------------------
// Graph views

/// Graph's timestamps: `2024-01-09T02:02:12Z`.
pub fn graph_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Parses Graph's timestamps (RFC 3339; a missing offset means UTC, as Graph reads them).
pub fn parse_graph_time(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339)
        .ok()
        .or_else(|| OffsetDateTime::parse(&format!("{s}Z"), &Rfc3339).ok())
}

pub fn password_json(s: &SecretEntry, secret_text: Option<&str>) -> Value {
    json!({
        "customKeyIdentifier": null,
        "displayName": s.display_name,
        "endDateTime": s.end.map(graph_time),
        "hint": s.hash.hint,
        "keyId": s.key_id,
        "secretText": secret_text,
        "startDateTime": graph_time(s.start),
    })
}

pub fn key_json(c: &CertificateEntry) -> Value {
    let when = |t: i64| OffsetDateTime::from_unix_timestamp(t).ok().map(graph_time);
    json!({
        "customKeyIdentifier": c.certificate.thumbprint_hex(),
        "displayName": c.display_name,
        "endDateTime": when(c.certificate.not_after()),
        "key": null,
        "keyId": c.key_id,
        "startDateTime": when(c.certificate.not_before()),
        "type": "AsymmetricX509Cert",
        "usage": "Verify",
    })
}

pub fn federated_json(f: &FederatedEntry) -> Value {
    json!({
        "id": f.id,
        "name": f.credential.name,
        "issuer": f.credential.issuer,
        "subject": f.credential.subject,
        "description": f.description,
        "audiences": f.credential.audiences,
    })
}

/// `/v1.0/applications/{id}`.
pub fn application_json(p: &Principal, creds: &Credentials, tenant: &Tenant) -> Value {
    let settings = creds.settings();
    json!({
        "id": p.object_id,
        "appId": p.client_id(),
        "displayName": p.display_name,
        "description": settings.description,
        "signInAudience": "AzureADMyOrg",
        "publisherDomain": tenant.default_domain,
        "identifierUris": settings.identifier_uris,
        "api": { "requestedAccessTokenVersion": settings.requested_access_token_version },
        "passwordCredentials": creds.secrets.iter().map(|s| password_json(s, None)).collect::<Vec<_>>(),
        "keyCredentials": creds.certificates.iter().map(key_json).collect::<Vec<_>>(),
        "tags": [],
        "deletedDateTime": null,
    })
}

/// `/v1.0/servicePrincipals/{id}`.
pub fn service_principal_json(p: &Principal, tenant: &Tenant) -> Value {
    let (sp_type, alternative) = match &p.kind {
        PrincipalKind::ServicePrincipal {
            source: ServicePrincipalSource::SystemAssigned { host: r },
            ..
        }
        | PrincipalKind::ServicePrincipal {
            source: ServicePrincipalSource::UserAssigned { identity: r },
            ..
        } => (
            "ManagedIdentity",
            vec!["isExplicit=True".to_string(), r.as_str().to_string()],
        ),
        _ => ("Application", Vec::new()),
    };
    let app_id = p.client_id();
    json!({
        "id": p.object_id,
        "appId": app_id,
        "displayName": p.display_name,
        "appDisplayName": p.display_name,
        "accountEnabled": true,
        "appOwnerOrganizationId": tenant.id,
        "servicePrincipalType": sp_type,
        "servicePrincipalNames": app_id.map(|a| vec![a.to_string()]).unwrap_or_default(),
        "alternativeNames": alternative,
        "passwordCredentials": [],
        "keyCredentials": [],
        "tags": [],
        "deletedDateTime": null,
    })
}

/// Graph's collection envelope.
pub fn collection(context: &str, values: Vec<Value>) -> Value {
    json!({
        "@odata.context": format!("https://graph.microsoft.com/v1.0/$metadata#{context}"),
        "value": values,
    })
}

/// `$filter=appId eq '{guid}'` (or `displayName eq '...'`), the filters the az CLI sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    AppId(String),
    DisplayName(String),
}

impl Filter {
    pub fn parse(text: &str) -> Option<Self> {
        let (field, rest) = text.trim().split_once(char::is_whitespace)?;
        let (op, value) = rest.trim().split_once(char::is_whitespace)?;
        if !op.eq_ignore_ascii_case("eq") {
            return None;
        }
        let value = value
            .trim()
            .strip_prefix('\'')?
            .strip_suffix('\'')?
            .replace("''", "'");
        if field.eq_ignore_ascii_case("appId") {
            Some(Self::AppId(value))
        } else if field.eq_ignore_ascii_case("displayName") {
            Some(Self::DisplayName(value))
        } else {
            None
        }
    }

    pub fn matches(&self, p: &Principal) -> bool {
        match self {
            Self::AppId(a) => p
                .client_id()
                .is_some_and(|c| c.to_string().eq_ignore_ascii_case(a)),
            Self::DisplayName(n) => &p.display_name == n,
        }
    }
}

/// Federated identity credential names, as Graph and ARM allow them.
pub fn valid_fic_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (3..=120).contains(&bytes.len())
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn record(kind: &str, body: Value) -> CredentialRecord {
        CredentialRecord {
            id: Uuid::new_v4(),
            principal_id: Uuid::new_v4(),
            kind: kind.into(),
            body,
            created_at: OffsetDateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn records_round_trip_and_corrupt_ones_are_skipped() {
        let now = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let (secret, hash) = lanyard_token::generate_client_secret();
        let p = Uuid::new_v4();
        let fed = FederatedCredential {
            name: "gh".into(),
            issuer: "https://token.actions.githubusercontent.com".into(),
            subject: "repo:o/r:ref:refs/heads/main".into(),
            audiences: vec!["api://AzureADTokenExchange".into()],
        };
        let settings = ApplicationSettings {
            requested_access_token_version: Some(2),
            service_principal: false,
            ..Default::default()
        };
        let records = vec![
            settings_record(Uuid::new_v4(), p, &settings, now),
            secret_record(
                Uuid::new_v4(),
                p,
                Some("ci"),
                &hash,
                now,
                now + DEFAULT_PASSWORD_LIFETIME,
            ),
            federated_record(Uuid::new_v4(), p, &fed, None, now),
            record(KIND_CERTIFICATE, json!({"certificate": {"der": "AAAA"}})),
            record(KIND_SECRET, json!({"nothing": 1})),
            // The bootstrap administrator's record shape.
            record(
                KIND_SECRET,
                json!({"displayName": "bootstrap administrator", "hash": hash}),
            ),
        ];
        let creds = Credentials::from_records(&records);
        assert_eq!(creds.settings(), settings);
        assert_eq!(creds.settings().token_version(), TokenVersion::V2);
        assert_eq!(creds.secrets.len(), 2);
        assert!(creds.secrets[0].accepts(secret.expose(), now));
        assert!(!creds.secrets[0].accepts(secret.expose(), now + time::Duration::days(800)));
        assert!(!creds.secrets[0].accepts("nope", now));
        assert!(creds.secrets[1].accepts(secret.expose(), now + time::Duration::days(8000)));
        assert_eq!(creds.certificates.len(), 0);
        assert_eq!(creds.federated[0].credential, fed);

        let pw = password_json(&creds.secrets[0], None);
        assert_eq!(pw["hint"], secret.expose()[..3]);
        assert_eq!(pw["secretText"], Value::Null);
        assert_eq!(pw["startDateTime"], "2023-11-14T22:13:20Z");
        assert!(!pw.to_string().contains(secret.expose()));
    }

    #[test]
    fn settings_default_for_principals_without_a_record() {
        let s = Credentials::default().settings();
        assert!(s.service_principal);
        assert_eq!(s.token_version(), TokenVersion::V1);
    }

    #[test]
    fn filters_and_names() {
        assert_eq!(
            Filter::parse("appId eq 'ABC'"),
            Some(Filter::AppId("ABC".into()))
        );
        assert_eq!(
            Filter::parse("displayName  eq  'o''brien'"),
            Some(Filter::DisplayName("o'brien".into()))
        );
        assert_eq!(Filter::parse("startswith(displayName,'a')"), None);
        assert!(valid_fic_name("github-main_1"));
        assert!(!valid_fic_name("-x1"));
        assert!(!valid_fic_name("ab"));
        assert!(!valid_fic_name("a b c"));
        assert_eq!(
            parse_graph_time("2030-01-01T00:00:00"),
            parse_graph_time("2030-01-01T00:00:00Z")
        );
        assert!(parse_graph_time("2030-01-01T00:00:00.1234567Z").is_some());
    }
}
