-- Lanyard schema, SQLite dialect.
--
-- Ids and scope keys are TEXT; keys are lower-cased ARM ids, compared bytewise (BINARY
-- collation), so "everything below scope k" is the range ('k/', 'k0').
-- Timestamps are unix nanoseconds (INTEGER): exact round trips, and they sort.
-- body columns hold JSON text the store does not look inside.

CREATE TABLE meta (
    key   TEXT NOT NULL PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

CREATE TABLE tenants (
    id   TEXT NOT NULL PRIMARY KEY,
    body TEXT NOT NULL
) STRICT;

CREATE TABLE subscriptions (
    id        TEXT NOT NULL PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    body      TEXT NOT NULL
) STRICT;

CREATE TABLE resources (
    key              TEXT NOT NULL PRIMARY KEY, -- lower-cased id
    id               TEXT NOT NULL,             -- id as written
    type_key         TEXT NOT NULL,             -- lower-cased ARM type
    resource_type    TEXT NOT NULL,             -- ARM type as written
    subscription_key TEXT,                      -- key of the subscription scope
    group_key        TEXT,                      -- key of the resource group scope
    parent_key       TEXT,                      -- key of the scope directly above
    body             TEXT NOT NULL,
    created_at_ns    INTEGER NOT NULL,
    updated_at_ns    INTEGER NOT NULL
) STRICT;
CREATE INDEX resources_by_parent ON resources (parent_key, key);
CREATE INDEX resources_by_type ON resources (type_key, key);

CREATE TABLE principals (
    object_id TEXT NOT NULL PRIMARY KEY,
    client_id TEXT UNIQUE,                      -- service principals only
    body      TEXT NOT NULL
) STRICT;

CREATE TABLE credentials (
    id            TEXT NOT NULL PRIMARY KEY,
    principal_id  TEXT NOT NULL,
    kind          TEXT NOT NULL,
    body          TEXT NOT NULL,
    created_at_ns INTEGER NOT NULL
) STRICT;
CREATE INDEX credentials_by_principal ON credentials (principal_id);

CREATE TABLE role_definitions (
    id   TEXT NOT NULL PRIMARY KEY,
    body TEXT NOT NULL
) STRICT;

CREATE TABLE role_assignments (
    id                 TEXT NOT NULL PRIMARY KEY,
    scope_key          TEXT NOT NULL,
    scope              TEXT NOT NULL,
    role_definition_id TEXT NOT NULL,
    principal_id       TEXT NOT NULL,
    body               TEXT NOT NULL
) STRICT;
-- Also the index for scope lookups: scope_key leads.
CREATE UNIQUE INDEX role_assignments_scope_role_principal
    ON role_assignments (scope_key, role_definition_id, principal_id);
CREATE INDEX role_assignments_by_principal ON role_assignments (principal_id);

-- Outlives the principal: tokens issued before valid_after (unix seconds) stay refused.
CREATE TABLE revocations (
    principal_id TEXT NOT NULL PRIMARY KEY,
    valid_after  INTEGER NOT NULL
) STRICT;

CREATE TABLE activity (
    id        TEXT NOT NULL PRIMARY KEY,
    time_ns   INTEGER NOT NULL,
    scope_key TEXT NOT NULL,
    caller_id TEXT,
    body      TEXT NOT NULL                     -- the whole record
) STRICT;
CREATE INDEX activity_by_time ON activity (time_ns);
CREATE INDEX activity_by_scope ON activity (scope_key, time_ns);

CREATE TABLE sign_ins (
    id           TEXT NOT NULL PRIMARY KEY,
    time_ns      INTEGER NOT NULL,
    principal_id TEXT,
    body         TEXT NOT NULL                  -- the whole record
) STRICT;
CREATE INDEX sign_ins_by_time ON sign_ins (time_ns);
CREATE INDEX sign_ins_by_principal ON sign_ins (principal_id, time_ns);

CREATE TABLE signing_keys (
    kid  TEXT NOT NULL PRIMARY KEY,
    body TEXT NOT NULL                          -- sealed under the key-encryption key
) STRICT;
