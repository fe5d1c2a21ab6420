//! Reliability: what must hold when things go wrong, or when someone makes them go wrong.
//! Each module states its property, prints its seed (rerun with `LANYARD_RELIABILITY_SEED`)
//! and counts what it checked. `docs/RELIABILITY.md` lists them with the figures of the
//! last run.
//!
//! Layout:
//! - `kit`: seeded randomness, HTTP calls and tokens, forging tokens with the real signing
//!   key, and `lanyard serve` as a child process (SIGKILL, logs in a file).
//! - `crash`: SIGKILL of the real binary during a mixed write load, on both backends: every
//!   acknowledged write survives and nothing half-written is visible.
//! - `keys`: tokens survive restarts and key rotations; rotation under load fails nothing.
//! - `garbage`: malformed bodies at every write endpoint: a 4xx in the plane's shape, never 500.
//! - `matrix`: principals × roles × scopes × operations against the reference evaluator.
//! - `token_attacks`: forged, foreign, stale and revoked tokens at every plane: 401.
//! - `token_service`: the token endpoint fetches nothing from loopback for a federated
//!   credential (unless allowed) and tells no network error; assertions valid for years are
//!   refused.
//! - `identity_attacks`: what the identity endpoints must refuse, counted in the sign-in log.
//! - `privilege`: seeded random control-plane writes by principals with partial rights, on
//!   both backends: after every step no principal holds a right it did not hold, unless an
//!   actor that could grant it there did.
//! - `rbac_attacks`: raising one's own rights through custom roles, a vault's permission
//!   model or `access explain`, on both backends: refused with ARM's 403.
//! - `revocation`: deleting a host revokes what its identities got there; mints racing a
//!   deletion or a detach leave no token that validates after it returned.
//! - `sessions`: workload sessions end with their opener's rights and their resource's
//!   incarnation, serve only the process tree that opened them, and are capped.
//! - `secrets`: secret values and key material never reach the database, the blob
//!   directory's metadata or the logs; every file but the public ones is 0600.
//! - `at_rest`: files and directories the server writes are private (0600, 0700) even in a
//!   data directory others may read, which is reported; an older version's are tightened.
//! - `connections`: what an unauthenticated client can hold is bounded: the connection
//!   limit, the request-body deadline (408 in each plane's shape), the idle timeout.
//! - `soak`: `scripts/soak`'s driver (ignored in the default run).

mod at_rest;
mod connections;
mod crash;
mod garbage;
mod identity_attacks;
mod keys;
mod kit;
mod matrix;
mod privilege;
mod rbac_attacks;
mod revocation;
mod secrets;
mod sessions;
mod soak;
mod token_attacks;
mod token_service;
