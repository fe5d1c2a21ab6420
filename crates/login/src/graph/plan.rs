//! What each Graph write commits, from the request and what it read (pure): the batch, with
//! an expectation on the principal it rests on, and the answer. The handlers in
//! [`super`] load, call these, and commit through the platform's write path.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use lanyard_domain::{Principal, PrincipalKind, ServicePrincipalSource};
use lanyard_platform::ApiError;
use lanyard_storage::{Batch, Change, Expect};
use lanyard_token::credentials::CertificateCredential;
use lanyard_token::FederatedCredential;
use serde::Deserialize;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::apps::{self, ApplicationSettings, Credentials, FederatedEntry};
use crate::errors::graph as err;

/// A new application named by `req`, in `tenant`, with its settings and certificates.
pub fn create_application(
    req: &ApplicationPatch,
    tenant: Uuid,
    now: OffsetDateTime,
) -> Result<(Batch, Principal), ApiError> {
    let name = req
        .display_name
        .clone()
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| err::bad_request("Property 'displayName' is required."))?;
    let principal = Principal {
        object_id: Uuid::new_v4(),
        tenant_id: tenant,
        display_name: name,
        kind: PrincipalKind::ServicePrincipal {
            client_id: Uuid::new_v4(),
            source: ServicePrincipalSource::Application,
        },
    };
    let mut settings = ApplicationSettings {
        service_principal: false,
        ..Default::default()
    };
    req.apply_settings(&mut settings)?;
    let mut batch = Batch::new()
        .with(Change::PutPrincipal(principal.clone()))
        .with(Change::PutCredential(apps::settings_record(
            Uuid::new_v4(),
            principal.object_id,
            &settings,
            now,
        )));
    if let Some(keys) = &req.key_credentials {
        for change in key_changes(principal.object_id, &Credentials::default(), keys, now)? {
            batch.push(change);
        }
    }
    Ok((batch, principal))
}

/// The application `p` (holding `creds`) changed as `req` says.
pub fn patch_application(
    req: &ApplicationPatch,
    mut p: Principal,
    creds: &Credentials,
    now: OffsetDateTime,
) -> Result<Batch, ApiError> {
    let mut batch = Batch::new().expect(Expect::PrincipalExists(p.object_id));
    if let Some(name) = &req.display_name {
        if name.trim().is_empty() {
            return Err(err::bad_request("Property 'displayName' cannot be empty."));
        }
        p.display_name = name.clone();
        batch.push(Change::PutPrincipal(p.clone()));
    }
    if req.touches_settings() {
        let mut settings = creds.settings();
        req.apply_settings(&mut settings)?;
        let record_id = creds
            .application
            .as_ref()
            .map_or_else(Uuid::new_v4, |(id, _)| *id);
        batch.push(Change::PutCredential(apps::settings_record(
            record_id,
            p.object_id,
            &settings,
            now,
        )));
    }
    if let Some(keys) = &req.key_credentials {
        for change in key_changes(p.object_id, creds, keys, now)? {
            batch.push(change);
        }
    }
    Ok(batch)
}

/// The principal `p` deleted with its credentials and role assignments, its tokens revoked;
/// the tenant's administrator (`admin`) stays.
pub fn delete_principal(p: &Principal, admin: Uuid) -> Result<Batch, ApiError> {
    if p.object_id == admin {
        return Err(err::bad_request(
            "The tenant's administrator cannot be deleted.",
        ));
    }
    let revoke = lanyard_platform::tokens::retirement(p.object_id);
    Ok(Batch::new()
        .expect(Expect::PrincipalExists(p.object_id))
        .with(Change::DeleteCredentialsOf(p.object_id))
        .with(Change::DeleteAssignmentsOfPrincipal(p.object_id))
        .with(Change::DeletePrincipal(p.object_id))
        .with(revoke))
}

/// The credential record `record` added to the principal `p`.
pub fn add_credential(p: &Principal, record: lanyard_storage::CredentialRecord) -> Batch {
    Batch::new()
        .expect(Expect::PrincipalExists(p.object_id))
        .with(Change::PutCredential(record))
}

