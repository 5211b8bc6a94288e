-- conveyor.enqueue_many(jobs jsonb): many jobs in one statement, all or nothing.
BEGIN;
SELECT plan(49);

SELECT has_function('conveyor', 'enqueue_many', ARRAY['jsonb'], 'conveyor.enqueue_many(jsonb) exists');
SELECT function_returns('conveyor', 'enqueue_many', ARRAY['jsonb'], 'setof bigint',
  'conveyor.enqueue_many returns SETOF bigint (the new ids)');

-- Ids in input order ------------------------------------------------------------

CREATE TEMP TABLE t_order AS
  SELECT t.n, t.id
    FROM conveyor.enqueue_many('[{"job_class": "tap.many.C"}, {"job_class": "tap.many.A"},
                                 {"job_class": "tap.many.B", "priority": 0},
                                 {"job_class": "tap.many.D", "queue": "tap_many_q"}]') WITH ORDINALITY AS t(id, n);

SELECT is((SELECT count(*) FROM t_order), 4::bigint, 'enqueue_many of four jobs returns four ids');

SELECT results_eq(
  $$SELECT j.job_class FROM t_order AS t JOIN conveyor.jobs AS j ON j.id = t.id ORDER BY t.n$$,
  ARRAY['tap.many.C', 'tap.many.A', 'tap.many.B', 'tap.many.D'],
  'the ids come back in input order (not sorted by job_class or priority)');

SELECT is(ARRAY(SELECT id FROM t_order ORDER BY n), ARRAY(SELECT id FROM t_order ORDER BY id),
  'the ids of one call ascend in input order');

-- Defaults and every key ----------------------------------------------------------

SELECT results_eq(
  $$SELECT j.args, j.queue, j.priority, j.run_at, j.data, j.error_count, j.maximum_retry_count,
           j.finished_at, j.expired_at, j.created_at
      FROM conveyor.jobs AS j JOIN t_order AS t ON t.id = j.id WHERE t.n = 1$$,
  $$VALUES ('[]'::jsonb, 'default'::text, 100::smallint, now(), '{}'::jsonb, 0, 15,
            NULL::timestamptz, NULL::timestamptz, now())$$,
  'an element with only job_class takes enqueue''s defaults');

CREATE TEMP TABLE t_all AS
  SELECT id FROM conveyor.enqueue_many(
    '[{"job_class": "tap.many.All", "args": [1, "a"], "queue": "tap_many_q", "priority": 7,
       "run_at": "2031-05-06T07:08:09Z", "data": {"tags": ["t"]}, "maximum_retry_count": 2}]') AS t(id);

SELECT results_eq(
  $$SELECT j.job_class, j.args, j.queue, j.priority, j.run_at, j.data, j.maximum_retry_count
      FROM conveyor.jobs AS j JOIN t_all AS t ON t.id = j.id$$,
  $$VALUES ('tap.many.All'::text, '[1, "a"]'::jsonb, 'tap_many_q'::text, 7::smallint,
            '2031-05-06 07:08:09+00'::timestamptz, '{"tags": ["t"]}'::jsonb, 2)$$,
  'every key is stored; run_at is parsed from an ISO 8601 string');

SELECT is((SELECT count(*) FROM conveyor.enqueue_many('[]')), 0::bigint,
  'an empty array inserts nothing and returns no id');

SELECT is((SELECT count(DISTINCT t.id) FROM conveyor.enqueue_many(
             (SELECT jsonb_agg(jsonb_build_object('job_class', 'tap.many.Bulk', 'args', jsonb_build_array(g)))
                FROM generate_series(1, 1000) AS g)) AS t(id)),
  1000::bigint, 'a 1,000-element array inserts 1,000 jobs with distinct ids');

SELECT results_eq(
  $$SELECT (args ->> 0)::integer FROM conveyor.jobs WHERE job_class = 'tap.many.Bulk' ORDER BY id$$,
  $$SELECT generate_series(1, 1000)$$,
  'bulk jobs are stored in input order');

-- All or nothing ------------------------------------------------------------------

