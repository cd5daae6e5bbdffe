-- Least privilege inside: what each program's own PostgreSQL role may do.
-- The roles are cluster-wide and made by whoever runs the cluster
-- (scripts/servers.sh: one login role per program, with nothing of its
-- own); this file only grants, and skips a role or a table that does not
-- exist, so it applies on any database of any cluster.  Migrations run
-- as the tables' owner (the administrator), which no daemon is.
--
-- The event table is append-only by grants: a role may SELECT and INSERT
-- es_events and nothing more, so UPDATE, DELETE and TRUNCATE are refused
-- by the database itself (tests/test_privilege.c tries each).  A writer
-- inserts directly (the group committer's fast statements in
-- events/store.c) or through es_append, which runs with the caller's
-- rights (SECURITY INVOKER): making es_append SECURITY DEFINER would not
-- remove the need for INSERT, because the fast path does not call it,
-- and would add a search_path switch to every append.  The stream rows
-- (es_streams) are the concurrency guard, not history: writers move them.
--
--   role          events       streams   other
--   es_command    read, insert  write    snapshots write, idempotency
--                                         read + insert, tokens read
--   es_relay      read          read     (advisory lock only); tokens read
--   es_projector  read          read     (rebuild reads the feed); tokens read
--   es_query      -             -        tokens read
--   es_saga       read, insert  write    saga tables read + write; tokens read
--   esctl         read, insert  write    everything read; saga tables
--                                         write; tokens write
-- (es_tokens comes with the bearer tokens' migration; granted if present.
-- Every daemon reads it: each checks the token on its own /metrics.)

DO $$
DECLARE
    -- role, privileges, table: one grant each
    g text[];
    grants text[][] := ARRAY[
        ARRAY['es_command',   'SELECT, INSERT',                 'es_events'],
        ARRAY['es_command',   'SELECT, INSERT, UPDATE',         'es_streams'],
        ARRAY['es_command',   'SELECT, INSERT, UPDATE',         'es_snapshots'],
        ARRAY['es_command',   'SELECT, INSERT',                 'es_idempotency'],
        ARRAY['es_command',   'SELECT',                         'es_tokens'],
        ARRAY['es_relay',     'SELECT',                         'es_events'],
        ARRAY['es_relay',     'SELECT',                         'es_streams'],
        ARRAY['es_relay',     'SELECT',                         'es_tokens'],
        ARRAY['es_projector', 'SELECT',                         'es_events'],
        ARRAY['es_projector', 'SELECT',                         'es_streams'],
        ARRAY['es_projector', 'SELECT',                         'es_tokens'],
        ARRAY['es_query',     'SELECT',                         'es_tokens'],
        ARRAY['es_saga',      'SELECT, INSERT',                 'es_events'],
        ARRAY['es_saga',      'SELECT, INSERT, UPDATE',         'es_streams'],
        ARRAY['es_saga',      'SELECT, INSERT, UPDATE, DELETE', 'es_saga_work'],
        ARRAY['es_saga',      'SELECT, INSERT, UPDATE, DELETE', 'es_saga_inbox'],
        ARRAY['es_saga',      'SELECT, INSERT, UPDATE, DELETE', 'es_saga_checkpoint'],
        ARRAY['es_saga',      'SELECT, INSERT, UPDATE',         'es_saga_dead_letters'],
        ARRAY['es_saga',      'SELECT',                         'es_tokens'],
        ARRAY['esctl',        'SELECT, INSERT',                 'es_events'],
        ARRAY['esctl',        'SELECT, INSERT, UPDATE',         'es_streams'],
        ARRAY['esctl',        'SELECT',                         'es_snapshots'],
        ARRAY['esctl',        'SELECT',                         'es_idempotency'],
        ARRAY['esctl',        'SELECT',                         'es_migrations'],
        ARRAY['esctl',        'SELECT, INSERT, UPDATE, DELETE', 'es_saga_work'],
        ARRAY['esctl',        'SELECT, INSERT, UPDATE, DELETE', 'es_saga_inbox'],
        ARRAY['esctl',        'SELECT, INSERT, UPDATE',         'es_saga_checkpoint'],
        ARRAY['esctl',        'SELECT, INSERT, UPDATE',         'es_saga_dead_letters'],
        ARRAY['esctl',        'SELECT, INSERT, UPDATE, DELETE', 'es_tokens']];
    -- sequences behind serial columns a role inserts into
    seqs text[][] := ARRAY[
        ARRAY['es_saga', 'es_saga_dead_letters_id_seq'],
        ARRAY['esctl',   'es_saga_dead_letters_id_seq']];
BEGIN
    FOREACH g SLICE 1 IN ARRAY grants LOOP
        IF EXISTS (SELECT FROM pg_roles WHERE rolname = g[1])
           AND to_regclass(g[3]) IS NOT NULL THEN
            EXECUTE format('GRANT %s ON TABLE %I TO %I', g[2], g[3], g[1]);
        END IF;
    END LOOP;
    FOREACH g SLICE 1 IN ARRAY seqs LOOP
        IF EXISTS (SELECT FROM pg_roles WHERE rolname = g[1])
           AND to_regclass(g[2]) IS NOT NULL THEN
            EXECUTE format('GRANT USAGE ON SEQUENCE %I TO %I', g[2], g[1]);
        END IF;
    END LOOP;
END
$$;

-- Whatever a daemon role was given by hand before, it never changes or
-- removes history.
DO $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['es_command', 'es_relay', 'es_projector', 'es_query',
                             'es_saga', 'esctl'] LOOP
        IF EXISTS (SELECT FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('REVOKE UPDATE, DELETE, TRUNCATE ON TABLE es_events FROM %I', r);
        END IF;
    END LOOP;
END
$$;