/// The password `key_id` removed from `p`; 404 when `creds` has none of that id.
pub fn remove_password(
    p: &Principal,
    creds: &Credentials,
    key_id: Uuid,
) -> Result<Batch, ApiError> {
    if !creds.secrets.iter().any(|s| s.key_id == key_id) {
        return Err(err::not_found(&key_id.to_string()));
    }
    Ok(remove_credential(p, key_id))
}

/// The credential `key_id` removed from `p`.
pub fn remove_credential(p: &Principal, key_id: Uuid) -> Batch {
    Batch::new()
        .expect(Expect::PrincipalExists(p.object_id))
        .with(Change::DeleteCredential(key_id))
}

/// What a new federated identity credential must carry.
pub struct NewFederated {
    pub name: Option<String>,
    pub issuer: Option<String>,
    pub subject: Option<String>,
    pub audiences: Option<Vec<String>>,
    pub description: Option<String>,
}

/// A federated identity credential added to `p` (holding `creds`): checked, and unique by
/// name (409 otherwise).
pub fn create_federated(
    body: &NewFederated,
    p: &Principal,
    creds: &Credentials,
    now: OffsetDateTime,
) -> Result<(Batch, FederatedEntry), ApiError> {
    let required = |v: Option<String>, name: &str| {
        v.filter(|s| !s.trim().is_empty())
            .ok_or_else(|| err::bad_request(format!("Property '{name}' is required.")))
    };
    let name = required(body.name.clone(), "name")?;
    let issuer = required(body.issuer.clone(), "issuer")?;
    let subject = required(body.subject.clone(), "subject")?;
    if !apps::valid_fic_name(&name) {
        return Err(err::bad_request(format!(
            "Name '{name}' is invalid: 3 to 120 letters, digits, '-' or '_', starting with a letter or digit."
        )));
    }
    if !issuer.starts_with("https://") || issuer.len() > 600 || subject.len() > 600 {
        return Err(err::bad_request(
            "The issuer must be an https URL and issuer and subject at most 600 characters.",
        ));
    }
    let audiences = body.audiences.clone().unwrap_or_default();
    if audiences.len() != 1 || audiences.iter().any(|a| a.is_empty() || a.len() > 600) {
        return Err(err::bad_request(
            "Property 'audiences' must hold exactly one value.",
        ));
    }
    if creds
        .federated
        .iter()
        .any(|f| f.credential.name.eq_ignore_ascii_case(&name))
    {
        return Err(err::conflict(format!(
            "A federated identity credential named '{name}' already exists."
        )));
    }
    let entry = FederatedEntry {
        id: Uuid::new_v4(),
        description: body.description.clone(),
        credential: FederatedCredential {
            name,
            issuer,
            subject,
            audiences,
        },
    };
    let record = apps::federated_record(
        entry.id,
        p.object_id,
        &entry.credential,
        entry.description.as_deref(),
        now,
    );
    Ok((add_credential(p, record), entry))
}

/// The service principal of the application `app` (holding `creds`, whose client id is
/// `app_id`); 409 when it has one.
pub fn create_service_principal(
    app: &Principal,
    app_id: &str,
    creds: &Credentials,
    now: OffsetDateTime,
) -> Result<Batch, ApiError> {
    let mut settings = creds.settings();
    if settings.service_principal {
        return Err(err::conflict(format!(
            "A service principal for application '{app_id}' already exists."
        )));
    }
    settings.service_principal = true;
    let record_id = creds
        .application
        .as_ref()
        .map_or_else(Uuid::new_v4, |(id, _)| *id);
    Ok(add_credential(
        app,
        apps::settings_record(record_id, app.object_id, &settings, now),
    ))
}

