//! Raising one's own rights through the control plane's RBAC surfaces, tried as an attacker
//! would, on both backends; each attack is refused with ARM's 403 and the legitimate use
//! next to it still works:
//! - a resource group's Owner rewrites a custom role that is assigned at the subscription,
//!   through its own group's scope, then tries what the rewritten role would have let it
//!   do (create groups at the subscription, make itself Owner there);
//! - the same Owner deletes a subscription-wide custom role through its group's scope;
//! - a Key Vault Contributor switches an RBAC vault to access policies with a policy for
//!   itself (PATCH and PUT), or an access-policy vault to RBAC, and then reads a secret;
//! - `access explain` asked by a Reader of one group about a principal that holds
//!   assignments elsewhere shows none of those.

use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use super::kit::*;
use crate::both_backends;
use crate::support::{Backend, TestServer};

both_backends!(
    custom_role_rewrite_through_a_group_is_refused,
    custom_role_delete_through_a_group_is_refused,
    key_vault_contributor_cannot_switch_the_permission_model,
    access_explain_shows_only_what_the_caller_may_list,
);

const OWNER: &str = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635";
const KV_CONTRIBUTOR: &str = "f25e0fa2-a7c8-4377-a976-54943a77a395";
const BLOB_READ: &str = "Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read";

/// A server, its target, the administrator's management and Graph tokens.
struct Stage {
    _server: TestServer,
    t: Target,
    admin: String,
    graph: String,
    sub: String,
}

async fn stage(backend: Backend) -> Stage {
    let server = TestServer::start(backend).await.unwrap();
    let t = Target::of(&server);
    let admin = t.admin_token(ARM_SCOPE).await;
    let graph = t.admin_token(GRAPH_SCOPE).await;
    let sub = t.subscription();
    Stage {
        _server: server,
        t,
        admin,
        graph,
        sub,
    }
}

impl Stage {
    async fn group(&self, name: &str) -> String {
        let rg = format!("{}/resourceGroups/{name}", self.sub);
        put_ok(
            &self.t,
            &self.admin,
            &format!("{rg}?{RG_API}"),
            &json!({"location": "local"}),
        )
        .await;
        rg
    }

    async fn send(&self, token: &str, method: Method, path: &str, body: Option<&Value>) -> Reply {
        let req = match body {
            Some(b) => bearer_json(token, b),
            None => bearer(token),
        };
        call(&self.t.http, method, &self.t.arm(path), req).await
    }

    /// An app and its management token.
    async fn app(&self, name: &str) -> (App, String) {
        let app = create_app(&self.t, &self.graph, name).await;
        let token = self.t.token(&app.client_id, &app.secret, ARM_SCOPE).await;
        (app, token)
    }
}

fn role_path(scope: &str, role: Uuid) -> String {
    format!("{scope}/providers/Microsoft.Authorization/roleDefinitions/{role}?{RA_API}")
}

fn role_body(name: &str, actions: &[&str], assignable: &[&str]) -> Value {
    json!({"properties": {"roleName": name, "permissions": [{"actions": actions}],
        "assignableScopes": assignable}})
}

#[track_caller]
fn refused(r: &Reply, status: u16, code: &str, words: &[&str]) {
    assert_eq!(r.status, status, "{}", r.text);
    assert_eq!(r.code(), code, "{}", r.text);
    let message = r.json["error"]["message"].as_str().unwrap_or_default();
    for w in words {
        assert!(message.contains(w), "`{w}` not in: {message}");
    }
}

