//! The index against the reference evaluator on random environments that change over
//! time: many principals, nested (and cyclic) groups, roles with random wildcard
//! patterns and random assignable scopes (so that some assignments lie outside their
//! role's, and must be ignored), scopes of every depth.

use lanyard_authz::reference;
use lanyard_authz::{AccessRequest, ActionKind, Decision, MissReason};
use lanyard_domain::{builtin, Permission, ResourceId};
use uuid::Uuid;

use crate::kit::{assignment, cased, custom_role, scope_vocabulary, Pair, Rng, ACTIONS, PATTERNS};

fn random_patterns(rng: &mut Rng, max: usize) -> Vec<String> {
    (0..rng.below(max + 1))
        .map(|_| {
            let p = *rng.pick(PATTERNS);
            cased(p, rng.below(6))
        })
        .collect()
}

fn random_blocks(rng: &mut Rng) -> Vec<Permission> {
    (0..1 + rng.below(2))
        .map(|_| Permission {
            actions: random_patterns(rng, 3),
            not_actions: random_patterns(rng, 2),
            data_actions: random_patterns(rng, 2),
            not_data_actions: random_patterns(rng, 1),
        })
        .collect()
}

/// Assignable scopes for a custom role: often `/`, otherwise one or two scopes of the
/// vocabulary, so that many assignments fall outside them.
fn random_assignable(rng: &mut Rng, scopes: &[ResourceId]) -> Vec<ResourceId> {
    if rng.chance(40) {
        return vec![ResourceId::root()];
    }
    (0..1 + rng.below(2))
        .map(|_| rng.pick(scopes).clone())
        .collect()
}

struct World {
    pair: Pair,
    principals: Vec<Uuid>,
    groups: Vec<Uuid>,
    roles: Vec<Uuid>,
    scopes: Vec<ResourceId>,
    live: Vec<Uuid>,
}

impl World {
    fn new(rng: &mut Rng) -> Self {
        let mut pair = Pair::with_builtins();
        let principals: Vec<Uuid> = (0..24).map(|_| rng.uuid()).collect();
        let groups: Vec<Uuid> = (0..6).map(|_| rng.uuid()).collect();
        let mut roles: Vec<Uuid> = builtin::built_in_roles().iter().map(|r| r.id).collect();
        let scopes = scope_vocabulary();
        for i in 0..10 {
            let id = rng.uuid();
            let blocks = random_blocks(rng);
            let assignable = random_assignable(rng, &scopes);
            pair.upsert_role(&custom_role(id, &format!("custom{i}"), blocks, assignable));
            roles.push(id);
        }
        // An id no definition will ever have.
        roles.push(rng.uuid());
        Self {
            pair,
            principals,
            groups,
            roles,
            scopes,
            live: Vec::new(),
        }
    }

    fn holder(&self, rng: &mut Rng) -> Uuid {
        if rng.chance(30) {
            *rng.pick(&self.groups)
        } else {
            *rng.pick(&self.principals)
        }
    }

    fn mutate(&mut self, rng: &mut Rng) {
        match rng.below(100) {
            0..=49 => {
                let id = if !self.live.is_empty() && rng.chance(5) {
                    *rng.pick(&self.live)
                } else {
                    rng.uuid()
                };
                let holder = self.holder(rng);
                let role = *rng.pick(&self.roles);
                let scope = rng.pick(&self.scopes).clone();
                self.pair.add(&assignment(id, holder, role, &scope));
                if !self.live.contains(&id) {
                    self.live.push(id);
                }
            }
            50..=69 => {
                if !self.live.is_empty() {
                    let id = self.live.swap_remove(rng.below(self.live.len()));
                    assert!(self.pair.remove(id));
                }
            }
            70..=81 => {
                let group = *rng.pick(&self.groups);
                let members: Vec<Uuid> = (0..rng.below(5))
                    .map(|_| {
                        if rng.chance(25) {
                            *rng.pick(&self.groups)
                        } else {
                            *rng.pick(&self.principals)
                        }
                    })
                    .collect();
                self.pair.set_group(group, &members);
            }
            82..=91 => {
                let id = *rng.pick(&self.roles[self.roles.len() - 11..]);
                let blocks = random_blocks(rng);
                let assignable = random_assignable(rng, &self.scopes);
                let role = custom_role(id, "changed", blocks, assignable);
                self.pair.upsert_role(&role);
            }
            92..=95 => {
                let id = *rng.pick(&self.roles);
                self.pair.remove_role(id);
            }
            _ => {
                let holder = self.holder(rng);
                let n = self.pair.index.remove_assignments_of_principal(holder);
                let before = self.pair.env.assignments.len();
                self.pair
                    .env
                    .assignments
                    .retain(|a| a.principal_id != holder);
                assert_eq!(n, before - self.pair.env.assignments.len());
                let remaining: Vec<Uuid> = self.pair.env.assignments.iter().map(|a| a.id).collect();
                self.live.retain(|id| remaining.contains(id));
            }
        }
    }
}

