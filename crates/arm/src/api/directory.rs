//! The directory as ARM shows it: cloud metadata, tenants, subscriptions.

use axum::response::Response;
use lanyard_domain::hosts;
use lanyard_platform::ApiError;
use serde_json::json;

use super::json;
use crate::errors::ArmError;
use crate::request::Call;
use crate::{shape, Arm};

/// `GET /metadata/endpoints`: one cloud description, as `az cloud register` reads it.
/// Anonymous, like Azure's. Each hosted data plane's suffix comes from
/// [`lanyard_domain::hosts`]: a vault's host is `{name}.` + `keyVaultDns`, an account's
/// `{name}.blob.` + `storage`.
pub fn metadata(arm: &Arm) -> Response {
    let state = arm.state();
    let endpoints = state.endpoints();
    let base = endpoints.localhost();
    let domain = &state.config.domain;
    let port = state.port;
    let with_port = |host: &str| {
        if port == 443 {
            host.to_string()
        } else {
            format!("{host}:{port}")
        }
    };
    let host_suffix = |prefix: &str| with_port(&format!("{prefix}{domain}"));
    let graph = format!("https://graph.{}/", host_suffix(""));
    let body = json!({
        "name": "Lanyard",
        "portal": base,
        "resourceManager": format!("{base}/"),
        "galleryEndpoint": format!("{base}/"),
        "graphEndpoint": graph,
        "graph": graph,
        "graphAudience": graph,
        "microsoftGraphResourceId": graph,
        "sqlManagement": format!("{base}/"),
        "batch": format!("{base}/"),
        "media": format!("{base}/"),
        "vmImageAliasDoc": "",
        "activeDirectoryDataLake": "",
        "authentication": {
            "loginEndpoint": base,
            "audiences": [
                "https://management.core.windows.net/",
                "https://management.azure.com/",
                format!("https://management.{domain}/"),
            ],
            "tenant": "common",
            "identityProvider": "AAD",
        },
        "suffixes": {
            "mhsmDns": host_suffix("managedhsm."),
            "acrLoginServer": host_suffix("azurecr."),
            "sqlServerHostname": host_suffix("database."),
        },
    });
    let mut body = body;
    // Each data plane on hosts of its own: `keyVaultDns`, `storage`.
    for plane in hosts::PLANE_HOSTS {
        let suffix = plane.metadata_suffix(domain);
        body["suffixes"][plane.metadata_key] = json!(with_port(&suffix));
    }
    json(200, Some(&body))
}

/// `GET /tenants`: the caller's tenant.
pub async fn tenants(arm: &Arm, call: &Call) -> Result<Response, ApiError> {
    let tenants = arm.state().store.tenants().await.map_err(ArmError::from)?;
    let values = tenants
        .iter()
        .filter(|t| t.id == call.caller.tenant_id)
        .map(shape::tenant)
        .collect();
    Ok(json(200, Some(&shape::page(values, None))))
}

/// Whether the caller holds any role assignment (directly or through a group) at the root, at
/// the subscription, or anywhere within it: Azure lists such subscriptions.
fn can_see(arm: &Arm, call: &Call, subscription: &str) -> bool {
    let prefix = format!("/subscriptions/{}", subscription.to_ascii_lowercase());
    arm.state().access.with_index(|index| {
        let me = call.caller.object_id;
        std::iter::once(me).chain(index.groups_of(me)).any(|p| {
            index.assignments_for(p).any(|a| {
                let scope = a.scope.to_ascii_lowercase();
                scope == "/"
                    || scope == prefix
                    || scope
                        .strip_prefix(&prefix)
                        .is_some_and(|rest| rest.starts_with('/'))
            })
        })
    })
}

/// `GET /subscriptions`.
pub async fn subscriptions(arm: &Arm, call: &Call) -> Result<Response, ApiError> {
    let subs = arm
        .state()
        .store
        .subscriptions()
        .await
        .map_err(ArmError::from)?;
    let values = subs
        .iter()
        .filter(|s| can_see(arm, call, &s.id.to_string()))
        .map(shape::subscription)
        .collect();
    Ok(json(200, Some(&shape::page(values, None))))
}

/// `GET /subscriptions/{s}`.
pub async fn subscription(arm: &Arm, call: &Call, id: &str) -> Result<Response, ApiError> {
    let sub = arm.subscription(id).await?;
    if !can_see(arm, call, &sub.id.to_string()) {
        return Err(ArmError::SubscriptionNotFound(id.to_string()).into());
    }
    Ok(json(200, Some(&shape::subscription(&sub))))
}
