-- Records of the data planes (Key Vault secrets, blob metadata), addressed by collection and
-- key. Keys are '/'-separated paths chosen by each plane so that a prefix is a range.
CREATE TABLE documents (
    collection TEXT NOT NULL,
    key        TEXT NOT NULL,
    version    INTEGER NOT NULL,
    body       TEXT NOT NULL,
    PRIMARY KEY (collection, key)
) STRICT;
