-- The final check: for every registered table, how many rows differ between
-- primary and shadow (a row missing on either side, or a different canonical
-- hash over the mapped columns: pgshadow.tables.hash_expr on the primary row,
-- shadow_hash_expr on the shadow row; see docs/sync.md). Rows whose key is in
-- the quarantine (the shadow's new constraints reject them; kept aside, with
-- their error) are counted apart, key by key, so no other difference can hide
-- behind them.
SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD';   -- the canonical hash's settings
SELECT t.table_name,
       (SELECT count(*) FROM pgshadow.quarantine q WHERE q.table_id = t.table_id) AS quarantined_keys,
       r.differing, r.differing_quarantined
FROM pgshadow.tables t,
LATERAL (
  SELECT (xpath('/row/d/text()', x))[1]::text::bigint AS differing,
         (xpath('/row/dq/text()', x))[1]::text::bigint AS differing_quarantined
  FROM query_to_xml(format(
      'SELECT count(*) FILTER (WHERE NOT quarantined) AS d, count(*) FILTER (WHERE quarantined) AS dq '
      'FROM (SELECT EXISTS (SELECT 1 FROM pgshadow.quarantine q WHERE q.table_id = %s AND q.key = ARRAY[%s]) AS quarantined '
      '      FROM %I.%I p FULL JOIN %I.%I s ON %s '
      '      WHERE p.%I IS NULL OR s.%I IS NULL OR (%s) IS DISTINCT FROM (%s)) x',
      t.table_id,
      (SELECT string_agg(format('coalesce(p.%1$I, s.%1$I)::text', k), ', ') FROM unnest(t.key_columns) k),
      t.schema_name, t.table_name, t.schema_name, t.shadow_name,
      (SELECT string_agg(format('p.%1$I = s.%1$I', k), ' AND ') FROM unnest(t.key_columns) k),
      t.key_columns[1], t.key_columns[1], t.hash_expr, t.shadow_hash_expr),
    false, true, '') x
) r
ORDER BY t.table_id;