SELECT throws_ok(
  $$SELECT conveyor.enqueue_many('[{"job_class": "tap.many.Atomic"}, {"job_class": "tap.many.Atomic"},
                                   {"job_class": "tap.many.Atomic", "priority": -1}]')$$,
  '22003', 'conveyor.enqueue_many: jobs[2]: priority must be between 0 and 32767, not -1',
  'a bad third element raises the field''s SQLSTATE and names jobs[2]');

SELECT is((SELECT count(*) FROM conveyor.jobs WHERE job_class = 'tap.many.Atomic'), 0::bigint,
  'a bad third element inserts none of the three jobs');

SELECT throws_ok(
  $$SELECT conveyor.enqueue_many('[{"job_class": "tap.many.Atomic"}, {"job_class": ""}, {"job_class": "x", "queue": ""}]')$$,
  '22023', 'conveyor.enqueue_many: jobs[1]: job_class must not be empty',
  'with several bad elements the first one (jobs[1]) is reported');

-- The argument itself ---------------------------------------------------------------

SELECT throws_ok($$SELECT conveyor.enqueue_many(NULL)$$, '22004',
  'conveyor.enqueue_many: jobs must not be NULL', 'SQL NULL jobs raises 22004');
SELECT throws_ok($$SELECT conveyor.enqueue_many('{"job_class": "tap.many.Bad"}')$$, '22023',
  'conveyor.enqueue_many: jobs must be a JSON array of job objects, not object',
  'a single object instead of an array raises 22023');
SELECT throws_ok($$SELECT conveyor.enqueue_many('null')$$, '22023',
  'conveyor.enqueue_many: jobs must be a JSON array of job objects, not null',
  'JSON null instead of an array raises 22023');

-- Bad elements ----------------------------------------------------------------------

SELECT throws_ok($$SELECT conveyor.enqueue_many('[{"job_class": "tap.many.Bad"}, 42]')$$, '22023',
  'conveyor.enqueue_many: jobs[1]: must be a JSON object, not number',
  'an element that is a number raises 22023 naming jobs[1]');
SELECT throws_ok($$SELECT conveyor.enqueue_many('[null]')$$, '22023',
  'conveyor.enqueue_many: jobs[0]: must be a JSON object, not null',
  'an element that is JSON null raises 22023 naming jobs[0]');
SELECT throws_ok($$SELECT conveyor.enqueue_many('[["tap.many.Bad"]]')$$, '22023',
  'conveyor.enqueue_many: jobs[0]: must be a JSON object, not array',
  'an element that is an array raises 22023');
SELECT throws_ok($$SELECT conveyor.enqueue_many('[{"job_class": "tap.many.Bad"}, {"job_class": "tap.many.Bad", "colour": "red"}]')$$,
  '22023',
  'conveyor.enqueue_many: jobs[1]: unknown key ''colour'' (known: job_class, args, queue, priority, run_at, data, maximum_retry_count, unique_key, concurrency_key, labels, batch_id)',
  'an unknown key raises 22023 naming the key and jobs[1]');
SELECT throws_ok($$SELECT conveyor.enqueue_many('[{"job_class": "tap.many.Bad", "queue": null}]')$$, '22004',
  'conveyor.enqueue_many: jobs[0]: queue must not be null', 'a JSON null queue raises 22004 naming queue');
SELECT throws_ok($$SELECT conveyor.enqueue_many('[{"job_class": null}]')$$, '22004',
  'conveyor.enqueue_many: jobs[0]: job_class must not be null', 'a JSON null job_class raises 22004');
SELECT throws_ok($$SELECT conveyor.enqueue_many('[{"job_class": "tap.many.Bad", "args": null}]')$$, '22004',
  'conveyor.enqueue_many: jobs[0]: args must not be null', 'a JSON null args raises 22004');
SELECT throws_ok($$SELECT conveyor.enqueue_many('[{"args": [1]}]')$$, '22004',
  'conveyor.enqueue_many: jobs[0]: job_class must not be NULL', 'a missing job_class raises 22004');
