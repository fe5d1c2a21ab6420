//! Crash safety: the real `lanyard serve`, killed with SIGKILL at seeded random moments
//! during a mixed write load (user-assigned identities, VMs holding system and user-assigned
//! identities, role assignments, VM and identity deletions, Key Vault secrets, blobs), then
//! restarted, on SQLite and on PostgreSQL.
//!
//! After each kill, before the restart, the store itself is opened and checked for anything
//! half-written: an identity block naming a principal or identity that does not exist, a
//! managed identity whose resource is gone, a role assignment for a principal that does not
//! exist or at a scope that does not exist. After the restart, through the REST APIs, every
//! acknowledged write is there (and every acknowledged delete is gone, with what it took
//! along); writes that were in flight at the kill are either wholly there or wholly absent;
//! a `Deleting` identity left by an interrupted two-phase delete can be deleted; a token
//! issued before the first kill still works after the last restart; and the very first start
//! survives being killed half way (cycle 0).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use uuid::Uuid;

use super::kit::*;
use crate::both_backends;
use crate::support::{free_port, Backend};

both_backends!(sigkill_during_mixed_writes);

/// Kill/restart cycles after the first start, each with a few seconds of load.
const CYCLES: u64 = 3;
const WORKERS: u64 = 4;
const VAULT: &str = "kvcrash";
const ACCOUNT: &str = "stcrash";
const CONTAINER: &str = "data";

/// What the test knows about one thing it wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Known {
    /// Acknowledged (and not deleted since).
    Present,
    /// Its deletion was acknowledged, or something it depends on was deleted.
    Absent,
    /// A write or delete was in flight when the server died.
    Uncertain,
}

#[derive(Debug, Clone)]
struct Uai {
    id: String,
    principal: String,
    client: String,
    known: Known,
    busy: bool,
}

#[derive(Debug, Clone)]
struct Vm {
    id: String,
    principal: String,
    /// User-assigned identity ids attached at creation (lower-cased).
    uais: Vec<String>,
    known: Known,
    busy: bool,
}

#[derive(Debug, Clone)]
struct Assignment {
    /// `{scope}/providers/Microsoft.Authorization/roleAssignments/{name}`.
    path: String,
    principal: String,
    role: &'static str,
    known: Known,
}

#[derive(Debug, Clone)]
struct Secret {
    value: String,
    known: Known,
}

#[derive(Debug, Clone)]
struct Blob {
    digest: Vec<u8>,
    len: usize,
    known: Known,
}

#[derive(Default)]
struct Model {
    uais: BTreeMap<String, Uai>,
    vms: BTreeMap<String, Vm>,
    assignments: BTreeMap<String, Assignment>,
    secrets: BTreeMap<String, Secret>,
    blobs: BTreeMap<String, Blob>,
    acked: u64,
    in_flight_lost: u64,
    /// In-flight writes found, after the restart, to have happened, or not.
    settled_applied: u64,
    settled_not_applied: u64,
    /// Identity deletions interrupted between their two commits, finished after a restart.
    finished_deletes: u64,
}

impl Model {
    /// Every thing whose fate is unknown, as (kind, key, whether it existed before).
    fn uncertain(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        out.extend(
            self.uais
                .iter()
                .filter(|(_, x)| x.known == Known::Uncertain)
                .map(|(k, _)| ("uai", k.clone())),
        );
        out.extend(
            self.vms
                .iter()
                .filter(|(_, x)| x.known == Known::Uncertain)
                .map(|(k, _)| ("vm", k.clone())),
        );
        out.extend(
            self.assignments
                .iter()
                .filter(|(_, x)| x.known == Known::Uncertain)
                .map(|(k, _)| ("assignment", k.clone())),
        );
        out.extend(
            self.secrets
                .iter()
                .filter(|(_, x)| x.known == Known::Uncertain)
                .map(|(k, _)| ("secret", k.clone())),
        );
        out.extend(
            self.blobs
                .iter()
                .filter(|(_, x)| x.known == Known::Uncertain)
                .map(|(k, _)| ("blob", k.clone())),
        );
        out
    }

    fn known(&self, kind: &str, key: &str) -> Known {
        match kind {
            "uai" => self.uais[key].known,
            "vm" => self.vms[key].known,
            "assignment" => self.assignments[key].known,
            "secret" => self.secrets[key].known,
            _ => self.blobs[key].known,
        }
    }
}

impl Model {
    /// A principal whose resource is gone takes its assignments along.
    fn principal_gone(&mut self, principal: &str) {
        for a in self.assignments.values_mut() {
            if a.principal == principal {
                a.known = Known::Absent;
            }
        }
    }

    fn uai_gone(&mut self, key: &str) {
        let principal = self.uais[key].principal.clone();
        self.uais.get_mut(key).unwrap().known = Known::Absent;
        self.principal_gone(&principal);
        for vm in self.vms.values_mut() {
            vm.uais.retain(|u| u != key);
        }
    }

    fn vm_gone(&mut self, key: &str) {
        let principal = self.vms[key].principal.clone();
        self.vms.get_mut(key).unwrap().known = Known::Absent;
        self.principal_gone(&principal);
    }

