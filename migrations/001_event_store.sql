-- The event store: one append-only table of events, one row per stream
-- holding its last version (the optimistic-concurrency guard), and the
-- append function that checks the expected version and writes the events
-- in one statement, answering a status instead of raising so that one
-- conflict never aborts the other appends of a group-committed batch.

CREATE TABLE es_streams (
    stream_id text PRIMARY KEY,
    version   bigint NOT NULL          -- version of the stream's last event
);

CREATE TABLE es_events (
    stream_id       text        NOT NULL,
    version         bigint      NOT NULL,
    event_id        uuid        NOT NULL,
    type            text        NOT NULL,
    schema_version  integer     NOT NULL DEFAULT 1,
    data            jsonb       NOT NULL,
    metadata        jsonb       NOT NULL DEFAULT '{}',
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    global_position bigint      GENERATED ALWAYS AS IDENTITY,
    transaction_id  xid8        NOT NULL DEFAULT pg_current_xact_id(),
    -- What precedes the stream id's first '-' ("order" of "order-17"),
    -- set by es_append (a generated column would re-read its expression
    -- from the catalog on every insert).
    category        text        NOT NULL,
    -- The event's place in the append that wrote it: a retry is a
    -- duplicate only if it names exactly that append's events.
    append_index    smallint    NOT NULL DEFAULT 0,
    append_size     smallint    NOT NULL DEFAULT 1,
    PRIMARY KEY (stream_id, version),
    CONSTRAINT es_events_event_id_key UNIQUE (event_id)
);

-- Feed order. A reader of the whole log walks this index and stops below
-- the snapshot's xmin (see es_feed / docs/ARCHITECTURE.md).
CREATE INDEX es_events_feed ON es_events (transaction_id, global_position);
CREATE INDEX es_events_category ON es_events (category, transaction_id, global_position);

-- Nothing filters on event bodies, and sampling jsonb for statistics makes
-- autovacuum's ANALYZE sort large values: skip them.
ALTER TABLE es_events ALTER COLUMN data SET STATISTICS 0,
                      ALTER COLUMN metadata SET STATISTICS 0;