SELECT throws_ok($$SELECT conveyor.enqueue_many('[{"job_class": 5}]')$$, '22023',
  'conveyor.enqueue_many: jobs[0]: job_class must be a JSON string, not number',
  'a job_class that is not a JSON string raises 22023');
SELECT throws_ok($$SELECT conveyor.enqueue_many('[{"job_class": "tap.many.Bad", "priority": "5"}]')$$, '22023',
  'conveyor.enqueue_many: jobs[0]: priority must be a JSON number, not string',
  'a priority that is not a JSON number raises 22023');
SELECT throws_ok($$SELECT conveyor.enqueue_many('[{"job_class": "tap.many.Bad", "priority": 32768}]')$$, '22003',
  'conveyor.enqueue_many: jobs[0]: priority must be between 0 and 32767, not 32768', 'priority 32768 raises 22003');
SELECT throws_ok($$SELECT conveyor.enqueue_many('[{"job_class": "tap.many.Bad", "priority": 1.5}]')$$, '22P02',
  'conveyor.enqueue_many: jobs[0]: priority: invalid input syntax for type integer: "1.5"',
  'a fractional priority raises 22P02 naming priority');
SELECT throws_ok($$SELECT conveyor.enqueue_many('[{"job_class": "tap.many.Bad", "run_at": "not a date"}]')$$, '22007',
  'conveyor.enqueue_many: jobs[0]: run_at: invalid input syntax for type timestamp with time zone: "not a date"',
  'a run_at that is not a timestamp raises 22007 naming run_at');
SELECT throws_ok($$SELECT conveyor.enqueue_many('[{"job_class": "tap.many.Bad", "args": {"a": 1}}]')$$, '22023',
  'conveyor.enqueue_many: jobs[0]: args must be a JSON array, not object', 'args that is an object raises 22023');
SELECT throws_ok($$SELECT conveyor.enqueue_many('[{"job_class": "tap.many.Bad", "data": [1]}]')$$, '22023',
  'conveyor.enqueue_many: jobs[0]: data must be a JSON object, not array', 'data that is an array raises 22023');
SELECT throws_ok($$SELECT conveyor.enqueue_many(jsonb_build_array(jsonb_build_object('job_class', 'tap.many.Bad', 'queue', repeat('q', 101))))$$,
  '22001', 'conveyor.enqueue_many: jobs[0]: queue must be at most 100 characters, not 101',
  'a 101-character queue raises 22001');
SELECT throws_ok($$SELECT conveyor.enqueue_many(jsonb_build_array(jsonb_build_object('job_class', repeat('j', 501))))$$,
  '22001', 'conveyor.enqueue_many: jobs[0]: job_class must be at most 500 characters, not 501',
  'a 501-character job_class raises 22001');
SELECT throws_ok($$SELECT conveyor.enqueue_many('[{"job_class": "tap.many.Bad", "maximum_retry_count": -1}]')$$, '22023',
  'conveyor.enqueue_many: jobs[0]: maximum_retry_count must not be negative, not -1',
  'a negative maximum_retry_count raises 22023');
SELECT throws_ok($$SELECT conveyor.enqueue_many('[{"job_class": "tap.many.Bad", "queue": ""}]')$$, '22023',
  'conveyor.enqueue_many: jobs[0]: queue must not be empty', 'an empty queue raises 22023');

SELECT is((SELECT count(*) FROM conveyor.jobs WHERE job_class = 'tap.many.Bad'), 0::bigint,
  'no failed enqueue_many left a job behind');


-- Unique keys ------------------------------------------------------------------

CREATE TEMP TABLE t_uk AS
  SELECT row_number() OVER () AS n, id FROM conveyor.enqueue_many(
    '[{"job_class": "tap.many.A", "queue": "tap_many_uk"},
      {"job_class": "tap.many.B", "queue": "tap_many_uk", "unique_key": "tap.many.k1"},
      {"job_class": "tap.many.C", "queue": "tap_many_uk"},
      {"job_class": "tap.many.D", "queue": "tap_many_uk", "unique_key": "tap.many.k1"},
      {"job_class": "tap.many.E", "queue": "tap_many_uk", "unique_key": "tap.many.k2"}]') AS id;

