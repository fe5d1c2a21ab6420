-- The kind of each principal (`User`, `Group`, `ServicePrincipal`: the `type` tag of the
-- body's `kind`) in a column of its own, so that the groups, which the authorization index
-- loads at start, are found without reading every principal's body.
ALTER TABLE principals ADD COLUMN kind TEXT COLLATE "C";
UPDATE principals SET kind = (body::jsonb) -> 'kind' ->> 'type';
CREATE INDEX principals_by_kind ON principals (kind);
