-- Rules that exist already (the mask revision installed again after a
-- downgrade) take effect at install: views built, labeled roles masked.
DO $apply$
DECLARE
    policy text;
    masked record;
BEGIN
    FOR policy IN SELECT p.name FROM veil_private.policies p WHERE p.delivery = 'views' LOOP
        PERFORM veil_private.refresh_views_policy(policy);
    END LOOP;
    FOR masked IN
        SELECT r.policy, r.roleid FROM veil_private.role_rules r
        JOIN veil_private.policies p ON p.name = r.policy AND p.delivery = 'views'
        WHERE EXISTS (SELECT FROM pg_catalog.pg_roles ro WHERE ro.oid = r.roleid)
    LOOP
        PERFORM veil_private.mask_role(masked.policy, masked.roleid);
    END LOOP;
END
$apply$;
