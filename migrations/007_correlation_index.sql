-- The operator console lists the events that share a correlation id
-- (es_audit_correlated in events/audit.c), in feed order, a page at a
-- time: one walk of this index from the page's last position, whatever
-- the size of the store.  Every event es-command writes carries
-- metadata.correlation_id (the command id unless the caller gave one).
-- Built in the migration's transaction, which holds off appends while it
-- runs: on a large store, apply it in a quiet moment (docs/OPERATIONS.md).
CREATE INDEX IF NOT EXISTS es_events_correlation
    ON es_events ((metadata ->> 'correlation_id'), transaction_id, global_position);