/// Finding: an Owner of one group, holding a custom role assigned at the subscription, PUT
/// that role's definition through its group's scope with `actions: ["*"]` and got the
/// subscription. The role as stored decides who may change it.
async fn custom_role_rewrite_through_a_group_is_refused(backend: Backend) {
    let s = stage(backend).await;
    let sub = s.sub.clone();
    let rg = s.group("rg-owned").await;
    let (app, token) = s.app("group-owner").await;
    assign(&s.t, &s.admin, &rg, OWNER, &app.object_id).await;
    let role = Uuid::new_v4();
    put_ok(
        &s.t,
        &s.admin,
        &role_path(&sub, role),
        &role_body("Subscription reader", &["*/read"], &[&sub]),
    )
    .await;
    assign(&s.t, &s.admin, &sub, &role.to_string(), &app.object_id).await;

    // The attack, narrowing the role to the group on the way, and without narrowing it.
    for assignable in [&rg, &sub] {
        let r = s
            .send(
                &token,
                Method::PUT,
                &role_path(&rg, role),
                Some(&role_body("Subscription reader", &["*"], &[assignable])),
            )
            .await;
        refused(
            &r,
            403,
            "AuthorizationFailed",
            &[
                "Microsoft.Authorization/roleDefinitions/write",
                &format!("over scope '{sub}'"),
            ],
        );
    }
    // The role is as it was.
    let r = s
        .send(&s.admin, Method::GET, &role_path(&sub, role), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.json["properties"]["permissions"][0]["actions"],
        json!(["*/read"])
    );
    assert_eq!(r.json["properties"]["assignableScopes"], json!([sub]));

    // What the rewritten role would have allowed stays out of reach.
    let r = s
        .send(
            &token,
            Method::PUT,
            &format!("{sub}/resourceGroups/taken?{RG_API}"),
            Some(&json!({"location": "local"})),
        )
        .await;
    refused(&r, 403, "AuthorizationFailed", &[]);
    let owner_at_sub = json!({"properties": {
        "roleDefinitionId": format!("{sub}/providers/Microsoft.Authorization/roleDefinitions/{OWNER}"),
        "principalId": app.object_id, "principalType": "ServicePrincipal"}});
    let r = s
        .send(
            &token,
            Method::PUT,
            &format!(
                "{sub}/providers/Microsoft.Authorization/roleAssignments/{}?{RA_API}",
                Uuid::new_v4()
            ),
            Some(&owner_at_sub),
        )
        .await;
    refused(
        &r,
        403,
        "AuthorizationFailed",
        &["Microsoft.Authorization/roleAssignments/write"],
    );
    // The subscription-wide assignment still grants what the role grants.
    let r = s
        .send(
            &token,
            Method::GET,
            &format!("{sub}/resourcegroups?{RG_API}"),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);

    // Legitimate use: the group's Owner manages a role that applies only in its group,
    // through the group's scope.
    let own_role = Uuid::new_v4();
    for actions in [&["*/read"][..], &["*/read", "Microsoft.Compute/*"][..]] {
        let r = s
            .send(
                &token,
                Method::PUT,
                &role_path(&rg, own_role),
                Some(&role_body("Group operator", actions, &[&rg])),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
    }
    // Widening it to the subscription needs write there.
    let r = s
        .send(
            &token,
            Method::PUT,
            &role_path(&rg, own_role),
            Some(&role_body("Group operator", &["*"], &[&rg, &sub])),
        )
        .await;
    refused(
        &r,
        403,
        "AuthorizationFailed",
        &[&format!("over scope '{sub}'")],
    );
    let r = s
        .send(&token, Method::DELETE, &role_path(&rg, own_role), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);

    // The administrator may change the role, but not narrow it past its assignments.
    let r = s
        .send(
            &s.admin,
            Method::PUT,
            &role_path(&sub, role),
            Some(&role_body("Subscription reader", &["*/read"], &[&rg])),
        )
        .await;
    refused(
        &r,
        409,
        "RoleDefinitionHasAssignments",
        &[&format!("is assigned at '{sub}'")],
    );
    let r = s
        .send(
            &s.admin,
            Method::PUT,
            &role_path(&sub, role),
            Some(&role_body(
                "Subscription reader",
                &["*/read", "Microsoft.Compute/virtualMachines/read"],
                &[&sub],
            )),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
}

/// Finding: the same Owner deleted a subscription-wide custom role through its group's
/// scope.
async fn custom_role_delete_through_a_group_is_refused(backend: Backend) {
    let s = stage(backend).await;
    let sub = s.sub.clone();
    let rg = s.group("rg-owned").await;
    let (app, token) = s.app("group-owner").await;
    assign(&s.t, &s.admin, &rg, OWNER, &app.object_id).await;
    let role = Uuid::new_v4();
    put_ok(
        &s.t,
        &s.admin,
        &role_path(&sub, role),
        &role_body("Everyone's reader", &["*/read"], &[&sub]),
    )
    .await;

    // Through its group, refused at the role's own scope; through the subscription, at the
    // URL's.
    let at_sub = format!("over scope '{sub}'");
    let at_url =
        format!("over scope '{sub}/providers/Microsoft.Authorization/roleDefinitions/{role}'");
    for (scope, denied_at) in [(&rg, &at_sub), (&sub, &at_url)] {
        let r = s
            .send(&token, Method::DELETE, &role_path(scope, role), None)
            .await;
        refused(
            &r,
            403,
            "AuthorizationFailed",
            &["Microsoft.Authorization/roleDefinitions/delete", denied_at],
        );
    }
    let r = s
        .send(&s.admin, Method::GET, &role_path(&sub, role), None)
        .await;
    assert_eq!(r.status, 200, "the role is still there: {}", r.text);
    let r = s
        .send(&s.admin, Method::DELETE, &role_path(&sub, role), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

/// Finding: a Key Vault Contributor read an RBAC vault's secrets by PATCHing
/// `enableRbacAuthorization: false` plus an access policy for itself.
async fn key_vault_contributor_cannot_switch_the_permission_model(backend: Backend) {
    let s = stage(backend).await;
    let t = &s.t;
    let rg = s.group("rg-vaults").await;
    let (app, token) = s.app("vault-contributor").await;
    assign(t, &s.admin, &rg, KV_CONTRIBUTOR, &app.object_id).await;
    let vault_body = |rbac: bool| {
        json!({"location": "local", "properties": {"tenantId": t.tenant(),
            "sku": {"family": "A", "name": "standard"}, "enableRbacAuthorization": rbac,
            "accessPolicies": []}})
    };
    let rbac_vault = format!("{rg}/providers/Microsoft.KeyVault/vaults/kvrbac");
    put_ok(
        t,
        &s.admin,
        &format!("{rbac_vault}?{KV_API}"),
        &vault_body(true),
    )
    .await;
    let admin_oid = t.admin.object_id.to_string();
    assign(t, &s.admin, &rbac_vault, KV_SECRETS_OFFICER, &admin_oid).await;
    let admin_kv = t.admin_token(VAULT_SCOPE).await;
    let secret = t.vault("kvrbac", &format!("/secrets/db?{SECRETS_API}"));
    let r = call(
        &t.http,
        Method::PUT,
        &secret,
        bearer_json(&admin_kv, &json!({"value": "hunter2"})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);

    let mine = json!([{"tenantId": t.tenant(), "objectId": app.object_id,
        "permissions": {"secrets": ["get", "list"]}}]);
    let patch = json!({"properties": {"enableRbacAuthorization": false, "accessPolicies": mine}});
    let r = s
        .send(
            &token,
            Method::PATCH,
            &format!("{rbac_vault}?{KV_API}"),
            Some(&patch),
        )
        .await;
    let words = [
        "Microsoft.Authorization/roleAssignments/write",
        "enableRbacAuthorization",
        &format!("over scope '{rbac_vault}'"),
    ];
    refused(&r, 403, "AuthorizationFailed", &words);
    let mut put = vault_body(false);
    put["properties"]["accessPolicies"] = mine.clone();
    let r = s
        .send(
            &token,
            Method::PUT,
            &format!("{rbac_vault}?{KV_API}"),
            Some(&put),
        )
        .await;
    refused(&r, 403, "AuthorizationFailed", &words);

    // The vault is as it was, and its secret out of reach.
    let r = s
        .send(&token, Method::GET, &format!("{rbac_vault}?{KV_API}"), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["properties"]["enableRbacAuthorization"], true);
    assert_eq!(r.json["properties"]["accessPolicies"], json!([]));
    let kv = t.token(&app.client_id, &app.secret, VAULT_SCOPE).await;
    let r = call(&t.http, Method::GET, &secret, bearer(&kv)).await;
    assert_eq!(r.status, 403, "{}", r.text);

    // The other way: an access-policy vault cannot be switched to RBAC by a vault writer,
    // whose policies there stay its to edit (Azure's documented behaviour).
    let policy_vault = format!("{rg}/providers/Microsoft.KeyVault/vaults/kvpolicies");
    put_ok(
        t,
        &s.admin,
        &format!("{policy_vault}?{KV_API}"),
        &vault_body(false),
    )
    .await;
    let r = s
        .send(
            &token,
            Method::PATCH,
            &format!("{policy_vault}?{KV_API}"),
            Some(&json!({"properties": {"enableRbacAuthorization": true}})),
        )
        .await;
    refused(&r, 403, "AuthorizationFailed", &words[..2]);
    let r = s
        .send(
            &token,
            Method::PATCH,
            &format!("{policy_vault}?{KV_API}"),
            Some(&json!({"properties": {"accessPolicies": mine}})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s
        .send(
            &token,
            Method::PUT,
            &format!("{policy_vault}/accessPolicies/add?{KV_API}"),
            Some(
                &json!({"properties": {"accessPolicies": [{"tenantId": t.tenant(),
                "objectId": app.object_id, "permissions": {"secrets": ["set"]}}]}}),
            ),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);

    // Those who manage role assignments switch either way.
    let r = s
        .send(
            &s.admin,
            Method::PATCH,
            &format!("{policy_vault}?{KV_API}"),
            Some(&json!({"properties": {"enableRbacAuthorization": true}})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["properties"]["enableRbacAuthorization"], true);
    let r = s
        .send(
            &s.admin,
            Method::PATCH,
            &format!("{rbac_vault}?{KV_API}"),
            Some(&patch),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = call(&t.http, Method::GET, &secret, bearer(&kv)).await;
    assert_eq!(r.status, 200, "the owner granted it: {}", r.text);
}

/// Finding: `access explain` showed the assignments of another principal at scopes the
/// caller may not read.
async fn access_explain_shows_only_what_the_caller_may_list(backend: Backend) {
    let s = stage(backend).await;
    let t = &s.t;
    let visible_rg = s.group("rg-visible").await;
    let hidden_rg = s.group("rg-hidden").await;
    let vault = format!("{visible_rg}/providers/Microsoft.KeyVault/vaults/kvexplain");
    put_ok(
        t,
        &s.admin,
        &format!("{vault}?{KV_API}"),
        &json!({"location": "local", "properties": {"tenantId": t.tenant(),
            "sku": {"family": "A", "name": "standard"}, "enableRbacAuthorization": true}}),
    )
    .await;
    let (asker, asker_token) = s.app("asker").await;
    assign(t, &s.admin, &visible_rg, READER, &asker.object_id).await;
    let (target, _) = s.app("target").await;
    let hidden = assign(t, &s.admin, &hidden_rg, BLOB_READER, &target.object_id).await;
    let below = assign(t, &s.admin, &vault, BLOB_CONTRIBUTOR, &target.object_id).await;
    let covering = assign(t, &s.admin, &visible_rg, READER, &target.object_id).await;
    let id_of = |path: &str| path.rsplit('/').next().unwrap().to_string();

    let explain = |token: String, principal: String, scope: String, data: bool| {
        let s = &s;
        async move {
            let body = json!({"principalId": principal, "action": BLOB_READ, "scope": scope,
                "dataAction": data});
            s.send(&token, Method::POST, "/lanyard/access/explain", Some(&body))
                .await
        }
    };
    let r = explain(
        asker_token.clone(),
        target.object_id.clone(),
        visible_rg.clone(),
        true,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["allowed"], false);
    let shown: Vec<String> = r.json["misses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["assignmentId"].as_str().unwrap().to_string())
        .collect();
    assert!(shown.contains(&id_of(&below)), "{}", r.text);
    assert!(shown.contains(&id_of(&covering)), "{}", r.text);
    assert!(!shown.contains(&id_of(&hidden)), "{}", r.text);
    assert!(!r.text.contains("rg-hidden"), "{}", r.text);
    assert_eq!(r.json["partial"], true);
    assert_eq!(r.json["assignmentsConsidered"], Value::Null, "{}", r.text);
    assert_eq!(
        r.json["principalName"],
        Value::Null,
        "Graph names: {}",
        r.text
    );
    let why = r.json["explanation"].as_str().unwrap();
    assert!(why.contains("Others may exist"), "{why}");

    // Asking at a scope it may not read assignments at: refused, as before.
    let r = explain(
        asker_token.clone(),
        target.object_id.clone(),
        hidden_rg.clone(),
        true,
    )
    .await;
    refused(
        &r,
        403,
        "AuthorizationFailed",
        &["Microsoft.Authorization/roleAssignments/read"],
    );
    // About itself it may ask anywhere, and sees its own assignments.
    let r = explain(
        asker_token.clone(),
        asker.object_id.clone(),
        hidden_rg.clone(),
        false,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["allowed"], false);
    assert_eq!(r.json["partial"], false);
    assert!(r.text.contains("rg-visible"), "{}", r.text);

    // The administrator, who reads everything, sees every assignment, by name.
    let r = explain(s.admin.clone(), target.object_id.clone(), visible_rg, true).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.text.contains(&id_of(&hidden)), "{}", r.text);
    assert_eq!(r.json["principalName"], "target");
}
