-- bench/generate.sql - reproducible rows in the contexts shape.
-- psql variables: lo, hi (id range, inclusive) and width: 'wide' (~1.1 KB a
-- row: 396-byte text, 96-float embedding, jsonb, tags) or 'narrow' (~300
-- bytes: one md5 of text, 4-float embedding) for the 10M-row dashboard size.
-- Every value derives from the row number i (md5, modulo), so every run and
-- every variant sees byte-identical data; the key of row i is md5('ctx'||i)::uuid,
-- which pgbench scripts recompute to hit an existing row.
INSERT INTO public.contexts
SELECT md5('ctx' || i)::uuid,
       md5('project' || (i % 100))::uuid,
       md5('session' || (i % 5000))::uuid,
       (ARRAY['code','decision','error','discussion','planning','completion'])[1 + i % 6],
       CASE WHEN :'width' = 'wide' THEN repeat(md5(i::text) || ' ', 12) ELSE md5(i::text) END,
       array_fill(((i % 1000) / 1000.0)::real, ARRAY[CASE WHEN :'width' = 'wide' THEN 96 ELSE 4 END]),
       timestamptz '2025-01-01 00:00:00+00' + i * interval '1 second',
       (i % 1000) / 1000.0,
       ARRAY['tag' || (i % 10), 'kind' || (i % 7), 'bench'],
       jsonb_build_object('source', 'bench', 'n', i, 'project', i % 100,
                          'digest', md5(i::text || 'm')),
       substr(md5(i::text || 'c') || md5(i::text || 'd'), 1, 40),
       'feature',
       NULL,
       ARRAY['insight' || (i % 3)],
       ((i % 10000) / 10000.0)::numeric(5,4)
FROM generate_series(:lo::bigint, :hi::bigint) AS i;
