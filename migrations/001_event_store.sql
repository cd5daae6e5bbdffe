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
    category        text        GENERATED ALWAYS AS (split_part(stream_id, '-', 1)) STORED,
    PRIMARY KEY (stream_id, version),
    CONSTRAINT es_events_event_id_key UNIQUE (event_id)
);

-- Feed order. A reader of the whole log walks this index and stops below
-- the snapshot's xmin (see es_feed / docs/ARCHITECTURE.md).
CREATE INDEX es_events_feed ON es_events (transaction_id, global_position);
CREATE INDEX es_events_category ON es_events (category, transaction_id, global_position);

-- Status codes answered by es_append (mirrored by es_append_status in
-- events/store.c):
--   0 appended, 1 duplicate (all ids written before: the original result),
--   2 version conflict (actual_version = the stream's version, -1 if none),
--   3 id clash (some ids written before, or written to another stream).
--
-- p_expected: >= 0 exact version, -1 no stream, -2 any, -3 stream exists.
-- p_events: jsonb array of {"event_id","type","schema_version","data","metadata"}.
CREATE FUNCTION es_append(p_stream text, p_expected bigint, p_events jsonb,
                          OUT status int, OUT first_version bigint,
                          OUT last_version bigint, OUT txid xid8,
                          OUT last_position bigint, OUT actual_version bigint)
LANGUAGE plpgsql AS $$
DECLARE
    n      int := jsonb_array_length(p_events);
    ids    uuid[];
    nfound int;
    newv   bigint;
BEGIN
    SELECT array_agg((e->>'event_id')::uuid ORDER BY o) INTO ids
      FROM jsonb_array_elements(p_events) WITH ORDINALITY AS t(e, o);

    -- A retry of an append that was written already answers the original
    -- result and writes nothing.
    SELECT s.status, s.first_version, s.last_version, s.txid, s.last_position, s.nfound
      INTO status, first_version, last_version, txid, last_position, nfound
      FROM es_lookup_ids(p_stream, ids) s;
    IF nfound > 0 THEN
        IF status <> 1 THEN status := 3; END IF;
        SELECT v.version INTO actual_version FROM es_streams v WHERE v.stream_id = p_stream;
        actual_version := coalesce(actual_version, -1);
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
        -- Lost the race to an identical retry? Then it is a duplicate.
        SELECT s.status, s.first_version, s.last_version, s.txid, s.last_position, s.nfound
          INTO status, first_version, last_version, txid, last_position, nfound
          FROM es_lookup_ids(p_stream, ids) s;
        SELECT v.version INTO actual_version FROM es_streams v WHERE v.stream_id = p_stream;
        actual_version := coalesce(actual_version, -1);
        IF nfound > 0 THEN
            IF status <> 1 THEN status := 3; END IF;
        ELSE
            status := 2;
            first_version := NULL; last_version := NULL; txid := NULL; last_position := NULL;
        END IF;
        RETURN;
    END IF;

    first_version := newv - n + 1;
    last_version := newv;
    actual_version := newv;
    txid := pg_current_xact_id();
    status := 0;

    -- An id already used by another stream raises unique_violation here;
    -- the client then retries the batch's appends one by one.
    WITH ins AS (
        INSERT INTO es_events (stream_id, version, event_id, type, schema_version, data, metadata)
        SELECT p_stream, first_version + o - 1, (e->>'event_id')::uuid, e->>'type',
               coalesce((e->>'schema_version')::int, 1), e->'data',
               coalesce(e->'metadata', '{}'::jsonb)
          FROM jsonb_array_elements(p_events) WITH ORDINALITY AS t(e, o)
        RETURNING global_position)
    SELECT max(global_position) INTO last_position FROM ins;
END;
$$;

-- Which of ids are stored, and whether they are exactly one earlier append
-- to p_stream (status 1 with its result) or something else (status 3).
CREATE FUNCTION es_lookup_ids(p_stream text, ids uuid[],
                              OUT status int, OUT nfound int,
                              OUT first_version bigint, OUT last_version bigint,
                              OUT txid xid8, OUT last_position bigint)
LANGUAGE sql STABLE AS $$
    SELECT CASE
             WHEN count(*) = cardinality(ids)
              AND bool_and(e.stream_id = p_stream)
              AND max(e.version) - min(e.version) + 1 = cardinality(ids)
              AND bool_and(e.version - t.o = (SELECT min(version) FROM es_events
                                             WHERE event_id = ids[1]) - 1)
             THEN 1 ELSE 3 END,
           count(*)::int,
           min(e.version), max(e.version), max(e.transaction_id), max(e.global_position)
      FROM unnest(ids) WITH ORDINALITY AS t(id, o)
      JOIN es_events e ON e.event_id = t.id
$$;
