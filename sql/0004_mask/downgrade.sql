-- Uninstall dynamic masking: every masked role is restored (search_path,
-- withheld privileges), every mask schema dropped, then the objects of the
-- mask revision.
DROP EVENT TRIGGER IF EXISTS veil_detach_mask_views;
DROP EVENT TRIGGER IF EXISTS veil_refresh_masking;
DO $uninstall$
DECLARE
    masked oid;
    mask_schema oid;
BEGIN
    FOR masked IN SELECT roleid FROM veil_private.masked_roles LOOP
        PERFORM veil_private.unmask_role(masked);
    END LOOP;
    FOR mask_schema IN SELECT mask_nspid FROM veil_private.mask_schemas LOOP
        EXECUTE pg_catalog.format('DROP SCHEMA IF EXISTS %I CASCADE', mask_schema::regnamespace::name);
    END LOOP;
END
$uninstall$;
DROP TRIGGER mask_role_on_insert ON veil_private.role_rules;
DROP TRIGGER unmask_role_on_delete ON veil_private.role_rules;
DROP TRIGGER refresh_masking_on_insert ON veil_private.column_rules;
DROP TRIGGER refresh_masking_on_update ON veil_private.column_rules;
DROP TRIGGER refresh_masking_on_delete ON veil_private.column_rules;
DROP TRIGGER refresh_masking_on_policy_change ON veil_private.policies;
DROP FUNCTION veil.masking_problems(), veil.refresh_masking(text),
    veil_private.detach_mask_views_before_ddl(), veil_private.refresh_masking_after_ddl(),
    veil_private.mask_roles_after_rule_change(), veil_private.unmask_role(oid), veil_private.mask_role(text, oid),
    veil_private.apply_masked_role(oid), veil_private.set_mask_access(name, text, boolean),
    veil_private.set_role_search_path(oid, text[]), veil_private.this_database(),
    veil_private.search_path_entries(text), veil_private.role_setting(oid, oid, text),
    veil_private.withhold_raw_access(oid), veil_private.raw_access(text, oid), veil_private.masked_relations(text),
    veil_private.refresh_masking_after_policy_change(), veil_private.refresh_masking_after_rule_change(),
    veil_private.refresh_views_policy(text), veil_private.stale_mask_views(text),
    veil_private.build_mask_views(text), veil_private.detach_mask_views(), veil_private.masked_source_schemas(text),
    veil_private.mask_view_query(text, oid), veil_private.mask_column(text, oid, smallint),
    veil_private.inline_partial_email(text), veil_private.inline_partial(text, text, text, text),
    veil_private.calls_volatile(text), veil_private.toolkit_owner(), veil_private.mask_schema_name(text, oid),
    veil_private.start_building_masks(), veil_private.finish_building_masks(text), veil_private.building_masks();
DROP VIEW veil.masked_roles, veil.mask_views;
DROP TABLE veil_private.dictionary_items, veil_private.withheld_privileges, veil_private.masked_roles, veil_private.mask_views,
    veil_private.mask_schemas;
