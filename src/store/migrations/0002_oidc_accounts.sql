-- People who logged in through an OpenID provider ([[oidc.providers]]):
-- what the provider last said about each, so that their UI sessions and
-- personal access tokens can be checked again without the provider
-- (authn::Authenticators::lookup with backend "oidc"). Portable SQL for
-- SQLite and PostgreSQL; times are Unix seconds; labels are JSON.
CREATE TABLE oidc_accounts (
    account TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    subject TEXT NOT NULL,
    labels TEXT NOT NULL,
    last_login_at BIGINT NOT NULL
);
