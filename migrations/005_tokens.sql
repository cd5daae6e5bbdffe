-- Access tokens of the HTTP APIs (events/token.c).  A row is the lookup
-- form of a token: its name, the SHA-256 of its secret (never the secret
-- itself), its scopes, its optional expiry and rate.  The same
-- transaction that writes a row appends TokenCreated or TokenRevoked to
-- the stream token-<name>, so the store's log says who could do what
-- and since when.  A name is never reused: a revoked row stays.
CREATE TABLE es_tokens (
    name        text        PRIMARY KEY,
    secret_hash bytea       NOT NULL UNIQUE CHECK (length(secret_hash) = 32),
    scopes      text[]      NOT NULL,
    rate        integer     NOT NULL DEFAULT 0 CHECK (rate >= 0),
    expires_at  timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
