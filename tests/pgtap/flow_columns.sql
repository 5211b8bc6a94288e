-- The flow fields of a job: concurrency_key, labels, batch_id, through enqueue and enqueue_many.
BEGIN;
SELECT plan(30);

-- A batch_id must name an open batch (the batches change checks it on insert,
-- tests/pgtap/batches.sql): make the ones this file uses.
INSERT INTO conveyor.batches (id) OVERRIDING SYSTEM VALUE VALUES (1), (7), (42);

-- enqueue ------------------------------------------------------------------------

CREATE TEMP TABLE t_plain AS SELECT * FROM conveyor.enqueue('tap.flow.Plain', queue => 'tap_flow_q');
SELECT is((SELECT concurrency_key FROM t_plain), NULL, 'a job without a concurrency_key has NULL');
SELECT is((SELECT labels FROM t_plain), '{}'::text[], 'a job without labels has none (an empty array)');
SELECT is((SELECT batch_id FROM t_plain), NULL, 'a job without a batch has a NULL batch_id');

CREATE TEMP TABLE t_flow AS
  SELECT * FROM conveyor.enqueue('tap.flow.All', queue => 'tap_flow_q', concurrency_key => 'tap.flow.key',
                                 labels => ARRAY['tap-a', 'tap-b'], batch_id => 42);
SELECT is((SELECT concurrency_key FROM t_flow), 'tap.flow.key', 'enqueue stores concurrency_key');
SELECT is((SELECT labels FROM t_flow), ARRAY['tap-a', 'tap-b'], 'enqueue stores labels in the order given');
SELECT is((SELECT batch_id FROM t_flow), 42::bigint, 'enqueue stores batch_id (no check of it here)');
SELECT results_eq($$SELECT concurrency_key, labels, batch_id FROM conveyor.jobs WHERE id = (SELECT id FROM t_flow)$$,
                  $$VALUES ('tap.flow.key', ARRAY['tap-a', 'tap-b'], 42::bigint)$$,
                  'the row returned is the row stored');

SELECT is((SELECT labels FROM conveyor.enqueue('tap.flow.Empty', queue => 'tap_flow_q', labels => '{}')), '{}'::text[],
  'an empty labels array is accepted');
SELECT is((SELECT (unique_key, concurrency_key, labels)::text
             FROM conveyor.enqueue('tap.flow.Both', queue => 'tap_flow_q', unique_key => 'tap.flow.uk',
                                   concurrency_key => 'tap.flow.ck', labels => ARRAY['x'])),
  '(tap.flow.uk,tap.flow.ck,{x})', 'a unique_key and the flow fields together are all stored');

SELECT throws_ok($$SELECT conveyor.enqueue('tap.flow.Bad', concurrency_key => '')$$, '22023',
  'conveyor.enqueue: concurrency_key must not be empty', 'an empty concurrency_key raises 22023');
SELECT throws_ok($$SELECT conveyor.enqueue('tap.flow.Bad', concurrency_key => repeat('k', 501))$$, '22001',
  'conveyor.enqueue: concurrency_key must be at most 500 characters, not 501', 'a concurrency_key over 500 characters raises 22001');
SELECT lives_ok($$SELECT conveyor.enqueue('tap.flow.Long', queue => 'tap_flow_q', concurrency_key => repeat('k', 500))$$,
  'a concurrency_key of 500 characters is accepted');
SELECT throws_ok($$SELECT conveyor.enqueue('tap.flow.Bad', labels => ARRAY['a', NULL])$$, '22004',
  'conveyor.enqueue: labels must not contain NULL', 'a NULL label raises 22004');
SELECT throws_ok($$SELECT conveyor.enqueue('tap.flow.Bad', labels => ARRAY[''])$$, '22023',
  'conveyor.enqueue: a label must not be empty', 'an empty label raises 22023');
SELECT throws_ok($$SELECT conveyor.enqueue('tap.flow.Bad', labels => ARRAY[repeat('l', 101)])$$, '22001',
  'conveyor.enqueue: a label must be at most 100 characters, not 101', 'a label over 100 characters raises 22001');
SELECT throws_ok($$SELECT conveyor.enqueue('tap.flow.Bad', labels => ARRAY[['a'], ['b']])$$, '22023',
  'conveyor.enqueue: labels must be a one-dimensional array', 'a two-dimensional labels array raises 22023');
SELECT is((SELECT count(*) FROM conveyor.jobs WHERE job_class = 'tap.flow.Bad'), 0::bigint, 'no bad enqueue left a job');

-- enqueue_many -------------------------------------------------------------------

