-- The final check: for every registered table, how many rows differ between
-- primary and shadow (a row missing on either side, or a different canonical
-- hash over the mapped columns: pgshadow.tables.hash_expr on the primary row,
-- shadow_hash_expr on the shadow row; see docs/sync.md), and how many keys are
-- in the quarantine (rows the shadow's new constraints reject, kept aside).
SET TimeZone = 'UTC';
SELECT t.table_name,
       (SELECT count(*) FROM pgshadow.quarantine q WHERE q.table_id = t.table_id) AS quarantined,
       (xpath('/row/n/text()', query_to_xml(format(
           'SELECT count(*) AS n FROM %I.%I p FULL JOIN %I.%I s ON %s '
           'WHERE p.%I IS NULL OR s.%I IS NULL OR (%s) IS DISTINCT FROM (%s)',
           t.schema_name, t.table_name, t.schema_name, t.shadow_name,
           (SELECT string_agg(format('p.%1$I = s.%1$I', k), ' AND ') FROM unnest(t.key_columns) k),
           t.key_columns[1], t.key_columns[1], t.hash_expr, t.shadow_hash_expr),
         false, true, '')))[1]::text::bigint AS rows_differing
FROM pgshadow.tables t ORDER BY t.table_id;