SELECT is((SELECT count(*) FROM conveyor.jobs WHERE queue = 'tap_many_uk'), 4::bigint,
  'five elements, two with the same key: four jobs');
SELECT results_eq(
  $$SELECT t.n, j.job_class FROM t_uk AS t JOIN conveyor.jobs AS j USING (id) ORDER BY t.n$$,
  $$VALUES (1::bigint, 'tap.many.A'), (2, 'tap.many.B'), (3, 'tap.many.C'), (4, 'tap.many.B'), (5, 'tap.many.E')$$,
  'ids come back in input order; the first element with a key wins and the later one returns its id');
SELECT is((SELECT unique_key FROM conveyor.jobs WHERE id = (SELECT id FROM t_uk WHERE n = 5)), 'tap.many.k2',
  'enqueue_many stores unique_key');

SELECT results_eq(
  $$SELECT id FROM conveyor.enqueue_many('[{"job_class": "tap.many.X", "queue": "tap_many_uk", "unique_key": "tap.many.k2"},
                                           {"job_class": "tap.many.Y", "queue": "tap_many_uk", "unique_key": "tap.many.k1"}]') AS id$$,
  $$SELECT id FROM t_uk WHERE n IN (5, 2) ORDER BY n DESC$$,
  'keys held by earlier jobs return those jobs'' ids');
SELECT is((SELECT id FROM conveyor.enqueue('tap.many.Z', unique_key => 'tap.many.k1')), (SELECT id FROM t_uk WHERE n = 2),
  'enqueue and enqueue_many share the keys');

SELECT ok(conveyor.finish_job((SELECT id FROM t_uk WHERE n = 2)), 'finish the job holding tap.many.k1');
SELECT isnt((SELECT id FROM conveyor.enqueue_many('[{"job_class": "tap.many.B", "queue": "tap_many_uk", "unique_key": "tap.many.k1"}]') AS id),
  (SELECT id FROM t_uk WHERE n = 2), 'a finished job frees its key for enqueue_many');

SELECT throws_ok($$SELECT conveyor.enqueue_many('[{"job_class": "tap.many.Bad"}, {"job_class": "tap.many.Bad", "unique_key": null}]')$$,
  '22004', 'conveyor.enqueue_many: jobs[1]: unique_key must not be null', 'a JSON null unique_key raises 22004');
SELECT throws_ok($$SELECT conveyor.enqueue_many('[{"job_class": "tap.many.Bad", "unique_key": 7}]')$$,
  '22023', 'conveyor.enqueue_many: jobs[0]: unique_key must be a JSON string, not number', 'a unique_key that is not a string raises 22023');
SELECT throws_ok($$SELECT conveyor.enqueue_many('[{"job_class": "tap.many.Bad", "unique_key": ""}]')$$,
  '22023', 'conveyor.enqueue_many: jobs[0]: unique_key must not be empty', 'an empty unique_key raises 22023');
SELECT throws_ok($$SELECT conveyor.enqueue_many(jsonb_build_array(jsonb_build_object('job_class', 'tap.many.Bad', 'unique_key', repeat('k', 501))))$$,
  '22001', 'conveyor.enqueue_many: jobs[0]: unique_key must be at most 500 characters, not 501', 'a unique_key over 500 characters raises 22001');
SELECT throws_ok($$SELECT conveyor.enqueue_many('[{"job_class": "tap.many.Bad", "unique_key": "tap.many.new"}, {"job_class": ""}]')$$,
  '22023', 'conveyor.enqueue_many: jobs[1]: job_class must not be empty', 'with keys, a bad element still names itself');
SELECT is((SELECT count(*) FROM conveyor.jobs WHERE unique_key = 'tap.many.new'), 0::bigint,
  'all or nothing with keys too: the good element was not inserted');

SELECT * FROM finish();
ROLLBACK;
