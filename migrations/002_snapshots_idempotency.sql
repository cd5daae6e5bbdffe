-- Aggregate snapshots and the idempotency records of HTTP requests.

-- The latest snapshot of a stream's aggregate state: rebuilding it reads
-- the snapshot and the events after its version.  state_version is the
-- aggregate code's own version: a snapshot taken by older code is ignored.
CREATE TABLE es_snapshots (
    stream_id     text PRIMARY KEY,
    version       bigint      NOT NULL,
    state_version integer     NOT NULL,
    state         jsonb       NOT NULL,
    taken_at      timestamptz NOT NULL DEFAULT now()
);

-- The first response to each Idempotency-Key, replayed for a repeat with
-- the same request and refused (422) for a different one.
CREATE TABLE es_idempotency (
    key          text PRIMARY KEY,
    request_hash text        NOT NULL,
    status       integer     NOT NULL,
    body         text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
