-- Records of the data planes (Key Vault secrets, blob metadata), addressed by collection and
-- key. Keys are '/'-separated paths chosen by each plane so that a prefix is a range.
CREATE TABLE documents (
    collection TEXT COLLATE "C" NOT NULL,
    key        TEXT COLLATE "C" NOT NULL,
    version    BIGINT NOT NULL,
    body       TEXT NOT NULL,
    PRIMARY KEY (collection, key)
);
