//! Runs the JSON scenario corpus in `tests/scenarios/*.json` against both the index and
//! the reference evaluator.
//!
//! A file is `{"description", "scenarios": [...]}`. A scenario names custom `roles`,
//! `groups` (name → member names), `assignments` (`{principal, role, scope, name?}`;
//! `role` is a built-in or custom role name, or a GUID), `checks`
//! (`{principal, action | dataAction, scope, allowed, explains?: [substrings]}`),
//! `assignable` (`{role, scope, ok, explains?}`), and `then`: later steps that add or
//! remove assignments (by `name`), roles and group memberships before more checks.
//! Principal names become stable GUIDs; explanations are rendered with the name.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use lanyard_authz::reference;
use lanyard_authz::{check_assignable, AccessRequest, ActionKind};
use lanyard_domain::{builtin, Permission, RoleDefinition};
use serde::Deserialize;
use uuid::Uuid;

use crate::kit::{assignment, custom_role, rid, Names, Pair};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CorpusFile {
    #[allow(dead_code)]
    description: String,
    scenarios: Vec<Scenario>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Scenario {
    name: String,
    #[serde(default)]
    roles: Vec<RoleSpec>,
    #[serde(default)]
    groups: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    assignments: Vec<AssignmentSpec>,
    #[serde(default)]
    checks: Vec<CheckSpec>,
    #[serde(default)]
    assignable: Vec<AssignableSpec>,
    #[serde(default)]
    then: Vec<Step>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Step {
    #[serde(default)]
    roles: Vec<RoleSpec>,
    #[serde(default)]
    remove_roles: Vec<String>,
    #[serde(default)]
    groups: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    assignments: Vec<AssignmentSpec>,
    #[serde(default)]
    remove: Vec<String>,
    #[serde(default)]
    checks: Vec<CheckSpec>,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RoleSpec {
    name: String,
    permissions: Vec<Permission>,
    #[serde(default = "root_only")]
    assignable_scopes: Vec<String>,
}

fn root_only() -> Vec<String> {
    vec!["/".to_string()]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AssignmentSpec {
    principal: String,
    role: String,
    scope: String,
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CheckSpec {
    principal: String,
    action: Option<String>,
    data_action: Option<String>,
    scope: String,
    allowed: bool,
    #[serde(default)]
    explains: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AssignableSpec {
    role: String,
    scope: String,
    ok: bool,
    #[serde(default)]
    explains: Vec<String>,
}

struct Run {
    pair: Pair,
    names: Names,
    roles: BTreeMap<String, RoleDefinition>,
    assignment_ids: BTreeMap<String, Uuid>,
    where_: String,
    failures: Vec<String>,
    checks: usize,
    roles_used: BTreeSet<String>,
}

impl Run {
    fn role(&self, name: &str) -> RoleDefinition {
        if let Some(r) = self.roles.get(&name.to_ascii_lowercase()) {
            return r.clone();
        }
        if let Ok(id) = Uuid::parse_str(name) {
            return self
                .roles
                .values()
                .find(|r| r.id == id)
                .cloned()
                .unwrap_or_else(|| custom_role(id, name, vec![], vec![]));
        }
        panic!("{}: unknown role `{name}`", self.where_)
    }

    fn add_roles(&mut self, specs: &[RoleSpec]) {
        for spec in specs {
            let id = self
                .roles
                .get(&spec.name.to_ascii_lowercase())
                .map_or_else(|| self.names.id(&format!("role:{}", spec.name)), |r| r.id);
            let role = custom_role(
                id,
                &spec.name,
                spec.permissions.clone(),
                spec.assignable_scopes.iter().map(|s| rid(s)).collect(),
            );
            self.pair.upsert_role(&role);
            self.roles.insert(spec.name.to_ascii_lowercase(), role);
        }
    }

    fn set_groups(&mut self, groups: &BTreeMap<String, Vec<String>>) {
        for (group, members) in groups {
            let g = self.names.id(group);
            let ms: Vec<Uuid> = members.iter().map(|m| self.names.id(m)).collect();
            self.pair.set_group(g, &ms);
        }
    }

    fn add_assignments(&mut self, specs: &[AssignmentSpec]) {
        for (i, spec) in specs.iter().enumerate() {
            let role = self.role(&spec.role);
            self.roles_used.insert(role.role_name.clone());
            let label = spec
                .name
                .clone()
                .unwrap_or_else(|| format!("#{}-{i}", self.assignment_ids.len()));
            let id = self
                .names
                .id(&format!("assignment:{}:{label}", self.where_));
            let principal = self.names.id(&spec.principal);
            self.pair
                .add(&assignment(id, principal, role.id, &rid(&spec.scope)));
            self.assignment_ids.insert(label, id);
        }
    }

    fn run_checks(&mut self, checks: &[CheckSpec]) {
        for c in checks {
            self.checks += 1;
            let (action, kind) = match (&c.action, &c.data_action) {
                (Some(a), None) => (a.as_str(), ActionKind::Control),
                (None, Some(a)) => (a.as_str(), ActionKind::Data),
                _ => panic!(
                    "{}: a check needs exactly one of action, dataAction",
                    self.where_
                ),
            };
            let principal = self.names.id(&c.principal);
            let scope = rid(&c.scope);
            let request = AccessRequest {
                principal,
                action,
                kind,
                scope: &scope,
            };
            let decision = self.pair.index.check(&request);
            let text = decision.explain_as(Some(&c.principal));
            let label = format!(
                "{}: {} {} `{action}` at `{}`",
                self.where_,
                c.principal,
                kind.noun(),
                c.scope
            );
            if decision.is_allowed() != c.allowed {
                self.failures.push(format!(
                    "{label}: index says allowed={}, expected {}\n    {text}",
                    decision.is_allowed(),
                    c.allowed
                ));
            }
            if self.pair.index.allows(&request) != decision.is_allowed() {
                self.failures
                    .push(format!("{label}: allows() disagrees with check()"));
            }
            if reference::is_allowed(&self.pair.env, &request) != c.allowed {
                self.failures.push(format!(
                    "{label}: reference says allowed={}, expected {}",
                    !c.allowed, c.allowed
                ));
            }
            for needle in &c.explains {
                if !text.contains(needle.as_str()) {
                    self.failures
                        .push(format!("{label}: explanation lacks `{needle}`\n    {text}"));
                }
            }
        }
    }
}

fn corpus_files() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
}

#[test]
fn scenario_corpus() {
    let builtins: BTreeMap<String, RoleDefinition> = builtin::built_in_roles()
        .into_iter()
        .map(|r| (r.role_name.to_ascii_lowercase(), r))
        .collect();
    let mut failures = Vec::new();
    let mut checks = 0;
    let mut scenarios = 0;
    let mut roles_used = BTreeSet::new();
    let files = corpus_files();
    assert!(files.len() >= 5, "corpus files missing: {files:?}");
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let corpus: CorpusFile =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let file_name = file.file_name().unwrap().to_string_lossy().to_string();
        for s in corpus.scenarios {
            scenarios += 1;
            let mut run = Run {
                pair: Pair::with_builtins(),
                names: Names::default(),
                roles: builtins.clone(),
                assignment_ids: BTreeMap::new(),
                where_: format!("{file_name} / {}", s.name),
                failures: Vec::new(),
                checks: 0,
                roles_used: BTreeSet::new(),
            };
            run.add_roles(&s.roles);
            run.set_groups(&s.groups);
            run.add_assignments(&s.assignments);
            run.run_checks(&s.checks);
            for a in &s.assignable {
                run.checks += 1;
                let role = run.role(&a.role);
                let result = check_assignable(&role, &rid(&a.scope));
                if result.is_ok() != a.ok {
                    run.failures.push(format!(
                        "{}: assign `{}` at `{}`: got {result:?}",
                        run.where_, a.role, a.scope
                    ));
                }
                if let Err(e) = &result {
                    for needle in &a.explains {
                        if !e.to_string().contains(needle.as_str()) {
                            run.failures
                                .push(format!("{}: error lacks `{needle}`: {e}", run.where_));
                        }
                    }
                }
            }
            for (i, step) in s.then.iter().enumerate() {
                run.where_ = format!("{file_name} / {} / step {}", s.name, i + 1);
                run.add_roles(&step.roles);
                for name in &step.remove_roles {
                    let role = run.role(name);
                    run.pair.remove_role(role.id);
                }
                run.set_groups(&step.groups);
                for name in &step.remove {
                    let id = *run
                        .assignment_ids
                        .get(name)
                        .unwrap_or_else(|| panic!("{}: no assignment `{name}`", run.where_));
                    assert!(run.pair.remove(id), "{}: `{name}` not removed", run.where_);
                }
                run.add_assignments(&step.assignments);
                run.run_checks(&step.checks);
            }
            failures.extend(run.failures);
            checks += run.checks;
            roles_used.extend(run.roles_used);
        }
    }
    let missing: Vec<String> = builtins
        .values()
        .map(|r| r.role_name.clone())
        .filter(|n| !roles_used.contains(n))
        .collect();
    assert!(
        missing.is_empty(),
        "built-in roles without a scenario: {missing:?}"
    );
    assert!(checks >= 150, "only {checks} checks in the corpus");
    assert!(
        failures.is_empty(),
        "{} of {checks} checks in {scenarios} scenarios failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!("scenario corpus: {scenarios} scenarios, {checks} checks passed");
}
