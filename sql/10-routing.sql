-- 10-routing.sql: read routing (contract "Read routing"): murmur3, read_percent, read_from_shadow
--
-- Owns: the three functions applications call; they are open to PUBLIC.
--
-- Part of the install, run in ONE transaction in the order of
-- sql/install.list (pgshadowctl install; docs/database.md). Idempotent:
-- objects are created when missing or replaced in place, so running it
-- again is a refresh. Plain SQL and PL/pgSQL only.

-- ---------------------------------------------------------------------------
-- Routing: murmur3_x86_32 in SQL (contract "Read routing").
-- All arithmetic in bigint on values < 2^32; mul32 splits the multiplier in
-- 16-bit halves so no product exceeds 2^49.
-- ---------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION pgshadow.murmur3_32(p_data bytea, p_seed bigint DEFAULT 0)
RETURNS bigint
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    m   constant bigint := 4294967295;
    c1  constant bigint := 3432918353;   -- 0xcc9e2d51
    c2  constant bigint := 461845907;    -- 0x1b873593
    len integer := length(p_data);
    nblocks integer := len / 4;
    h   bigint := p_seed & m;
    k   bigint;
    i   integer;
    t   integer;
BEGIN
    FOR i IN 0 .. nblocks - 1 LOOP
        k := get_byte(p_data, 4 * i)
           | (get_byte(p_data, 4 * i + 1) << 8)
           | (get_byte(p_data, 4 * i + 2) << 16)
           | (get_byte(p_data, 4 * i + 3)::bigint << 24);
        k := ((k * (c1 & 65535)) + (((k * (c1 >> 16)) & 65535) << 16)) & m;
        k := ((k << 15) | (k >> 17)) & m;
        k := ((k * (c2 & 65535)) + (((k * (c2 >> 16)) & 65535) << 16)) & m;
        h := h # k;
        h := ((h << 13) | (h >> 19)) & m;
        h := (h * 5 + 3864292196) & m;        -- 0xe6546b64
    END LOOP;
    t := 4 * nblocks;
    k := 0;
    IF len & 3 >= 3 THEN k := k # (get_byte(p_data, t + 2)::bigint << 16); END IF;
    IF len & 3 >= 2 THEN k := k # (get_byte(p_data, t + 1)::bigint << 8); END IF;
    IF len & 3 >= 1 THEN
        k := k # get_byte(p_data, t)::bigint;
        k := ((k * (c1 & 65535)) + (((k * (c1 >> 16)) & 65535) << 16)) & m;
        k := ((k << 15) | (k >> 17)) & m;
        k := ((k * (c2 & 65535)) + (((k * (c2 >> 16)) & 65535) << 16)) & m;
        h := h # k;
    END IF;
    h := h # len;
    h := h # (h >> 16);
    h := ((h * (2246822507 & 65535)) + (((h * (2246822507 >> 16)) & 65535) << 16)) & m;  -- 0x85ebca6b
    h := h # (h >> 13);
    h := ((h * (3266489909 & 65535)) + (((h * (3266489909 >> 16)) & 65535) << 16)) & m;  -- 0xc2b2ae35
    h := h # (h >> 16);
    RETURN h;
END
$fn$;

-- Percent of reads routed to the shadow for a table (0 when unknown).
CREATE OR REPLACE FUNCTION pgshadow.read_percent(p_table text)
RETURNS integer
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT coalesce((SELECT f.value::integer FROM pgshadow.flags f
                     WHERE f.name = 'read_from_shadow_' || p_table), 0)
$fn$;

-- Whether this key's read goes to the shadow: bucket(table:key) <= percent.
-- A NULL key reads from the primary.
CREATE OR REPLACE FUNCTION pgshadow.read_from_shadow(p_table text, p_key text)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT CASE
             WHEN p_key IS NULL OR pct <= 0 THEN false
             ELSE pgshadow.murmur3_32(convert_to(p_table || ':' || p_key, 'UTF8'), 0) % 100 + 1 <= pct
           END
    FROM (SELECT pgshadow.read_percent(p_table) AS pct) x
$fn$;


-- Privileges
REVOKE ALL ON FUNCTION pgshadow.murmur3_32(bytea, bigint),
                       pgshadow.read_percent(text),
                       pgshadow.read_from_shadow(text, text)
       FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgshadow.murmur3_32(bytea, bigint), pgshadow.read_percent(text),
                          pgshadow.read_from_shadow(text, text) TO PUBLIC;