/// The writable properties of an application (POST and PATCH).
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationPatch {
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    identifier_uris: Option<Vec<String>>,
    #[serde(default)]
    api: Option<ApiSettings>,
    /// The manifest's name for `api.requestedAccessTokenVersion`.
    #[serde(default)]
    access_token_accepted_version: Option<Option<u8>>,
    #[serde(default)]
    key_credentials: Option<Vec<KeyCredentialRequest>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ApiSettings {
    #[serde(default)]
    requested_access_token_version: Option<Option<u8>>,
}

impl ApplicationPatch {
    pub fn touches_settings(&self) -> bool {
        self.description.is_some()
            || self.identifier_uris.is_some()
            || self.access_token_accepted_version.is_some()
            || self
                .api
                .as_ref()
                .is_some_and(|a| a.requested_access_token_version.is_some())
    }

    pub fn apply_settings(&self, settings: &mut ApplicationSettings) -> Result<(), ApiError> {
        let version = self
            .api
            .as_ref()
            .and_then(|a| a.requested_access_token_version)
            .or(self.access_token_accepted_version);
        if let Some(v) = version {
            if !matches!(v, None | Some(1) | Some(2)) {
                return Err(err::bad_request(
                    "requestedAccessTokenVersion must be null, 1 or 2.",
                ));
            }
            settings.requested_access_token_version = v;
        }
        if let Some(uris) = &self.identifier_uris {
            settings.identifier_uris = uris.clone();
        }
        if let Some(d) = &self.description {
            settings.description = Some(d.clone());
        }
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyCredentialRequest {
    #[serde(default, rename = "type")]
    key_type: Option<String>,
    #[serde(default)]
    usage: Option<String>,
    /// Base64 of the certificate's DER (or of its PEM).
    #[serde(default)]
    key: Option<String>,
    #[serde(default)]
    key_id: Option<Uuid>,
    #[serde(default)]
    display_name: Option<String>,
}

/// The changes that make an application's certificates exactly `wanted`: entries with a
/// `key` are added (or replace the certificate with their `keyId`), entries with only the
/// `keyId` of a registered certificate keep it, and every other certificate is removed.
fn key_changes(
    principal: Uuid,
    existing: &Credentials,
    wanted: &[KeyCredentialRequest],
    now: time::OffsetDateTime,
) -> Result<Vec<Change>, ApiError> {
    let mut keep = Vec::new();
    let mut changes = Vec::new();
    for entry in wanted {
        let ty = entry.key_type.as_deref().unwrap_or("AsymmetricX509Cert");
        if !ty.eq_ignore_ascii_case("AsymmetricX509Cert") {
            return Err(err::bad_request(format!(
                "Key credential type '{ty}' is not supported; use 'AsymmetricX509Cert'."
            )));
        }
        let usage = entry.usage.as_deref().unwrap_or("Verify");
        if !usage.eq_ignore_ascii_case("Verify") {
            return Err(err::bad_request(format!(
                "Key credential usage '{usage}' is not supported; use 'Verify'."
            )));
        }
        match (&entry.key, entry.key_id) {
            (Some(key), key_id) => {
                let certificate = parse_certificate(key)?;
                let key_id = key_id.unwrap_or_else(Uuid::new_v4);
                keep.push(key_id);
                changes.push(Change::PutCredential(apps::certificate_record(
                    key_id,
                    principal,
                    entry.display_name.as_deref(),
                    &certificate,
                    now,
                )));
            }
            (None, Some(key_id)) if existing.certificates.iter().any(|c| c.key_id == key_id) => {
                keep.push(key_id);
            }
            (None, _) => {
                return Err(err::bad_request(
                    "A new key credential needs its 'key' (the base64 certificate).",
                ))
            }
        }
    }
    for c in &existing.certificates {
        if !keep.contains(&c.key_id) {
            changes.push(Change::DeleteCredential(c.key_id));
        }
    }
    Ok(changes)
}

fn parse_certificate(key: &str) -> Result<CertificateCredential, ApiError> {
    let compact: String = key.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let bytes = STANDARD
        .decode(compact)
        .map_err(|_| err::bad_request("Key credential 'key' is not base64."))?;
    let parsed = if bytes.starts_with(b"-----BEGIN") {
        CertificateCredential::from_pem(&String::from_utf8_lossy(&bytes))
    } else {
        CertificateCredential::from_der(&bytes)
    };
    parsed.map_err(|e| err::bad_request(format!("Key credential 'key' is not usable: {e}.")))
}
