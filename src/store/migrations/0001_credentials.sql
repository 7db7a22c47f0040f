-- Robot accounts' and personal access tokens' credentials, and "log out
-- everywhere" marks. Portable SQL: the same file runs on SQLite and
-- PostgreSQL. Times are Unix seconds. Secrets are never stored: only the
-- SHA-256 of each (hex), which is what a login looks up.
CREATE TABLE credentials (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    account TEXT NOT NULL,
    owner_backend TEXT NOT NULL,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    scopes TEXT NOT NULL,
    labels TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL UNIQUE,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at BIGINT,
    revoked_by TEXT
);
CREATE INDEX credentials_account ON credentials (account);

CREATE TABLE account_logouts (
    account TEXT PRIMARY KEY,
    logged_out_at BIGINT NOT NULL
);
