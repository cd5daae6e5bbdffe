-- The operator console lists the events that share a correlation id
-- (es_audit_correlated in events/audit.c), in feed order, a page at a
-- time: one walk of this index from the page's last position, whatever
-- the size of the store.  Every event es-command writes carries
-- metadata.correlation_id (the command id unless the caller gave one).
-- Built in the migration's transaction, which holds off appends while it
-- runs: on a large store, apply it in a quiet moment (docs/OPERATIONS.md).
-- The key is the id's first 200 characters: the metadata is the client's
-- (a raw append passes it through), and a btree refuses a key over 2,704
-- bytes, which would refuse the append itself.  Console ids are at most
-- 200 bytes, so the prefix finds them; the query also compares the whole id.
CREATE INDEX IF NOT EXISTS es_events_correlation
    ON es_events (left(metadata ->> 'correlation_id', 200), transaction_id, global_position);