/// Compares `requests` random requests; returns how many were allowed and how many misses
/// reported an assignment ignored as not assignable.
fn compare(world: &World, rng: &mut Rng, requests: usize) -> (usize, usize) {
    let mut allowed = 0;
    let mut ignored = 0;
    for _ in 0..requests {
        let picked: &&str = rng.pick(ACTIONS);
        let action = cased(picked, rng.below(3));
        let kind = if rng.chance(50) {
            ActionKind::Control
        } else {
            ActionKind::Data
        };
        // Mostly aim near an existing assignment (its holder or a member, at or below its
        // scope) so that both answers are common; otherwise anywhere.
        let (principal, scope) = match world
            .pair
            .env
            .assignments
            .get(rng.below(world.pair.env.assignments.len().max(1)))
        {
            Some(a) if rng.chance(75) => {
                let members = world
                    .pair
                    .env
                    .groups
                    .get(&a.principal_id)
                    .cloned()
                    .unwrap_or_default();
                let principal = if !members.is_empty() && rng.chance(60) {
                    *rng.pick(&members)
                } else {
                    a.principal_id
                };
                let below: Vec<&ResourceId> = world
                    .scopes
                    .iter()
                    .filter(|s| s.is_within(&a.scope))
                    .collect();
                (principal, *rng.pick(&below))
            }
            _ => (world.holder(rng), rng.pick(&world.scopes)),
        };
        let req = AccessRequest {
            principal,
            action: &action,
            kind,
            scope,
        };
        let expected = reference::is_allowed(&world.pair.env, &req);
        let decision = world.pair.index.check(&req);
        assert_eq!(
            decision.is_allowed(),
            expected,
            "index and reference disagree on {req:?}\nindex: {}\nenv: {:#?}",
            decision.explain(),
            world.pair.env
        );
        assert_eq!(world.pair.index.allows(&req), expected);
        match decision {
            Decision::Allow(g) => {
                allowed += 1;
                // The grant names a real assignment whose scope covers the request.
                let a = world
                    .pair
                    .env
                    .assignments
                    .iter()
                    .find(|a| a.id == g.assignment_id)
                    .unwrap();
                assert!(scope.is_within(&a.scope));
                assert_eq!(a.role_definition_id, g.role_id);
                let role = world
                    .pair
                    .env
                    .roles
                    .iter()
                    .find(|r| r.id == g.role_id)
                    .unwrap();
                assert!(reference::role_grants(role, &action, kind));
                assert!(reference::assignable_at(role, &a.scope));
                assert!(
                    reference::identities_of(&world.pair.env, principal).contains(&g.assignee_id)
                );
            }
            Decision::Deny(d) => {
                for m in &d.misses {
                    let a = world
                        .pair
                        .env
                        .assignments
                        .iter()
                        .find(|a| a.id == m.assignment_id)
                        .unwrap();
                    let covers = scope.is_within(&a.scope);
                    let assignable = world
                        .pair
                        .env
                        .roles
                        .iter()
                        .find(|r| r.id == a.role_definition_id)
                        .is_none_or(|r| reference::assignable_at(r, &a.scope));
                    match m.reason {
                        MissReason::OutOfScope { .. } => assert!(!covers && assignable, "{m:?}"),
                        MissReason::NotAssignable { .. } => assert!(!assignable, "{m:?}"),
                        _ => assert!(covers, "{m:?}"),
                    }
                    ignored += usize::from(matches!(m.reason, MissReason::NotAssignable { .. }));
                }
            }
        }
    }
    (allowed, ignored)
}

#[test]
fn index_agrees_with_reference_on_random_worlds() {
    let mut total = 0;
    let mut allowed = 0;
    let mut ignored = 0;
    for seed in 0..120 {
        let mut rng = Rng::new(seed);
        let mut world = World::new(&mut rng);
        for round in 0..12 {
            for _ in 0..(if round == 0 { 25 } else { 6 }) {
                world.mutate(&mut rng);
            }
            let (a, i) = compare(&world, &mut rng, 25);
            allowed += a;
            ignored += i;
            total += 25;
            assert_eq!(
                world.pair.index.len(),
                world.pair.env.assignments.len(),
                "seed {seed}"
            );
        }
    }
    // Both answers must be well represented for the comparison to mean anything.
    assert!(
        allowed > total / 10 && allowed < total * 9 / 10,
        "{allowed} of {total} allowed"
    );
    // Assignments outside their role's assignable scopes must come up often enough.
    assert!(
        ignored > 100,
        "{ignored} misses for a role not assignable there"
    );
    eprintln!(
        "differential: {total} requests, {allowed} allowed, {ignored} ignored-assignment misses"
    );
}

#[test]
fn compiled_patterns_agree_with_reference_matching() {
    let mut rng = Rng::new(7);
    let alphabet = ["a", "b", "/", "*", "A", "ab", "/*/"];
    for _ in 0..20_000 {
        let pattern: String = (0..rng.below(7)).map(|_| *rng.pick(&alphabet)).collect();
        let text: String = (0..rng.below(7))
            .map(|_| *rng.pick(&alphabet[..5]))
            .filter(|s| *s != "*")
            .collect();
        assert_eq!(
            lanyard_authz::ActionPattern::new(&pattern).matches(&text),
            reference::wildcard_match(&pattern, &text),
            "pattern {pattern:?} text {text:?}"
        );
    }
}
