-- The saga manager's durable state beside each saga's own event stream
-- (saga-<saga_id>, the truth: started, steps, compensations, state).

-- Work to do: one row per saga that is not finished, due at due_at.
-- A worker claims a due, unclaimed row (FOR UPDATE SKIP LOCKED, in a
-- statement of its own) by setting claimed_until a lease ahead, so any
-- number of es-saga processes share the work, no transaction stays open
-- while a saga runs, and a row survives restarts (a dead worker's claim
-- runs out); a retry's backoff and a step's timeout are due times
-- here.  input is the data of the event that started the saga; failures
-- counts consecutive failed runs of the engine on this saga (a dead letter
-- past the limit); wakes counts inbox deliveries, so a delivery during a
-- run is not overwritten by the due time the run ends with.
CREATE TABLE es_saga_work (
    saga_id    text PRIMARY KEY,
    flow       text        NOT NULL,
    input      jsonb       NOT NULL,
    due_at     timestamptz NOT NULL DEFAULT now(),
    failures   integer     NOT NULL DEFAULT 0,
    wakes      integer     NOT NULL DEFAULT 0,
    claimed_until timestamptz NOT NULL DEFAULT '-infinity',
    last_error text,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX es_saga_work_due ON es_saga_work (due_at);

-- Events delivered to a saga, once each (the inbox of handled ids): a
-- duplicate delivery hits the primary key and does nothing.
CREATE TABLE es_saga_inbox (
    saga_id    text        NOT NULL,
    event_id   uuid        NOT NULL,
    type       text        NOT NULL,
    data       jsonb       NOT NULL,
    seq        bigint      NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (saga_id, event_id)
);

-- How far the saga manager has read the events stream (feed sequence),
-- moved in the transaction that records what the events caused.
CREATE TABLE es_saga_checkpoint (
    name     text PRIMARY KEY,
    seq      bigint NOT NULL,
    position text   NOT NULL
);

-- What the saga manager could not handle: an event it cannot start or
-- route a saga from, or a saga whose engine kept failing.  Nothing is
-- dropped: an operator lists these and replays them (es-saga).
CREATE TABLE es_saga_dead_letters (
    id          bigserial PRIMARY KEY,
    saga_id     text,
    flow        text,
    event_id    uuid,
    event_type  text,
    payload     jsonb       NOT NULL,
    reason      text        NOT NULL,
    attempts    integer     NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    replayed_at timestamptz
);
-- An event is a dead letter once per flow, however often the intake
-- replays it after a crash.
CREATE UNIQUE INDEX es_saga_dead_letters_event ON es_saga_dead_letters (event_id, flow)
    WHERE event_id IS NOT NULL;