    /// Principals of present, idle identities (for new assignments).
    fn idle_principals(&self) -> Vec<(String, &'static str, String)> {
        let mut out = Vec::new();
        for (k, u) in &self.uais {
            if u.known == Known::Present && !u.busy {
                out.push((u.principal.clone(), "uai", k.clone()));
            }
        }
        for (k, v) in &self.vms {
            if v.known == Known::Present && !v.busy {
                out.push((v.principal.clone(), "vm", k.clone()));
            }
        }
        out
    }

    fn set_busy(&mut self, kind: &str, key: &str, busy: bool) {
        match kind {
            "uai" => self.uais.get_mut(key).unwrap().busy = busy,
            _ => self.vms.get_mut(key).unwrap().busy = busy,
        }
    }
}

/// Everything the workers share.
struct Load {
    target: Target,
    model: Mutex<Model>,
    stop: AtomicBool,
    rg: String,
    arm_token: String,
    vault_token: String,
    storage_token: String,
    counter: AtomicU64,
}

async fn sigkill_during_mixed_writes(backend: Backend) {
    let seed = seed(&format!("crash::{backend:?}"));
    let mut rng = Rng::new(seed);
    let db = database(backend).await;
    let url = db.as_ref().map(|d| d.url().to_string());
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let log = tmp.path().join("serve.log");
    let port = free_port();

    // Cycle 0: the very first start, killed at a random moment, then started again.
    let mut served = Served::start(&dir, port, url.as_deref(), &log, &[]);
    let first_kill = rng.range(50, 1500);
    tokio::time::sleep(Duration::from_millis(first_kill)).await;
    served.kill9();
    println!("cycle 0: first start killed after {first_kill} ms");
    let mut served = Served::start(&dir, port, url.as_deref(), &log, &[]);
    let target = served.ready(&dir).await;

    // The stage: a group, a vault and a storage account the administrator may write to.
    let arm_token = target.admin_token(ARM_SCOPE).await;
    let sub = target.subscription();
    let rg = format!("{sub}/resourceGroups/crash");
    put_ok(
        &target,
        &arm_token,
        &format!("{rg}?{RG_API}"),
        &json!({"location": "local"}),
    )
    .await;
    let vault = put_ok(
        &target,
        &arm_token,
        &format!("{rg}/providers/Microsoft.KeyVault/vaults/{VAULT}?{KV_API}"),
        &json!({"location": "local", "properties": {"tenantId": target.tenant(),
            "sku": {"family": "A", "name": "standard"}, "enableRbacAuthorization": true}}),
    )
    .await;
    let admin_oid = target.admin.object_id.to_string();
    assign(
        &target,
        &arm_token,
        vault["id"].as_str().unwrap(),
        KV_SECRETS_OFFICER,
        &admin_oid,
    )
    .await;
    let account = put_ok(
        &target,
        &arm_token,
        &format!("{rg}/providers/Microsoft.Storage/storageAccounts/{ACCOUNT}?{ACCOUNT_API}"),
        &json!({"location": "local", "kind": "StorageV2", "sku": {"name": "Standard_LRS"}}),
    )
    .await;
    assign(
        &target,
        &arm_token,
        account["id"].as_str().unwrap(),
        BLOB_CONTRIBUTOR,
        &admin_oid,
    )
    .await;
    let storage_token = target.admin_token(STORAGE_SCOPE).await;
    let vault_token = target.admin_token(VAULT_SCOPE).await;
    let r = call(
        &target.http,
        Method::PUT,
        &target.blob(ACCOUNT, &format!("/{CONTAINER}?restype=container")),
        bearer(&storage_token),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text);

    let load = Arc::new(Load {
        target: target.clone(),
        model: Mutex::new(Model::default()),
        stop: AtomicBool::new(false),
        rg,
        // Tokens from before the first kill, used through every cycle: they must keep working
        // after every restart.
        arm_token,
        vault_token,
        storage_token,
        counter: AtomicU64::new(0),
    });

    let mut problems = Vec::new();
    for cycle in 1..=CYCLES {
        load.stop.store(false, Ordering::SeqCst);
        let mut workers = Vec::new();
        for w in 0..WORKERS {
            let load = Arc::clone(&load);
            let rng = rng.fork(cycle * 100 + w);
            workers.push(tokio::spawn(work(load, rng)));
        }
        let run = rng.range(1000, 4000);
        tokio::time::sleep(Duration::from_millis(run)).await;
        served.kill9();
        load.stop.store(true, Ordering::SeqCst);
        for w in workers {
            w.await.unwrap();
        }
        let (acked, lost) = {
            let m = load.model.lock().unwrap();
            (m.acked, m.in_flight_lost)
        };
        println!(
            "cycle {cycle}: killed after {run} ms; {acked} writes acknowledged so far, {lost} in flight at kills"
        );

        // The store as the crash left it, before any server touches it again.
        problems.extend(
            store_invariants(&dir, url.as_deref(), &load.target)
                .await
                .into_iter()
                .map(|p| format!("cycle {cycle}, store: {p}")),
        );

        served = Served::start(&dir, port, url.as_deref(), &log, &[]);
        served.ready(&dir).await;
        problems.extend(
            verify(&load)
                .await
                .into_iter()
                .map(|p| format!("cycle {cycle}, API: {p}")),
        );
        assert!(
            problems.is_empty(),
            "seed {seed}: {} problems:\n{}",
            problems.len(),
            problems.join("\n")
        );
    }
    {
        let m = load.model.lock().unwrap();
        let count = |k: Known| {
            m.uais.values().filter(|x| x.known == k).count()
                + m.vms.values().filter(|x| x.known == k).count()
                + m.assignments.values().filter(|x| x.known == k).count()
                + m.secrets.values().filter(|x| x.known == k).count()
                + m.blobs.values().filter(|x| x.known == k).count()
        };
        println!(
            "crash::{backend:?}: {CYCLES} kills under load; {} acknowledged writes checked, {} things present, {} absent; {} writes in flight at a kill: {} found applied, {} not applied; {} interrupted identity deletions finished; 0 problems",
            m.acked,
            count(Known::Present),
            count(Known::Absent),
            m.in_flight_lost,
            m.settled_applied,
            m.settled_not_applied,
            m.finished_deletes
        );
    }
    served.terminate();
    if let Some(db) = db {
        db.cleanup().await.unwrap();
    }
}

