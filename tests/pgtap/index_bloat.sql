-- conveyor.index_bloat(): which conveyor indexes a REINDEX CONCURRENTLY would
-- shrink, and which invalid leftovers of an interrupted one to drop.
BEGIN;
SELECT plan(13);

SELECT has_function('conveyor', 'index_bloat', ARRAY['bigint', 'double precision'],
  'conveyor.index_bloat(bigint, double precision) exists');
SELECT function_returns('conveyor', 'index_bloat', ARRAY['bigint', 'double precision'], 'setof record',
  'index_bloat returns a set of rows');

SELECT is((SELECT count(*) FROM conveyor.index_bloat()), 0::bigint,
  'the indexes of a new schema are below the default minimum_size (4 MB): nothing listed');

-- A burst that drains: 30,000 jobs enqueued then deleted (in this
-- transaction: the index keeps their entries, as after a real burst).
SELECT lives_ok($$SELECT count(*) FROM conveyor.enqueue_many(
    (SELECT jsonb_agg(jsonb_build_object('job_class', 'TapBloat', 'args', jsonb_build_array(g)))
       FROM generate_series(1, 30000) AS g))$$,
  'fixture: a burst of 30,000 jobs');

SELECT is((SELECT count(*) FROM conveyor.index_bloat(65536, 4)), 0::bigint,
  'while the burst is live its indexes are not bloated: their live entries need the space');

DELETE FROM conveyor.jobs WHERE job_class = 'TapBloat' AND (args->>0)::int > 100;

SELECT set_eq(
  $$SELECT index_name FROM conveyor.index_bloat(65536, 4) WHERE NOT invalid$$,
  ARRAY['jobs_pkey', 'jobs_ready_idx'],
  'after the burst drains, the primary key and the ready index are listed (the indexes it filled)');

SELECT results_eq(
  $$SELECT live_entries, size_bytes > 4 * needed_bytes, needed_bytes >= 100 * 64
      FROM conveyor.index_bloat(65536, 4) WHERE index_name = 'jobs_ready_idx'$$,
  $$VALUES (100::bigint, true, true)$$,
  'each row counts the live entries and says what they need (at 64 bytes an entry)');

SELECT is((SELECT count(*) FROM conveyor.index_bloat(pg_catalog.pg_relation_size('conveyor.jobs_ready_idx'), 4)), 0::bigint,
  'an index no larger than minimum_size is not listed');

SELECT is((SELECT count(*) FROM conveyor.index_bloat(0, 100000)), 0::bigint,
  'an index within factor times its need is not listed');

-- A leftover of an interrupted REINDEX CONCURRENTLY is an invalid index
-- named *_ccnew; one is made here by marking an index invalid.
CREATE INDEX jobs_ready_idx_ccnew ON conveyor.jobs (id);
UPDATE pg_catalog.pg_index SET indisvalid = false WHERE indexrelid = 'conveyor.jobs_ready_idx_ccnew'::regclass;
SELECT results_eq(
  $$SELECT index_name, table_name, invalid FROM conveyor.index_bloat() WHERE invalid$$,
  $$VALUES ('jobs_ready_idx_ccnew'::text, 'jobs'::text, true)$$,
  'an invalid *_ccnew index is listed as a leftover to drop');

SELECT throws_ok($$SELECT * FROM conveyor.index_bloat(-1, 4)$$, '22023',
  'conveyor.index_bloat: minimum_size must be a number of bytes >= 0, not -1',
  'a negative minimum_size is refused (22023)');
SELECT throws_ok($$SELECT * FROM conveyor.index_bloat(0, 0.5)$$, '22023',
  'conveyor.index_bloat: factor must be a finite number >= 1, not 0.5',
  'a factor below 1 is refused (22023)');
SELECT throws_ok($$SELECT * FROM conveyor.index_bloat(0, 'NaN')$$, '22023', NULL,
  'a NaN factor is refused (22023)');

SELECT * FROM finish();
ROLLBACK;
