-- One slice of the `wide` table: rows :lo .. :hi (psql variables).
-- Run by benches/snapshot/run.sh, several slices in parallel.
--
-- Size mix per row (i = id):
--   body    i % 20 = 0        16 kB hex of pseudo-random bytes  -> out-of-line TOAST (incompressible)
--           i % 20 in 1..5     3 kB hex of pseudo-random bytes  -> out-of-line TOAST (incompressible)
--           otherwise        2.5 kB repeat(md5(i), 80)           -> TOAST-compressed, stored inline
--   payload i % 50 = 7         NULL
--           i % 10 = 0         4 kB pseudo-random bytes         -> out-of-line TOAST
--           otherwise         16..256 bytes
--   doc     i % 25 = 0        ~3.5 kB object with a 40-item array (compressed inline)
--           otherwise         small object
--   title   i % 97 = 0         NULL, otherwise ~45 bytes
--
-- The pseudo-random bytes come from a 1 MiB pool of md5 output (deterministic,
-- so every run loads the same data); pglz cannot compress them.
\set ON_ERROR_STOP on
INSERT INTO wide (id, title, body, payload, doc, created)
WITH pool AS MATERIALIZED (
    SELECT decode(string_agg(md5(g::text), '' ORDER BY g), 'hex') AS b
    FROM generate_series(1, 65536) AS g
)
SELECT i,
       CASE WHEN i % 97 = 0 THEN NULL
            ELSE 'title ' || i || ' ' || md5(i::text) END,
       CASE WHEN i % 20 = 0 THEN encode(substring(p.b FROM (1 + (i * 7919) % 1000000)::int FOR 8192), 'hex')
            WHEN i % 20 <= 5 THEN encode(substring(p.b FROM (1 + (i * 104729) % 1040000)::int FOR 1536), 'hex')
            ELSE repeat(md5(i::text), 80) END,
       CASE WHEN i % 50 = 7 THEN NULL
            WHEN i % 10 = 0 THEN substring(p.b FROM (1 + (i * 31) % 1040000)::int FOR 4096)
            ELSE substring(p.b FROM (1 + (i * 13) % 1040000)::int FOR (16 + i % 241)::int) END,
       CASE WHEN i % 25 = 0 THEN
                jsonb_build_object('id', i, 'kind', 'big', 'items',
                    (SELECT jsonb_agg(jsonb_build_object('n', g, 'sku', md5((i + g)::text),
                                                         'qty', g % 7, 'price', round(g * 1.37, 2),
                                                         'note', 'item ' || g || ' of order ' || i))
                     FROM generate_series(1, 40) AS g))
            ELSE jsonb_build_object('id', i, 'kind', 'small',
                                    'tags', jsonb_build_array('t' || i % 13, 't' || i % 7),
                                    'score', (i % 1000) / 10.0, 'ok', i % 2 = 0,
                                    'name', E'caf\u00e9 \u00fc ' || i) END,
       timestamptz '2020-01-01 00:00:00+00' + i * interval '37 seconds'
FROM generate_series(:lo::bigint, :hi::bigint) AS i
CROSS JOIN pool AS p;
