-- PII detectors for the scan (pgveil scan, docs/scan.md).
--
-- A value is judged by validation, not by a bare regular expression: a card
-- number must pass Luhn and start like a card, an IBAN its mod-97 check, a
-- Spanish DNI its check letter, a SNILS its checksum, an IP address the
-- ranges of its parts. Where the look of a value would also fit ordinary data
-- (ten bare digits: a phone or an id?) the detector says so with a weak kind
-- ending in '?', which the scan counts only when the column's name agrees.
--
-- Every check is SQL text generated here and written inline into the scan's
-- query: a function call per value (with its search_path setting) costs more
-- than the check. The classification dispatches on cheap tests first (a
-- space? an '@'? the first character) so that most values meet one or two
-- regular expressions, and only values of the right shape meet a checksum.
-- veil.pii_check() and veil.pii_kinds() run the same SQL on one value, for
-- people and tests.

-- The SQL of one check of the text expression arg (evaluated more than once:
-- pass a column or a simple expression). Checks: email, ipv4, ipv6, phone,
-- payment_card, iban, national_id, luhn (arg: 13 to 19 digits).
CREATE FUNCTION veil.pii_check_sql(check_name text, arg text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    expression text;
    letter integer;
BEGIN
    CASE check_name
    WHEN 'email' THEN
        expression := $sql$(@v@ ~ '^[A-Za-z0-9._%+''-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z][A-Za-z]+$')$sql$;
    WHEN 'ipv4' THEN
        expression := $sql$(@v@ ~ '^(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(?:/[0-9]{1,2})?$')$sql$;
    WHEN 'ipv6' THEN
        expression := $sql$(@v@ ~* '^(?:(?:[0-9a-f]{1,4}:){7}[0-9a-f]{1,4}|(?:[0-9a-f]{1,4}:){1,7}:|(?:[0-9a-f]{1,4}:){1,6}:[0-9a-f]{1,4}|(?:[0-9a-f]{1,4}:){1,5}(?::[0-9a-f]{1,4}){1,2}|(?:[0-9a-f]{1,4}:){1,4}(?::[0-9a-f]{1,4}){1,3}|(?:[0-9a-f]{1,4}:){1,3}(?::[0-9a-f]{1,4}){1,4}|(?:[0-9a-f]{1,4}:){1,2}(?::[0-9a-f]{1,4}){1,5}|[0-9a-f]{1,4}:(?::[0-9a-f]{1,4}){1,6}|:(?:(?::[0-9a-f]{1,4}){1,7}|:)|::ffff:[0-9.]+)(?:/[0-9]{1,3})?$')$sql$;
    WHEN 'phone' THEN
        -- International (+ or 00, 9 to 17 digits); national with a trunk 0
        -- and separators (01 23 45 67 89, 030 1234567, (01234) 567890);
        -- Russian 8 (912) 345-67-89; North American with separators. An
        -- extension (x123, ext. 12) is allowed. Bare digits are not judged.
        -- @p@ is the number without its extension (a strpos when it has none).
        expression := pg_catalog.replace($sql$(CASE
            WHEN pg_catalog.left(@v@, 1) = '+' OR pg_catalog.left(@v@, 2) = '00'
                THEN @p@ ~ '^(?:\+|00)[1-9][0-9 ().\/-]+[0-9]$'
                     AND pg_catalog.length(@p@) - pg_catalog.length(pg_catalog.translate(@p@, '0123456789', '')) BETWEEN 9 AND 17
            WHEN pg_catalog.left(@v@, 1) = '0' OR pg_catalog.left(@v@, 2) = '(0'
                THEN @p@ ~ '^(?:\(0[0-9]+\)|0[0-9]+)(?:[ .\/-][0-9][0-9]+)+$'
                     AND pg_catalog.length(@p@) - pg_catalog.length(pg_catalog.translate(@p@, '0123456789', '')) BETWEEN 9 AND 12
            -- Shapes compared as text (every digit a 9): cheaper than a pattern.
            ELSE pg_catalog.translate(@p@, '0123456789', '9999999999') IN (
                     '(999) 999-9999', '(999)999-9999', '999-999-9999', '999.999.9999', '999 999 9999',
                     '1-999-999-9999', '1 999 999 9999', '1.999.999.9999', '1 (999) 999-9999',
                     '9 (999) 999-99-99', '9 999 999-99-99', '9 (999) 999 99 99', '9 999 999 99 99') END)$sql$,
            '@p@', $sql$(CASE WHEN pg_catalog.strpos(@v@, 'x') > 0
                         THEN pg_catalog.regexp_replace(@v@, ' ?(?:x|ext\.? ?)[0-9]{1,6}$', '') ELSE @v@ END)$sql$);
    WHEN 'luhn' THEN
        -- Digits right-aligned in 20 places: from the right, every second one
        -- is doubled (its digit sum read from a table).
        SELECT pg_catalog.format(
            '(SELECT (%s) %% 10 = 0 FROM (SELECT pg_catalog.convert_to(pg_catalog.lpad(@v@, 20, ''0''), ''SQL_ASCII'') AS b OFFSET 0) AS luhn)',
            pg_catalog.string_agg(CASE WHEN i % 2 = 0
                THEN pg_catalog.format('(''{0,2,4,6,8,1,3,5,7,9}''::integer[])[pg_catalog.get_byte(luhn.b, %s) - 47]', i)
                ELSE pg_catalog.format('(pg_catalog.get_byte(luhn.b, %s) - 48)', i) END, ' + ' ORDER BY i))
        INTO expression FROM pg_catalog.generate_series(0, 19) AS i;
    WHEN 'payment_card' THEN
        -- 13 to 19 digits (spaces or dashes between), a card network's prefix, Luhn.
        expression := pg_catalog.format($sql$(CASE WHEN @v@ ~ '^[0-9](?:[ -]?[0-9])+$'
                 AND pg_catalog.length(pg_catalog.translate(@v@, ' -', '')) BETWEEN 13 AND 19
                 AND pg_catalog.translate(@v@, ' -', '') ~ '^(?:4|5[1-5]|2[2-7]|3[47]|3[068]|35|6011|64[4-9]|65|62)'
            THEN %s ELSE false END)$sql$, veil.pii_check_sql('luhn', $sql$pg_catalog.translate(@v@, ' -', '')$sql$));
    WHEN 'iban' THEN
        -- ISO 13616: the first four characters moved to the end, letters
        -- as numbers (A = 10 ... Z = 35), the whole number modulo 97 is 1.
        expression := 'pg_catalog.substr(ib.c, 5) || pg_catalog.left(ib.c, 4)';
        FOR letter IN 0..25 LOOP
            expression := pg_catalog.format('pg_catalog.replace(%s, %L, %L)', expression,
                                            pg_catalog.chr(65 + letter), (10 + letter)::text);
        END LOOP;
        expression := pg_catalog.format($sql$(SELECT CASE WHEN ib.c ~ '^[A-Z][A-Z][0-9][0-9][A-Z0-9]+$' AND pg_catalog.length(ib.c) BETWEEN 15 AND 34
                THEN (%s)::numeric %% 97 = 1 ELSE false END
            FROM (SELECT pg_catalog.replace(@v@, ' ', '') AS c OFFSET 0) AS ib)$sql$, expression);
    WHEN 'national_id' THEN
        -- US SSN without the numbers never issued (area 000, 666, 900-999;
        -- group 00; serial 0000); Spanish DNI (8 digits) or NIE (X, Y or Z
        -- for 0, 1, 2, then 7 digits) and the letter of its remainder by 23;
        -- Russian SNILS 123-456-789 01 with its checksum.
        expression := $sql$(CASE
            WHEN pg_catalog.length(@v@) = 11 AND pg_catalog.translate(@v@, '0123456789', '9999999999') = '999-99-9999'
                THEN pg_catalog.left(@v@, 3) NOT IN ('000', '666') AND pg_catalog.left(@v@, 1) <> '9'
                     AND pg_catalog.substr(@v@, 5, 2) <> '00' AND pg_catalog.right(@v@, 4) <> '0000'
            WHEN pg_catalog.length(@v@) IN (9, 10) AND @v@ ~ '^[XYZ0-9][0-9]{7}-?[A-Z]$' THEN pg_catalog.right(@v@, 1) = pg_catalog.substr('TRWAGMYFPDXBNJZSQVHLCKE',
                pg_catalog.translate(pg_catalog.left(@v@, 8), 'XYZ', '012')::integer % 23 + 1, 1)
            WHEN pg_catalog.length(@v@) = 14
                 AND pg_catalog.translate(@v@, '0123456789', '9999999999') IN ('999-999-999 99', '999-999-999-99') THEN (
                SELECT CASE WHEN sn.total < 100 THEN sn.total WHEN sn.total IN (100, 101) THEN 0 ELSE sn.total % 101 % 100 END
                       = pg_catalog.right(@v@, 2)::integer
                FROM (SELECT 9 * pg_catalog.substr(d.t, 1, 1)::integer + 8 * pg_catalog.substr(d.t, 2, 1)::integer
                           + 7 * pg_catalog.substr(d.t, 3, 1)::integer + 6 * pg_catalog.substr(d.t, 4, 1)::integer
                           + 5 * pg_catalog.substr(d.t, 5, 1)::integer + 4 * pg_catalog.substr(d.t, 6, 1)::integer
                           + 3 * pg_catalog.substr(d.t, 7, 1)::integer + 2 * pg_catalog.substr(d.t, 8, 1)::integer
                           + pg_catalog.substr(d.t, 9, 1)::integer AS total
                      FROM (SELECT pg_catalog.translate(@v@, '- ', '') AS t OFFSET 0) AS d OFFSET 0) AS sn)
            ELSE false END)$sql$;
    ELSE
        RAISE EXCEPTION 'pgveil: there is no check %', pg_catalog.quote_literal(check_name)
            USING HINT = 'Checks: email, ipv4, ipv6, phone, payment_card, iban, national_id, luhn.';
    END CASE;
    RETURN pg_catalog.replace(expression, '@v@', arg);
END
$$;
COMMENT ON FUNCTION veil.pii_check_sql(text, text) IS
    'The SQL of one PII check (email, ipv4, ipv6, phone, payment_card, iban, national_id, luhn) of the text expression arg.';

-- The SQL expression classifying the text expression arg as a text[] of
-- kinds: one whole-value kind, the kinds found inside free text (a value with
-- spaces that is not one thing) as 'in:<kind>', or '{}'. Birth dates are
-- dates 16 to 100 years before CURRENT_DATE.
CREATE FUNCTION veil.pii_kinds_sql(arg text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    expression text := $sql$(CASE
    WHEN @v@ IS NULL OR pg_catalog.length(@v@) < 3 THEN '{}'::text[]
    -- One token.
    WHEN pg_catalog.strpos(@v@, ' ') = 0 THEN CASE
        WHEN pg_catalog.strpos(@v@, '@') > 0 THEN CASE WHEN @email@ THEN '{email}'::text[] ELSE '{}' END
        WHEN pg_catalog.strpos(@v@, ':') > 0 THEN CASE WHEN @ipv6@ THEN '{ip_address}'::text[] ELSE '{}' END
        WHEN pg_catalog.ascii(@v@) BETWEEN 48 AND 57 OR pg_catalog.ascii(@v@) IN (40, 43) THEN CASE
            -- Digits and separators only (not hashes, UUIDs, codes), not a small number.
            WHEN pg_catalog.length(@v@) > 32 OR @v@ !~ '^[0-9+(][0-9().\/+x-]+[0-9A-Z]$'
                 OR (pg_catalog.strpos(@v@ || '.', '.') <= 9 AND @v@ ~ '^[0-9]+(?:\.[0-9]+)?$') THEN '{}'::text[]
            WHEN pg_catalog.translate(@v@, '0123456789', '9999999999') = '9999-99-99' THEN @birth@
            WHEN pg_catalog.length(@v@) <= 18 AND @v@ ~ '^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+(?:/[0-9]+)?$'
                THEN CASE WHEN @ipv4@ THEN '{ip_address}'::text[] ELSE '{}' END
            WHEN pg_catalog.length(@v@) IN (9, 10, 11, 14) AND @national_id@ THEN '{national_id}'::text[]
            WHEN pg_catalog.length(@v@) BETWEEN 13 AND 23 AND @payment_card@ THEN '{payment_card}'::text[]
            WHEN @phone@ THEN '{phone}'::text[]
            WHEN pg_catalog.length(@v@) BETWEEN 9 AND 11 AND @v@ ~ '^[0-9]+$' THEN '{phone?}'::text[]
            ELSE '{}' END
        WHEN pg_catalog.ascii(@v@) BETWEEN 65 AND 90 THEN CASE
            WHEN pg_catalog.length(@v@) BETWEEN 15 AND 34 AND pg_catalog.ascii(pg_catalog.substr(@v@, 3, 1)) BETWEEN 48 AND 57
                 AND @iban@ THEN '{iban}'::text[]
            WHEN pg_catalog.left(@v@, 1) IN ('X', 'Y', 'Z') AND pg_catalog.length(@v@) IN (9, 10) AND @national_id@
                THEN '{national_id}'::text[]
            ELSE '{}' END
        ELSE '{}' END
    -- Several words: everything below needs a digit or an '@'.
    WHEN @v@ !~ '[0-9@]' THEN '{}'::text[]
    WHEN pg_catalog.ascii(@v@) BETWEEN 48 AND 57 OR pg_catalog.ascii(@v@) IN (40, 43) THEN CASE
        WHEN pg_catalog.translate(pg_catalog.left(@v@, 19), '0123456789', '9999999999') = '9999-99-99 00:00:00' THEN @birth@
        WHEN pg_catalog.length(@v@) <= 32 AND @v@ ~ '^[0-9+(][0-9 ().\/+x-]+$' THEN CASE
            WHEN pg_catalog.length(@v@) = 14 AND @national_id@ THEN '{national_id}'::text[]
            WHEN pg_catalog.length(@v@) BETWEEN 13 AND 23 AND @payment_card@ THEN '{payment_card}'::text[]
            WHEN @phone@ THEN '{phone}'::text[]
            ELSE '{}' END
        WHEN @v@ ~ '^[0-9]{1,6}[A-Za-z]?,? (?:[[:upper:]][[:alpha:]''.-]*\.? ){1,4}@us_suffixes@\.?(?:$|[ ,\n])'
          OR @v@ ~* '^[0-9]{1,4}(?: ?(?:bis|ter))?,? (?:rue|avenue|av\.|boulevard|bd|chemin|place|allée|impasse|quai|route|cours|square|passage|voie|rond-point) '
            THEN '{postal_address}'::text[]
        ELSE @free_text@ END
    WHEN pg_catalog.ascii(@v@) BETWEEN 65 AND 90 AND pg_catalog.ascii(pg_catalog.substr(@v@, 3, 1)) BETWEEN 48 AND 57
         AND @v@ ~ '^[A-Z]{2}[0-9]{2} [A-Z0-9 ]+$' AND @iban@ THEN '{iban}'::text[]
    WHEN pg_catalog.length(@v@) <= 120 AND (
         @v@ ~* '^[[:alpha:] .''-]*(?:stra(?:ss|ß)e|str\.|weg|allee|platz|gasse|ring|damm|ufer|chaussee|steig|pfad) [0-9]{1,4}[a-z]?(?:/[0-9]+)?(?:$|[ ,\n])'
      OR @v@ ~ '^(?:Calle|C/|Avenida|Av\.|Avda\.|Plaza|Pl\.|Paseo|Camino|Ronda|Vía|Pasaje|Callejón|Cañada|Carrer|Rambla|Urbanización|Glorieta|Alameda|Acceso|Cuesta|Carretera|Ctra\.|Puerta) [[:alpha:]].* [0-9]{1,4}'
      OR @v@ ~* '^(?:ул\.|улица|пр\.|проспект|пер\.|переулок|ш\.|шоссе|наб\.|набережная|пл\.|площадь|бульвар|б-р) [[:alpha:]].*[0-9]')
        THEN '{postal_address}'::text[]
    ELSE @free_text@
END)$sql$;
    check_name text;
BEGIN
    expression := pg_catalog.replace(expression, '@free_text@', $sql$(CASE WHEN pg_catalog.length(@v@) < 12 THEN '{}'::text[] ELSE pg_catalog.array_remove(ARRAY[
        CASE WHEN pg_catalog.strpos(@v@, '@') > 0
                  AND @v@ ~ '[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}' THEN 'in:email' END,
        CASE WHEN @v@ ~ '[0-9]{3}' THEN CASE WHEN EXISTS (
                SELECT FROM pg_catalog.regexp_matches(@v@, '[+(]?[0-9][0-9 ().-]+[0-9]', 'g') AS m(found)
                WHERE pg_catalog.length(m.found[1]) BETWEEN 9 AND 22 AND @phone_m@) THEN 'in:phone' END END,
        CASE WHEN pg_catalog.length(@v@) - pg_catalog.length(pg_catalog.translate(@v@, '0123456789', '')) >= 13 THEN CASE WHEN EXISTS (
                SELECT FROM pg_catalog.regexp_matches(@v@, '\m[0-9](?:[ -]?[0-9])+\M', 'g') AS m(found)
                WHERE @payment_card_m@) THEN 'in:payment_card' END END,
        CASE WHEN @v@ ~ '\m[A-Z][A-Z][0-9][0-9] ?[A-Z0-9]' THEN CASE WHEN EXISTS (
                SELECT FROM pg_catalog.regexp_matches(@v@, '\m([A-Z][A-Z][0-9][0-9](?: ?[A-Z0-9])+)\M', 'g') AS m(found)
                WHERE @iban_m@) THEN 'in:iban' END END,
        CASE WHEN @v@ ~ '\m[0-9]{3}-[0-9]{2}-[0-9]{4}\M' THEN CASE WHEN EXISTS (
                SELECT FROM pg_catalog.regexp_matches(@v@, '\m([0-9]{3}-[0-9]{2}-[0-9]{4})\M', 'g') AS m(found)
                WHERE @national_id_m@) THEN 'in:national_id' END END,
        CASE WHEN @v@ ~ '\m(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\M'
             THEN 'in:ip_address' END], NULL) END)$sql$);
    expression := pg_catalog.replace(expression, '@birth@', $sql$(CASE WHEN pg_catalog.left(@v@, 10) BETWEEN pg_catalog.to_char(CURRENT_DATE - 36525, 'YYYY-MM-DD')
                                                     AND pg_catalog.to_char(CURRENT_DATE - 5844, 'YYYY-MM-DD')
                    THEN '{birth_date?}'::text[] ELSE '{}'::text[] END)$sql$);
    -- The street suffixes of US addresses (Faker's and the USPS's common ones).
    expression := pg_catalog.replace(expression, '@us_suffixes@', $sql$(?:Alley|Av|Ave|Avenue|Blvd|Boulevard|Branch|Bridge|Brooks?|Burgs?|Bypass|Camp|Canyon|Cape|Causeway|Centers?|Circles?|Cir|Cliffs?|Club|Common|Corners?|Course|Courts?|Ct|Coves?|Creek|Crescent|Crest|Crossing|Crossroad|Curve|Dale|Dam|Divide|Dr|Drives?|Estates?|Expressway|Extensions?|Falls?|Ferry|Fields?|Flats?|Fords?|Forest|Forges?|Forks?|Fort|Freeway|Gardens?|Gateway|Glens?|Greens?|Groves?|Harbors?|Haven|Heights|Highway|Hwy|Hills?|Hollow|Inlet|Islands?|Isle|Junctions?|Keys?|Knolls?|Lakes?|Land|Landing|Lane|Ln|Lights?|Loaf|Locks?|Lodge|Loop|Mall|Manors?|Meadows?|Mews|Mills?|Mission|Motorway|Mount|Mountains?|Neck|Orchard|Oval|Overpass|Parks?|Parkways?|Pkwy|Pass|Passage|Path|Pike|Pines?|Place|Pl|Plains?|Plaza|Points?|Ports?|Prairie|Radial|Ramp|Ranch|Rapids?|Rd|Rest|Ridges?|River|Roads?|Route|Row|Rue|Run|Shoals?|Shores?|Skyway|Springs?|Spurs?|Squares?|Sq|St|Station|Stravenue|Stream|Streets?|Summit|Terrace|Ter|Throughway|Trace|Track|Trafficway|Trail|Tunnel|Turnpike|Underpass|Unions?|Valleys?|Via|Viaduct|Views?|Villages?|Ville|Vista|Walks?|Wall|Ways?|Wells?)$sql$);
    FOREACH check_name IN ARRAY ARRAY['phone', 'payment_card', 'iban', 'national_id'] LOOP
        expression := pg_catalog.replace(expression, '@' || check_name || '_m@', veil.pii_check_sql(check_name, 'm.found[1]'));
    END LOOP;
    FOREACH check_name IN ARRAY ARRAY['email', 'ipv4', 'ipv6', 'phone', 'payment_card', 'iban', 'national_id'] LOOP
        expression := pg_catalog.replace(expression, '@' || check_name || '@', veil.pii_check_sql(check_name, '@v@'));
    END LOOP;
    RETURN pg_catalog.replace(expression, '@v@', arg);
END
$fn$;
COMMENT ON FUNCTION veil.pii_kinds_sql(text) IS
    'The SQL expression classifying the text expression arg as a text[] of PII kinds (written inline by the scan).';

-- The same checks and classification run on one value, for people and tests
-- (the scan writes the SQL into its query instead).
CREATE FUNCTION veil.pii_check(check_name text, value text)
RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    passed boolean;
BEGIN
    EXECUTE 'SELECT ' || veil.pii_check_sql(check_name, '$1') INTO passed USING value;
    RETURN coalesce(passed, false);
END
$$;
COMMENT ON FUNCTION veil.pii_check(text, text) IS
    'True when value passes the PII check (email, ipv4, ipv6, phone, payment_card, iban, national_id, luhn).';

CREATE FUNCTION veil.pii_kinds(value text)
RETURNS text[]
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    kinds text[];
BEGIN
    EXECUTE 'SELECT ' || veil.pii_kinds_sql('$1') INTO kinds USING value;
    RETURN kinds;
END
$$;
COMMENT ON FUNCTION veil.pii_kinds(text) IS
    'The PII kinds pgveil scan sees in one value: a whole-value kind, or those found inside free text; weak kinds end in ?.';

GRANT EXECUTE ON FUNCTION veil.pii_check_sql(text, text), veil.pii_kinds_sql(text),
    veil.pii_check(text, text), veil.pii_kinds(text) TO PUBLIC;