/// One worker: picks writes until told to stop (or until the server is gone).
async fn work(load: Arc<Load>, mut rng: Rng) {
    while !load.stop.load(Ordering::SeqCst) {
        let n = load.counter.fetch_add(1, Ordering::SeqCst);
        let roll = rng.below(100);
        let ok = match roll {
            0..=19 => create_uai(&load, n).await,
            20..=44 => create_vm(&load, &mut rng, n).await,
            45..=62 => create_assignment(&load, &mut rng).await,
            63..=69 => delete_vm(&load, &mut rng).await,
            70..=74 => delete_uai(&load, &mut rng).await,
            75..=87 => set_secret(&load, &mut rng, n).await,
            _ => put_blob(&load, &mut rng, n).await,
        };
        if !ok {
            // A connection error: the server is gone. Wait for the stop signal.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The outcome of one write: acknowledged, refused (an answer that wrote nothing), or lost
/// (no answer).
enum Outcome {
    Acked(Value),
    Refused(u16, String),
    Lost,
}

async fn send(load: &Load, method: Method, url: &str, req: Req<'_>) -> Outcome {
    match try_call(&load.target.http, method, url, req).await {
        Ok(r) if (200..300).contains(&r.status) => Outcome::Acked(r.json),
        Ok(r) => Outcome::Refused(r.status, r.text),
        Err(_) => Outcome::Lost,
    }
}

fn refused(what: &str, status: u16, text: &str) {
    // A 5xx while the server is healthy is a bug; refusals are only expected for races the
    // model cannot exclude (none at present), so report them loudly.
    panic!("{what} refused with {status}: {text}");
}

async fn create_uai(load: &Load, n: u64) -> bool {
    let id = format!(
        "{}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/ua{n}",
        load.rg
    );
    let key = id.to_ascii_lowercase();
    load.model.lock().unwrap().uais.insert(
        key.clone(),
        Uai {
            id: id.clone(),
            principal: String::new(),
            client: String::new(),
            known: Known::Uncertain,
            busy: true,
        },
    );
    let body = json!({"location": "local"});
    let outcome = send(
        load,
        Method::PUT,
        &load.target.arm(&format!("{id}?{UAI_API}")),
        bearer_json(&load.arm_token, &body),
    )
    .await;
    let mut m = load.model.lock().unwrap();
    match outcome {
        Outcome::Acked(v) => {
            let u = m.uais.get_mut(&key).unwrap();
            u.principal = v["properties"]["principalId"].as_str().unwrap().to_string();
            u.client = v["properties"]["clientId"].as_str().unwrap().to_string();
            u.known = Known::Present;
            u.busy = false;
            m.acked += 1;
            true
        }
        Outcome::Refused(s, t) => {
            drop(m);
            refused("create identity", s, &t);
            false
        }
        Outcome::Lost => {
            m.in_flight_lost += 1;
            false
        }
    }
}

async fn create_vm(load: &Load, rng: &mut Rng, n: u64) -> bool {
    let id = format!(
        "{}/providers/Microsoft.Compute/virtualMachines/vm{n}",
        load.rg
    );
    let key = id.to_ascii_lowercase();
    let attach: Option<String> = {
        let mut m = load.model.lock().unwrap();
        let idle: Vec<String> = m
            .uais
            .iter()
            .filter(|(_, u)| u.known == Known::Present && !u.busy)
            .map(|(k, _)| k.clone())
            .collect();
        let pick = (!idle.is_empty() && rng.chance(0.7)).then(|| rng.pick(&idle).clone());
        if let Some(k) = &pick {
            m.uais.get_mut(k).unwrap().busy = true;
        }
        m.vms.insert(
            key.clone(),
            Vm {
                id: id.clone(),
                principal: String::new(),
                uais: pick.iter().cloned().collect(),
                known: Known::Uncertain,
                busy: true,
            },
        );
        pick
    };
    let identity = match &attach {
        Some(k) => {
            let uai_id = load.model.lock().unwrap().uais[k].id.clone();
            json!({"type": "SystemAssigned, UserAssigned", "userAssignedIdentities": {uai_id: {}}})
        }
        None => json!({"type": "SystemAssigned"}),
    };
    let body = json!({"location": "local", "identity": identity,
        "properties": {"hardwareProfile": {"vmSize": "Standard_B1s"}}});
    let outcome = send(
        load,
        Method::PUT,
        &load.target.arm(&format!("{id}?{VM_API}")),
        bearer_json(&load.arm_token, &body),
    )
    .await;
    let mut m = load.model.lock().unwrap();
    if let Some(k) = &attach {
        m.uais.get_mut(k).unwrap().busy = false;
    }
    match outcome {
        Outcome::Acked(v) => {
            let vm = m.vms.get_mut(&key).unwrap();
            vm.principal = v["identity"]["principalId"].as_str().unwrap().to_string();
            vm.known = Known::Present;
            vm.busy = false;
            m.acked += 1;
            true
        }
        Outcome::Refused(s, t) => {
            drop(m);
            refused("create VM", s, &t);
            false
        }
        Outcome::Lost => {
            m.in_flight_lost += 1;
            false
        }
    }
}

async fn create_assignment(load: &Load, rng: &mut Rng) -> bool {
    const ROLES: [&str; 4] = [READER, VM_CONTRIBUTOR, KV_SECRETS_USER, BLOB_READER];
    let path = format!(
        "{}/providers/Microsoft.Authorization/roleAssignments/{}",
        load.rg,
        rng.uuid()
    );
    let (principal, kind, owner, role) = {
        let mut m = load.model.lock().unwrap();
        let idle = m.idle_principals();
        if idle.is_empty() {
            return true;
        }
        let chosen = rng.pick(&idle).clone();
        // One assignment per (principal, role) at the group: a second is a 409 by design.
        let free: Vec<&'static str> = ROLES
            .iter()
            .copied()
            .filter(|r| {
                !m.assignments
                    .values()
                    .any(|a| a.principal == chosen.0 && a.role == *r && a.known != Known::Absent)
            })
            .collect();
        if free.is_empty() {
            return true;
        }
        let role = *rng.pick(&free);
        m.set_busy(chosen.1, &chosen.2, true);
        m.assignments.insert(
            path.to_ascii_lowercase(),
            Assignment {
                path: path.clone(),
                principal: chosen.0.clone(),
                role,
                known: Known::Uncertain,
            },
        );
        (chosen.0, chosen.1, chosen.2, role)
    };
    let body = json!({"properties": {
        "roleDefinitionId": format!("{}/providers/Microsoft.Authorization/roleDefinitions/{role}", load.target.subscription()),
        "principalId": principal,
        "principalType": "ServicePrincipal"}});
    let outcome = send(
        load,
        Method::PUT,
        &load.target.arm(&format!("{path}?{RA_API}")),
        bearer_json(&load.arm_token, &body),
    )
    .await;
    let mut m = load.model.lock().unwrap();
    m.set_busy(kind, &owner, false);
    match outcome {
        Outcome::Acked(_) => {
            m.assignments
                .get_mut(&path.to_ascii_lowercase())
                .unwrap()
                .known = Known::Present;
            m.acked += 1;
            true
        }
        Outcome::Refused(s, t) => {
            drop(m);
            refused("create assignment", s, &t);
            false
        }
        Outcome::Lost => {
            m.in_flight_lost += 1;
            false
        }
    }
}

async fn delete_vm(load: &Load, rng: &mut Rng) -> bool {
    let (key, id) = {
        let mut m = load.model.lock().unwrap();
        let idle: Vec<String> = m
            .vms
            .iter()
            .filter(|(_, v)| v.known == Known::Present && !v.busy)
            .map(|(k, _)| k.clone())
            .collect();
        if idle.is_empty() {
            return true;
        }
        let key = rng.pick(&idle).clone();
        let vm = m.vms.get_mut(&key).unwrap();
        vm.busy = true;
        (key, vm.id.clone())
    };
    let outcome = send(
        load,
        Method::DELETE,
        &load.target.arm(&format!("{id}?{VM_API}")),
        bearer(&load.arm_token),
    )
    .await;
    let mut m = load.model.lock().unwrap();
    m.vms.get_mut(&key).unwrap().busy = false;
    match outcome {
        Outcome::Acked(_) => {
            m.vm_gone(&key);
            m.acked += 1;
            true
        }
        Outcome::Refused(s, t) => {
            drop(m);
            refused("delete VM", s, &t);
            false
        }
        Outcome::Lost => {
            m.vms.get_mut(&key).unwrap().known = Known::Uncertain;
            m.in_flight_lost += 1;
            false
        }
    }
}

async fn delete_uai(load: &Load, rng: &mut Rng) -> bool {
    let (key, id) = {
        let mut m = load.model.lock().unwrap();
        let idle: Vec<String> = m
            .uais
            .iter()
            .filter(|(_, u)| u.known == Known::Present && !u.busy)
            .map(|(k, _)| k.clone())
            .collect();
        if idle.is_empty() {
            return true;
        }
        let key = rng.pick(&idle).clone();
        let u = m.uais.get_mut(&key).unwrap();
        u.busy = true;
        (key, u.id.clone())
    };
    let outcome = send(
        load,
        Method::DELETE,
        &load.target.arm(&format!("{id}?{UAI_API}")),
        bearer(&load.arm_token),
    )
    .await;
    let mut m = load.model.lock().unwrap();
    m.uais.get_mut(&key).unwrap().busy = false;
    match outcome {
        Outcome::Acked(_) => {
            m.uai_gone(&key);
            m.acked += 1;
            true
        }
        Outcome::Refused(s, t) => {
            drop(m);
            refused("delete identity", s, &t);
            false
        }
        Outcome::Lost => {
            m.uais.get_mut(&key).unwrap().known = Known::Uncertain;
            m.in_flight_lost += 1;
            false
        }
    }
}

async fn set_secret(load: &Load, rng: &mut Rng, n: u64) -> bool {
    let name = format!("s{n}");
    let len = rng.below(200) + 1;
    let value = rng.word(len);
    load.model.lock().unwrap().secrets.insert(
        name.clone(),
        Secret {
            value: value.clone(),
            known: Known::Uncertain,
        },
    );
    let body = json!({"value": value});
    let outcome = send(
        load,
        Method::PUT,
        &load
            .target
            .vault(VAULT, &format!("/secrets/{name}?{SECRETS_API}")),
        bearer_json(&load.vault_token, &body),
    )
    .await;
    let mut m = load.model.lock().unwrap();
    match outcome {
        Outcome::Acked(_) => {
            m.secrets.get_mut(&name).unwrap().known = Known::Present;
            m.acked += 1;
            true
        }
        Outcome::Refused(s, t) => {
            drop(m);
            refused("set secret", s, &t);
            false
        }
        Outcome::Lost => {
            m.in_flight_lost += 1;
            false
        }
    }
}

async fn put_blob(load: &Load, rng: &mut Rng, n: u64) -> bool {
    let name = format!("b{n}.bin");
    // Up to 512 KiB, so some uploads are mid-body when the server dies.
    let len = rng.below(512 * 1024) + 1;
    let content = rng.bytes(len);
    load.model.lock().unwrap().blobs.insert(
        name.clone(),
        Blob {
            digest: sha256(&content),
            len,
            known: Known::Uncertain,
        },
    );
    let req = Req {
        token: Some(&load.storage_token),
        body: Some((content, "application/octet-stream")),
        headers: vec![
            ("x-ms-blob-type", "BlockBlob".to_string()),
            ("x-ms-version", "2023-11-03".to_string()),
        ],
        ..Default::default()
    };
    let outcome = send(
        load,
        Method::PUT,
        &load.target.blob(ACCOUNT, &format!("/{CONTAINER}/{name}")),
        req,
    )
    .await;
    let mut m = load.model.lock().unwrap();
    match outcome {
        Outcome::Acked(_) => {
            m.blobs.get_mut(&name).unwrap().known = Known::Present;
            m.acked += 1;
            true
        }
        Outcome::Refused(s, t) => {
            drop(m);
            refused("put blob", s, &t);
            false
        }
        Outcome::Lost => {
            m.in_flight_lost += 1;
            false
        }
    }
}

pub fn sha256(bytes: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .to_vec()
}

/// Checks the store of a dead server for anything half-written.
async fn store_invariants(
    dir: &std::path::Path,
    url: Option<&str>,
    target: &Target,
) -> Vec<String> {
    use lanyard_domain::{PrincipalKind, ResourceId, ServicePrincipalSource};
    let location = url
        .map(str::to_string)
        .unwrap_or_else(|| dir.join("lanyard.db").display().to_string());
    let store = lanyard_storage::open(&location).await.unwrap();
    let sub = ResourceId::parse(&target.subscription()).unwrap();
    let resources = store
        .resources(&lanyard_storage::ResourceQuery {
            within: Some(sub),
            ..Default::default()
        })
        .await
        .unwrap();
    let principals = store.principals().await.unwrap();
    let assignments = store
        .assignments(&lanyard_storage::AssignmentQuery::default())
        .await
        .unwrap();
    let by_id: BTreeMap<String, &lanyard_storage::ResourceRecord> = resources
        .iter()
        .map(|r| (r.id.key().to_string(), r))
        .collect();
    let principal_of: BTreeMap<Uuid, &lanyard_domain::Principal> =
        principals.iter().map(|p| (p.object_id, p)).collect();
    let mut problems = Vec::new();
    let source = |oid: &str| -> Option<&ServicePrincipalSource> {
        let oid = Uuid::parse_str(oid).ok()?;
        match &principal_of.get(&oid)?.kind {
            PrincipalKind::ServicePrincipal { source, .. } => Some(source),
            _ => None,
        }
    };
    for r in &resources {
        let body = &r.body;
        if r.id
            .is_type("Microsoft.ManagedIdentity/userAssignedIdentities")
        {
            let p = body["properties"]["principalId"].as_str().unwrap_or("");
            match source(p) {
                Some(ServicePrincipalSource::UserAssigned { identity }) if identity == &r.id => {}
                other => problems.push(format!(
                    "identity {} names principal `{p}`, which is {other:?}",
                    r.id
                )),
            }
        }
        let identity = &body["identity"];
        let ty = identity["type"]
            .as_str()
            .unwrap_or("None")
            .to_ascii_lowercase();
        if ty.contains("systemassigned") {
            let p = identity["principalId"].as_str().unwrap_or("");
            match source(p) {
                Some(ServicePrincipalSource::SystemAssigned { host }) if host == &r.id => {}
                other => problems.push(format!(
                    "{} has a system identity `{p}` whose principal is {other:?}",
                    r.id
                )),
            }
        }
        if let Some(map) = identity["userAssignedIdentities"].as_object() {
            for (uai, entry) in map {
                match by_id.get(&uai.to_ascii_lowercase()) {
                    None => problems.push(format!("{} holds missing identity {uai}", r.id)),
                    Some(u) => {
                        if u.body["properties"]["principalId"] != entry["principalId"] {
                            problems.push(format!(
                                "{} holds {uai} with principal {} but the identity's is {}",
                                r.id, entry["principalId"], u.body["properties"]["principalId"]
                            ));
                        }
                    }
                }
            }
        }
    }
    for p in &principals {
        let PrincipalKind::ServicePrincipal { source, .. } = &p.kind else {
            continue;
        };
        let owner = match source {
            ServicePrincipalSource::SystemAssigned { host } => host,
            ServicePrincipalSource::UserAssigned { identity } => identity,
            ServicePrincipalSource::Application => continue,
        };
        match by_id.get(owner.key()) {
            None => problems.push(format!(
                "managed identity principal {} outlived its resource {owner}",
                p.object_id
            )),
            Some(r) => {
                let named = if r
                    .id
                    .is_type("Microsoft.ManagedIdentity/userAssignedIdentities")
                {
                    r.body["properties"]["principalId"].as_str()
                } else {
                    r.body["identity"]["principalId"].as_str()
                };
                if named != Some(p.object_id.to_string().as_str()) {
                    problems.push(format!(
                        "principal {} belongs to {owner}, which names {named:?}",
                        p.object_id
                    ));
                }
            }
        }
    }
    let sub_key = target.subscription().to_ascii_lowercase();
    for a in &assignments {
        if !principal_of.contains_key(&a.principal_id) {
            problems.push(format!(
                "role assignment {} is for principal {}, which does not exist",
                a.id, a.principal_id
            ));
        }
        let scope = a.scope.key();
        if scope != "/" && scope != sub_key && !by_id.contains_key(scope) {
            problems.push(format!(
                "role assignment {} is at scope {}, which does not exist",
                a.id, a.scope
            ));
        }
    }
    drop(store);
    problems
}

/// After a restart: settles what was in flight by looking, then checks every write the test
/// knows about through the APIs.
async fn verify(load: &Load) -> Vec<String> {
    let t = &load.target;
    let token = &load.arm_token;
    let mut problems = Vec::new();
    // (kind, key, whether the in-flight write was a delete of something that existed)
    let in_flight: Vec<(&'static str, String, bool)> = {
        let m = load.model.lock().unwrap();
        m.uncertain()
            .into_iter()
            .map(|(kind, key)| {
                let existed = match kind {
                    "uai" => !m.uais[&key].principal.is_empty(),
                    "vm" => !m.vms[&key].principal.is_empty(),
                    _ => false,
                };
                (kind, key, existed)
            })
            .collect()
    };
    let get = |path: String| async move {
        call(&t.http, Method::GET, &t.arm(&path), bearer(token)).await
    };

    // 1. Identities and VMs whose fate was in flight: look.
    let uncertain_uais: Vec<(String, String)> = {
        let m = load.model.lock().unwrap();
        m.uais
            .iter()
            .filter(|(_, u)| u.known == Known::Uncertain)
            .map(|(k, u)| (k.clone(), u.id.clone()))
            .collect()
    };
    for (key, id) in uncertain_uais {
        let mut r = get(format!("{id}?{UAI_API}")).await;
        if r.status == 200 && r.json["properties"]["provisioningState"] == "Deleting" {
            // An interrupted two-phase delete: finishing it must work.
            let d = call(
                &t.http,
                Method::DELETE,
                &t.arm(&format!("{id}?{UAI_API}")),
                bearer(token),
            )
            .await;
            load.model.lock().unwrap().finished_deletes += 1;
            if !matches!(d.status, 200 | 204) {
                problems.push(format!(
                    "finishing the delete of {id}: {} {}",
                    d.status, d.text
                ));
            }
            r = get(format!("{id}?{UAI_API}")).await;
        }
        let mut m = load.model.lock().unwrap();
        match r.status {
            200 => {
                let u = m.uais.get_mut(&key).unwrap();
                let p = r.json["properties"]["principalId"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                if !u.principal.is_empty() && u.principal != p {
                    problems.push(format!("{id} changed principal: {} -> {p}", u.principal));
                }
                u.principal = p;
                u.client = r.json["properties"]["clientId"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                u.known = Known::Present;
            }
            404 => {
                if m.uais[&key].principal.is_empty() {
                    m.uais.get_mut(&key).unwrap().known = Known::Absent;
                } else {
                    m.uai_gone(&key);
                }
            }
            s => problems.push(format!("GET {id}: {s} {}", r.text)),
        }
    }
    let uncertain_vms: Vec<(String, String)> = {
        let m = load.model.lock().unwrap();
        m.vms
            .iter()
            .filter(|(_, v)| v.known == Known::Uncertain)
            .map(|(k, v)| (k.clone(), v.id.clone()))
            .collect()
    };
    for (key, id) in uncertain_vms {
        let r = get(format!("{id}?{VM_API}")).await;
        let mut m = load.model.lock().unwrap();
        match r.status {
            200 => {
                let vm = m.vms.get_mut(&key).unwrap();
                let p = r.json["identity"]["principalId"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                if !vm.principal.is_empty() && vm.principal != p {
                    problems.push(format!("{id} changed principal: {} -> {p}", vm.principal));
                }
                vm.principal = p;
                vm.known = Known::Present;
            }
            404 => {
                if m.vms[&key].principal.is_empty() {
                    m.vms.get_mut(&key).unwrap().known = Known::Absent;
                } else {
                    m.vm_gone(&key);
                }
            }
            s => problems.push(format!("GET {id}: {s} {}", r.text)),
        }
    }
    // VMs created in flight may hold identities whose deletion was in flight too; the
    // model keeps only those still present.
    {
        let mut m = load.model.lock().unwrap();
        let present: BTreeSet<String> = m
            .uais
            .iter()
            .filter(|(_, u)| u.known == Known::Present)
            .map(|(k, _)| k.clone())
            .collect();
        for vm in m.vms.values_mut() {
            vm.uais.retain(|u| present.contains(u));
        }
    }

    // 2. Every identity and VM as known.
    let (uais, vms) = {
        let m = load.model.lock().unwrap();
        (m.uais.clone(), m.vms.clone())
    };
    for u in uais.values() {
        let r = get(format!("{}?{UAI_API}", u.id)).await;
        match u.known {
            Known::Present => {
                if r.status != 200 {
                    problems.push(format!(
                        "acknowledged identity {} is gone: {}",
                        u.id, r.status
                    ));
                } else if r.json["properties"]["principalId"] != u.principal.as_str()
                    || r.json["properties"]["clientId"] != u.client.as_str()
                {
                    problems.push(format!("identity {} changed: {}", u.id, r.json));
                }
            }
            Known::Absent if r.status != 404 => {
                problems.push(format!("deleted identity {} is back: {}", u.id, r.status))
            }
            _ => {}
        }
    }
    for vm in vms.values() {
        let r = get(format!("{}?{VM_API}", vm.id)).await;
        match vm.known {
            Known::Present => {
                if r.status != 200 {
                    problems.push(format!("acknowledged VM {} is gone: {}", vm.id, r.status));
                    continue;
                }
                if r.json["identity"]["principalId"] != vm.principal.as_str() {
                    problems.push(format!("VM {} lost its system identity: {}", vm.id, r.json));
                }
                let attached: BTreeSet<String> = r.json["identity"]["userAssignedIdentities"]
                    .as_object()
                    .map(|m| m.keys().map(|k| k.to_ascii_lowercase()).collect())
                    .unwrap_or_default();
                let expected: BTreeSet<String> = vm.uais.iter().cloned().collect();
                if attached != expected {
                    problems.push(format!(
                        "VM {} holds {attached:?}, expected {expected:?}",
                        vm.id
                    ));
                }
                let si = get(format!(
                    "{}/providers/Microsoft.ManagedIdentity/identities/default?{UAI_API}",
                    vm.id
                ))
                .await;
                if si.status != 200 || si.json["properties"]["principalId"] != vm.principal.as_str()
                {
                    problems.push(format!(
                        "system identity of {}: {} {}",
                        vm.id, si.status, si.text
                    ));
                }
            }
            Known::Absent if r.status != 404 => {
                problems.push(format!("deleted VM {} is back: {}", vm.id, r.status))
            }
            _ => {}
        }
    }

    // 3. Role assignments: settle those in flight, then check all.
    let assignments: Vec<(String, Assignment)> = {
        let m = load.model.lock().unwrap();
        m.assignments
            .iter()
            .map(|(k, a)| (k.clone(), a.clone()))
            .collect()
    };
    for (key, a) in assignments {
        let r = get(format!("{}?{RA_API}", a.path)).await;
        match (a.known, r.status) {
            (Known::Present, 200) | (Known::Absent, 404) => {}
            (Known::Uncertain, 200) => {
                load.model
                    .lock()
                    .unwrap()
                    .assignments
                    .get_mut(&key)
                    .unwrap()
                    .known = Known::Present;
            }
            (Known::Uncertain, 404) => {
                load.model
                    .lock()
                    .unwrap()
                    .assignments
                    .get_mut(&key)
                    .unwrap()
                    .known = Known::Absent;
            }
            (known, status) => problems.push(format!(
                "assignment {} ({known:?}) answers {status}: {}",
                a.path, r.text
            )),
        }
        if r.status == 200 && r.json["properties"]["principalId"] != a.principal.as_str() {
            problems.push(format!("assignment {} changed: {}", a.path, r.text));
        }
    }

    // 4. Secrets: wholly there with the value written, or absent if never acknowledged.
    let secrets: Vec<(String, Secret)> = {
        let m = load.model.lock().unwrap();
        m.secrets
            .iter()
            .map(|(k, s)| (k.clone(), s.clone()))
            .collect()
    };
    for (name, s) in secrets {
        let r = call(
            &t.http,
            Method::GET,
            &t.vault(VAULT, &format!("/secrets/{name}?{SECRETS_API}")),
            bearer(&load.vault_token),
        )
        .await;
        match (s.known, r.status) {
            (Known::Present | Known::Uncertain, 200) => {
                if r.json["value"] != s.value.as_str() {
                    problems.push(format!("secret {name} has another value"));
                }
                load.model
                    .lock()
                    .unwrap()
                    .secrets
                    .get_mut(&name)
                    .unwrap()
                    .known = Known::Present;
            }
            (Known::Uncertain, 404) => {
                load.model
                    .lock()
                    .unwrap()
                    .secrets
                    .get_mut(&name)
                    .unwrap()
                    .known = Known::Absent;
            }
            (Known::Absent, 404) => {}
            (known, status) => problems.push(format!(
                "secret {name} ({known:?}) answers {status}: {}",
                r.text
            )),
        }
    }

    // 5. Blobs: whole, or absent if never acknowledged; and every listed blob whole.
    let blobs: Vec<(String, Blob)> = {
        let m = load.model.lock().unwrap();
        m.blobs
            .iter()
            .map(|(k, b)| (k.clone(), b.clone()))
            .collect()
    };
    for (name, b) in &blobs {
        let r = t
            .http
            .get(t.blob(ACCOUNT, &format!("/{CONTAINER}/{name}")))
            .bearer_auth(&load.storage_token)
            .header("x-ms-version", "2023-11-03")
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let bytes = r.bytes().await.unwrap();
        match (b.known, status) {
            (Known::Present | Known::Uncertain, 200) => {
                if bytes.len() != b.len || sha256(&bytes) != b.digest {
                    problems.push(format!(
                        "blob {name} has {} bytes, not the {} written",
                        bytes.len(),
                        b.len
                    ));
                }
                load.model
                    .lock()
                    .unwrap()
                    .blobs
                    .get_mut(name)
                    .unwrap()
                    .known = Known::Present;
            }
            (Known::Uncertain, 404) => {
                load.model
                    .lock()
                    .unwrap()
                    .blobs
                    .get_mut(name)
                    .unwrap()
                    .known = Known::Absent;
            }
            (Known::Absent, 404) => {}
            (known, status) => problems.push(format!("blob {name} ({known:?}) answers {status}")),
        }
    }
    let listing = call(
        &t.http,
        Method::GET,
        &t.blob(
            ACCOUNT,
            &format!("/{CONTAINER}?restype=container&comp=list"),
        ),
        Req {
            token: Some(&load.storage_token),
            headers: vec![("x-ms-version", "2023-11-03".to_string())],
            ..Default::default()
        },
    )
    .await;
    if listing.status != 200 {
        problems.push(format!(
            "listing blobs: {} {}",
            listing.status, listing.text
        ));
    } else {
        let m = load.model.lock().unwrap();
        for name in listing
            .text
            .split("<Name>")
            .skip(1)
            .filter_map(|s| s.split("</Name>").next())
        {
            match m.blobs.get(name) {
                Some(b) if b.known == Known::Present => {}
                other => problems.push(format!("listed blob {name} is {other:?}")),
            }
        }
    }

    // Everything in flight is settled, one way or the other.
    {
        let mut m = load.model.lock().unwrap();
        for (kind, key, existed) in &in_flight {
            match (m.known(kind, key), existed) {
                (Known::Uncertain, _) => problems.push(format!("{kind} {key} was never settled")),
                // A delete applied, or a creation applied.
                (Known::Absent, true) | (Known::Present, false) => m.settled_applied += 1,
                _ => m.settled_not_applied += 1,
            }
        }
    }

    // 6. A managed identity still gets a token after the crash.
    let vm = {
        let m = load.model.lock().unwrap();
        m.vms
            .values()
            .find(|v| v.known == Known::Present)
            .map(|v| (v.id.clone(), v.principal.clone()))
    };
    if let Some((id, principal)) = vm {
        let session = call(
            &t.http,
            Method::POST,
            &t.arm("/lanyard/sessions"),
            bearer_json(token, &json!({"resource": id})),
        )
        .await;
        if session.status != 201 {
            problems.push(format!(
                "session for {id}: {} {}",
                session.status, session.text
            ));
        } else {
            let url = format!(
                "{}/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://management.azure.com/",
                session.json["imdsEndpoint"].as_str().unwrap()
            );
            let r = reqwest::Client::new()
                .get(url)
                .header("Metadata", "true")
                .send()
                .await
                .unwrap();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            match body["access_token"].as_str() {
                Some(tok) if jwt_parts(tok).1["oid"] == principal.as_str() => {}
                _ => problems.push(format!("no token for {id} after the restart: {body}")),
            }
            let sid = session.json["id"].as_str().unwrap();
            call(
                &t.http,
                Method::DELETE,
                &t.arm(&format!("/lanyard/sessions/{sid}")),
                bearer(token),
            )
            .await;
        }
    }
    problems
}
