-- The commit feed: one entry per committed batch that changes what servers keep in memory
-- (role assignments and definitions, principals, resources, revocations, signing keys,
-- followed documents). Servers sharing the database apply the entries in `seq` order.
-- SQLite has one writer at a time, so numbers are given in commit order; they are
-- contiguous (a rolled-back batch gives its number back).
CREATE TABLE feed_head (
    id             INTEGER NOT NULL PRIMARY KEY,
    seq            INTEGER NOT NULL,            -- the last number given
    pruned_through INTEGER NOT NULL             -- entries at or below were pruned
) STRICT;
INSERT INTO feed_head (id, seq, pruned_through) VALUES (1, 0, 0);

CREATE TABLE feed (
    seq  INTEGER NOT NULL PRIMARY KEY,
    body TEXT NOT NULL                          -- the entry's changes, JSON
) STRICT;
