-- fake_*: a random dictionary value per call (non-deterministic, not keyed).

CREATE FUNCTION veil.fake_first_name()
RETURNS text
LANGUAGE plpgsql VOLATILE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$ BEGIN RETURN veil.fake_value('first_name'); END $$;
COMMENT ON FUNCTION veil.fake_first_name() IS 'A random fake first name.';

CREATE FUNCTION veil.fake_last_name()
RETURNS text
LANGUAGE plpgsql VOLATILE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$ BEGIN RETURN veil.fake_value('last_name'); END $$;
COMMENT ON FUNCTION veil.fake_last_name() IS 'A random fake last name.';

CREATE FUNCTION veil.fake_email()
RETURNS text
LANGUAGE plpgsql VOLATILE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$ BEGIN RETURN veil.fake_value('email'); END $$;
COMMENT ON FUNCTION veil.fake_email() IS 'A random fake email address.';

CREATE FUNCTION veil.fake_phone()
RETURNS text
LANGUAGE plpgsql VOLATILE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$ BEGIN RETURN veil.fake_value('phone'); END $$;
COMMENT ON FUNCTION veil.fake_phone() IS 'A random fake phone number.';

CREATE FUNCTION veil.fake_address()
RETURNS text
LANGUAGE plpgsql VOLATILE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$ BEGIN RETURN veil.fake_value('address'); END $$;
COMMENT ON FUNCTION veil.fake_address() IS 'A random fake postal address.';

CREATE FUNCTION veil.fake_city()
RETURNS text
LANGUAGE plpgsql VOLATILE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$ BEGIN RETURN veil.fake_value('city'); END $$;
COMMENT ON FUNCTION veil.fake_city() IS 'A random fake city.';

CREATE FUNCTION veil.fake_country()
RETURNS text
LANGUAGE plpgsql VOLATILE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$ BEGIN RETURN veil.fake_value('country'); END $$;
COMMENT ON FUNCTION veil.fake_country() IS 'A random fake country.';

CREATE FUNCTION veil.fake_company()
RETURNS text
LANGUAGE plpgsql VOLATILE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$ BEGIN RETURN veil.fake_value('company'); END $$;
COMMENT ON FUNCTION veil.fake_company() IS 'A random fake company name.';

CREATE FUNCTION veil.fake_iban()
RETURNS text
LANGUAGE plpgsql VOLATILE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$ BEGIN RETURN veil.fake_value('iban'); END $$;
COMMENT ON FUNCTION veil.fake_iban() IS 'A random fake IBAN.';

CREATE FUNCTION veil.fake_postcode()
RETURNS text
LANGUAGE plpgsql VOLATILE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$ BEGIN RETURN veil.fake_value('postcode'); END $$;
COMMENT ON FUNCTION veil.fake_postcode() IS 'A random fake postcode.';
