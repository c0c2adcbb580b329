-- Uninstall streaming: every stream (triggers on the sources, copies,
-- generated functions), then the objects of the stream revision.
DO $uninstall$
DECLARE
    streamed regclass;
BEGIN
    FOR streamed IN SELECT source::regclass FROM veil_private.streams LOOP
        PERFORM veil.unstream(streamed);
    END LOOP;
END
$uninstall$;

DROP EVENT TRIGGER IF EXISTS veil_rebuild_streams;
DROP EVENT TRIGGER IF EXISTS veil_drop_streams;
DROP PROCEDURE veil.rekey(integer);
DROP PROCEDURE veil.backfill(regclass, integer);
DROP FUNCTION veil.grant_consumer(name), veil.revoke_consumer(name),
    veil.stream(regclass, text), veil.unstream(regclass),
    veil_private.readable_sources(name), veil_private.grant_copies(name),
    veil_private.delete_stale_tokens(oid, integer), veil_private.old_tokens_remain(),
    veil_private.backfill_batch(oid, integer, text[]),
    veil_private.backfill_start(regclass, integer), veil_private.backfill_finish(regclass),
    veil_private.rebuild_streams_after_ddl(), veil_private.drop_streams_of_dropped_tables(),
    veil.follow_changes(interval), veil.unfollow_changes(),
    veil.follows_changes(), veil_private.notify_change(name, text, bigint, json);
DROP TRIGGER rebuild_streams_on_insert ON veil_private.column_rules;
DROP TRIGGER rebuild_streams_on_update ON veil_private.column_rules;
DROP TRIGGER rebuild_streams_on_delete ON veil_private.column_rules;
DROP FUNCTION veil_private.rebuild_streams_after_rule_change(), veil_private.build_stream(oid),
    veil_private.key_join(), veil_private.copy_write(oid, text, boolean), veil_private.copy_columns(oid, text),
    veil_private.column_type(text, regcollation), veil_private.copy_name(oid),
    veil_private.compiled_column(text, oid, smallint, text), veil_private.is_token_rule(text),
    veil_private.split_arguments(text);
DROP VIEW veil.streams;
DROP TABLE veil_private.consumers, veil_private.backfill_progress, veil_private.stream_columns,
    veil_private.streams;
DROP SCHEMA sanitized;
