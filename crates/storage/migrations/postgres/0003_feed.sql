-- The commit feed: one entry per committed batch that changes what servers keep in memory
-- (role assignments and definitions, principals, resources, revocations, signing keys,
-- followed documents). Servers sharing the database apply the entries in `seq` order.
--
-- `seq` is given by the single feed_head row, updated inside the committing transaction:
-- the row lock is held until commit, so a transaction that takes seq n+1 only does so after
-- the holder of n committed. Sequence numbers are contiguous and become visible in order
-- (a rolled-back transaction gives its number back, unlike a sequence or bigserial).
CREATE TABLE feed_head (
    id             BIGINT NOT NULL PRIMARY KEY,
    seq            BIGINT NOT NULL,                         -- the last number given
    pruned_through BIGINT NOT NULL                          -- entries at or below were pruned
);
INSERT INTO feed_head (id, seq, pruned_through) VALUES (1, 0, 0);

CREATE TABLE feed (
    seq  BIGINT NOT NULL PRIMARY KEY,
    body TEXT NOT NULL                                      -- the entry's changes, JSON
);