-- Status codes answered by es_append (mirrored in events/store.c):
--   0 appended, 1 duplicate (all ids written before: the original result),
--   2 version conflict (actual_version = the stream's version, -1 if none),
--   3 id clash (some ids written before, or written to another stream).
--
-- p_expected: >= 0 exact version, -1 no stream, -2 any, -3 stream exists.
-- p_events: jsonb array of {"event_id","type","schema_version","data","metadata"}.
--
-- Written in PL/pgSQL, whose statements keep their plans for the session:
-- the common path is one index probe for the ids, one update of the
-- stream row and one insert.
CREATE FUNCTION es_append(p_stream text, p_expected bigint, p_events jsonb,
                          OUT status int, OUT first_version bigint,
                          OUT last_version bigint, OUT txid xid8,
                          OUT last_position bigint, OUT actual_version bigint)
LANGUAGE plpgsql AS $$
DECLARE
    n    int := jsonb_array_length(p_events);
    newv bigint;
BEGIN
    -- A retry of an append that was written already answers the original
    -- result and writes nothing.  Probing the first id is enough: if any
    -- other id is taken, the insert below raises unique_violation, which
    -- the client reports as an id clash.  (A scalar probe of a unique key
    -- also keeps the cached plan on the index even while the table is new
    -- and unanalysed, where "= ANY (array)" may be planned as a scan.)
    IF EXISTS (SELECT 1 FROM es_events WHERE event_id = (p_events->0->>'event_id')::uuid) THEN
        SELECT * INTO status, first_version, last_version, txid, last_position,
                      actual_version
          FROM es_classify_retry(p_stream, p_events);
        RETURN;
    END IF;

    IF p_expected >= 0 THEN
        UPDATE es_streams v SET version = v.version + n
         WHERE v.stream_id = p_stream AND v.version = p_expected
        RETURNING v.version INTO newv;
    ELSIF p_expected = -1 THEN
        INSERT INTO es_streams AS v (stream_id, version) VALUES (p_stream, n - 1)
        ON CONFLICT (stream_id) DO NOTHING
        RETURNING v.version INTO newv;
    ELSIF p_expected = -2 THEN
        INSERT INTO es_streams AS v (stream_id, version) VALUES (p_stream, n - 1)
        ON CONFLICT (stream_id) DO UPDATE SET version = v.version + n
        RETURNING v.version INTO newv;
    ELSE
        UPDATE es_streams v SET version = v.version + n
         WHERE v.stream_id = p_stream
        RETURNING v.version INTO newv;
    END IF;

    IF newv IS NULL THEN
        -- Waiting for the stream row may have been waiting for an
        -- identical retry: then this is a duplicate, not a conflict.
        IF EXISTS (SELECT 1 FROM es_events
                    WHERE event_id = (p_events->0->>'event_id')::uuid) THEN
            SELECT * INTO status, first_version, last_version, txid, last_position,
                          actual_version
              FROM es_classify_retry(p_stream, p_events);
            RETURN;
        END IF;
        status := 2;
        SELECT v.version INTO actual_version FROM es_streams v WHERE v.stream_id = p_stream;
        actual_version := coalesce(actual_version, -1);
        RETURN;
    END IF;

    first_version := newv - n + 1;
    last_version := newv;
    actual_version := newv;
    txid := pg_current_xact_id();
    status := 0;

    -- An id already used by another stream raises unique_violation here;
    -- the client then retries the batch's appends one by one.  One event,
    -- the common case, is inserted without a set-returning function.
    IF n = 1 THEN
        INSERT INTO es_events (stream_id, category, version, event_id, type, schema_version,
                               data, metadata)
        VALUES (p_stream, split_part(p_stream, '-', 1), newv,
                (p_events->0->>'event_id')::uuid, p_events->0->>'type',
                coalesce((p_events->0->>'schema_version')::int, 1), p_events->0->'data',
                coalesce(p_events->0->'metadata', '{}'::jsonb))
        RETURNING global_position INTO last_position;
    ELSE
        WITH ins AS (
            INSERT INTO es_events (stream_id, category, version, event_id, type, schema_version,
                                   data, metadata, append_index, append_size)
            SELECT p_stream, split_part(p_stream, '-', 1), first_version + o - 1,
                   (e->>'event_id')::uuid, e->>'type',
                   coalesce((e->>'schema_version')::int, 1), e->'data',
                   coalesce(e->'metadata', '{}'::jsonb), o - 1, n
              FROM jsonb_array_elements(p_events) WITH ORDINALITY AS t(e, o)
            RETURNING global_position)
        SELECT max(global_position) INTO last_position FROM ins;
    END IF;
END;
$$;

-- The slow path of a retry: ids of this append are stored already.  It is
-- a duplicate (status 1, with the original result) when they are exactly
-- one earlier append to p_stream, in order, with the same types (a command
-- that decided differently the second time is not a retry); otherwise an
-- id clash (3).
CREATE FUNCTION es_classify_retry(p_stream text, p_events jsonb,
                                  OUT status int, OUT first_version bigint,
                                  OUT last_version bigint, OUT txid xid8,
                                  OUT last_position bigint, OUT actual_version bigint)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    nfound int;
    consecutive bool;
BEGIN
    -- Exactly that append: every id found, in this stream, in order, all
    -- of one append (its index and size as recorded), of one transaction.
    SELECT count(*)::int,
           bool_and(e.stream_id = p_stream AND e.append_index = t.o - 1
                    AND e.append_size = jsonb_array_length(p_events)
                    AND e.type = t.x->>'type')
             AND count(DISTINCT e.version - t.o) = 1
             AND count(DISTINCT e.transaction_id) = 1,
           min(e.version), max(e.version), max(e.transaction_id), max(e.global_position)
      INTO nfound, consecutive, first_version, last_version, txid, last_position
      FROM jsonb_array_elements(p_events) WITH ORDINALITY AS t(x, o)
      JOIN es_events e ON e.event_id = (t.x->>'event_id')::uuid;
    SELECT v.version INTO actual_version FROM es_streams v WHERE v.stream_id = p_stream;
    actual_version := coalesce(actual_version, -1);
    IF nfound = jsonb_array_length(p_events) AND consecutive THEN
        status := 1;
    ELSE
        status := 3;
        first_version := NULL; last_version := NULL; txid := NULL; last_position := NULL;
    END IF;
END;
$$;