CREATE TEMP TABLE t_many AS
  SELECT * FROM conveyor.enqueue_many('[
      {"job_class": "tap.flow.M1", "queue": "tap_flow_q", "concurrency_key": "tap.flow.mk", "labels": ["m"], "batch_id": 7},
      {"job_class": "tap.flow.M2", "queue": "tap_flow_q"},
      {"job_class": "tap.flow.M3", "queue": "tap_flow_q", "labels": []}]') WITH ORDINALITY AS m(id, n);
SELECT results_eq($$SELECT j.job_class, j.concurrency_key, j.labels, j.batch_id
                      FROM t_many AS m JOIN conveyor.jobs AS j ON j.id = m.id ORDER BY m.n$$,
                  $$VALUES ('tap.flow.M1', 'tap.flow.mk', ARRAY['m'], 7::bigint),
                           ('tap.flow.M2', NULL, '{}'::text[], NULL::bigint),
                           ('tap.flow.M3', NULL, '{}'::text[], NULL::bigint)$$,
                  'enqueue_many stores the flow fields per element, in input order');
SELECT throws_ok($$SELECT conveyor.enqueue_many('[{"job_class": "tap.flow.Bad", "concurrency_key": 5}]')$$, '22023',
  'conveyor.enqueue_many: jobs[0]: concurrency_key must be a JSON string, not number', 'a non-string concurrency_key raises 22023');
SELECT throws_ok($$SELECT conveyor.enqueue_many('[{"job_class": "tap.flow.Bad", "concurrency_key": ""}]')$$, '22023',
  'conveyor.enqueue_many: jobs[0]: concurrency_key must not be empty', 'an empty concurrency_key raises 22023');
SELECT throws_ok($$SELECT conveyor.enqueue_many('[{"job_class": "tap.flow.Bad", "labels": "a"}]')$$, '22023',
  'conveyor.enqueue_many: jobs[0]: labels must be a JSON array, not string', 'labels that are not an array raise 22023');
SELECT throws_ok($$SELECT conveyor.enqueue_many('[{"job_class": "tap.flow.Ok"}, {"job_class": "tap.flow.Bad", "labels": ["a", 1]}]')$$, '22023',
  'conveyor.enqueue_many: jobs[1]: labels must be a JSON array of strings', 'a label that is not a string raises 22023, naming jobs[1]');
SELECT throws_ok($$SELECT conveyor.enqueue_many('[{"job_class": "tap.flow.Bad", "labels": [""]}]')$$, '22023',
  'conveyor.enqueue_many: jobs[0]: a label must not be empty', 'an empty label raises 22023');
SELECT throws_ok($$SELECT conveyor.enqueue_many('[{"job_class": "tap.flow.Bad", "batch_id": "x"}]')$$, '22023',
  'conveyor.enqueue_many: jobs[0]: batch_id must be a JSON number, not string', 'a non-number batch_id raises 22023');
SELECT throws_ok($$SELECT conveyor.enqueue_many('[{"job_class": "tap.flow.Bad", "batch_id": 1.5}]')$$, '22P02',
  NULL, 'a batch_id that is not an integer raises 22P02');
SELECT throws_ok($$SELECT conveyor.enqueue_many('[{"job_class": "tap.flow.Bad", "labels": null}]')$$, '22004',
  'conveyor.enqueue_many: jobs[0]: labels must not be null', 'a JSON null labels raises 22004');
SELECT is((SELECT count(*) FROM conveyor.jobs WHERE job_class IN ('tap.flow.Bad', 'tap.flow.Ok')), 0::bigint,
  'no bad enqueue_many left a job');

-- Privileges: the enqueuer passes the fields; the helpers are internal -------------

SET ROLE conveyor_enqueuer;
SELECT lives_ok($$SELECT conveyor.enqueue('tap.flow.Role', queue => 'tap_flow_q', concurrency_key => 'k', labels => ARRAY['r'], batch_id => 1)$$,
  'conveyor_enqueuer may enqueue with the flow fields');
SELECT lives_ok($$SELECT conveyor.enqueue_many('[{"job_class": "tap.flow.Role", "queue": "tap_flow_q", "labels": ["r"]}]')$$,
  'conveyor_enqueuer may enqueue_many with the flow fields');
RESET ROLE;
SELECT ok(NOT has_function_privilege('conveyor_worker', 'conveyor.flow_fields_problem(text, text[])', 'EXECUTE')
          AND NOT has_function_privilege('conveyor_enqueuer', 'conveyor.labels_from_json(jsonb)', 'EXECUTE'),
  'the internal flow_fields_problem and labels_from_json are not executable by the roles');

SELECT * FROM finish();
ROLLBACK;
