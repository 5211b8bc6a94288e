-- Batches: create_batch, close_batch, batch_stats, joining a batch (enqueue
-- with batch_id), the callbacks fired by the resolution triggers (on_finish,
-- on_success, on_discard, each once), errors by SQLSTATE, privileges.
-- Concurrent resolutions are raced from pytest (tests/python/test_batches_race.py).
BEGIN;
SELECT plan(60);

CREATE TEMP TABLE fx (name text PRIMARY KEY, id bigint NOT NULL);
CREATE FUNCTION pg_temp.fx(text) RETURNS bigint LANGUAGE sql AS $$ SELECT id FROM fx WHERE name = $1 $$;
-- The callback jobs of a batch: job_class and event, in enqueue order.
CREATE FUNCTION pg_temp.callbacks(bigint) RETURNS text[] LANGUAGE sql AS $$
  SELECT coalesce(array_agg(j.job_class || ':' || (j.data #>> '{batch,event}') ORDER BY j.id), '{}')
    FROM conveyor.jobs AS j WHERE (j.data #>> '{batch,id}')::bigint = $1 $$;
CREATE FUNCTION pg_temp.add_job(batch text, name text, queue text DEFAULT 'tap_batch') RETURNS void LANGUAGE sql AS $$
  INSERT INTO fx SELECT name, (conveyor.enqueue('tap.batch.Work', jsonb_build_array(name), queue => queue,
                                                batch_id => pg_temp.fx(batch))).id $$;

-- create_batch ------------------------------------------------------------------

SELECT has_function('conveyor', 'create_batch', ARRAY['text', 'jsonb', 'jsonb', 'jsonb', 'jsonb'],
  'conveyor.create_batch(text, jsonb, jsonb, jsonb, jsonb) exists');
SELECT function_returns('conveyor', 'create_batch', ARRAY['text', 'jsonb', 'jsonb', 'jsonb', 'jsonb'], 'bigint',
  'conveyor.create_batch returns bigint');

INSERT INTO fx SELECT 'plain', conveyor.create_batch();
SELECT results_eq(
  $$SELECT description, on_finish, on_success, on_discard, properties, closed_at, finished_at, discarded_at
      FROM conveyor.batches WHERE id = pg_temp.fx('plain')$$,
  $$VALUES (NULL::text, NULL::jsonb, NULL::jsonb, NULL::jsonb, '{}'::jsonb, NULL::timestamptz, NULL::timestamptz, NULL::timestamptz)$$,
  'create_batch with no arguments: an open batch, no callbacks, properties {}');

INSERT INTO fx SELECT 'main', conveyor.create_batch(
  'tap main',
  on_finish => '{"job_class": "tap.batch.Finish", "args": [1], "queue": "tap_cb", "priority": 7, "data": {"tag": "x"}}',
  on_success => '{"job_class": "tap.batch.Success"}',
  on_discard => '{"job_class": "tap.batch.Discard", "queue": "tap_cb"}',
  properties => '{"user": 42}');
SELECT ok(pg_temp.fx('main') > pg_temp.fx('plain'), 'ids increase');

SELECT throws_ok($$SELECT conveyor.create_batch(repeat('x', 1001))$$, '22001',
  'conveyor.create_batch: description must be at most 1000 characters, not 1001', 'a long description: 22001');
SELECT throws_ok($$SELECT conveyor.create_batch(properties => NULL)$$, '22004', NULL, 'NULL properties: 22004');
SELECT throws_ok($$SELECT conveyor.create_batch(properties => '[]')$$, '22023',
  'conveyor.create_batch: properties must be a JSON object, not array', 'properties not an object: 22023');
SELECT throws_ok($$SELECT conveyor.create_batch(on_finish => '"Notify"')$$, '22023',
  'conveyor.create_batch: on_finish: must be a JSON object, not string', 'a callback that is not an object: 22023');
SELECT throws_ok($$SELECT conveyor.create_batch(on_success => '{"args": []}')$$, '22023',
  'conveyor.create_batch: on_success: job_class is required', 'a callback without job_class: 22023, naming it');
SELECT throws_ok($$SELECT conveyor.create_batch(on_discard => '{"job_class": "X", "prio": 1}')$$, '22023', NULL,
  'a callback with an unknown key: 22023');
SELECT throws_ok($$SELECT conveyor.create_batch(on_finish => '{"job_class": "X", "priority": 99999}')$$, '22003', NULL,
  'a callback with a priority out of range: 22003, as enqueue_many');
SELECT throws_ok($$SELECT conveyor.create_batch(on_finish => '{"job_class": "X", "args": {}}')$$, '22023', NULL,
  'a callback whose args are not an array: 22023');
SELECT throws_ok($$SELECT conveyor.create_batch(on_finish => '{"job_class": ""}')$$, '22023', NULL,
  'a callback with an empty job_class: 22023');
SELECT throws_ok(format($$SELECT conveyor.create_batch(on_finish => '{"job_class": "X", "batch_id": %s}')$$, pg_temp.fx('plain')),
  '22023', 'conveyor.create_batch: on_finish: a callback cannot join a batch (batch_id)', 'a callback with a batch_id: 22023');

-- Joining a batch ----------------------------------------------------------------

SELECT lives_ok($$SELECT pg_temp.add_job('main', 'a'); SELECT pg_temp.add_job('main', 'b'); SELECT pg_temp.add_job('main', 'c')$$,
  'enqueue(batch_id => ...) adds jobs to an open batch');
SELECT is((SELECT batch_id FROM conveyor.jobs WHERE id = pg_temp.fx('a')), pg_temp.fx('main'), 'the job carries its batch_id');
SELECT throws_ok($$SELECT conveyor.enqueue('tap.batch.Work', batch_id => 987654321)$$, '23503',
  'conveyor: no batch 987654321 (create it with conveyor.create_batch)', 'an enqueue into a missing batch: 23503');
SELECT throws_ok($$SELECT conveyor.enqueue_many('[{"job_class": "tap.batch.Work", "batch_id": 987654321}]')$$, '23503', NULL,
  'an enqueue_many into a missing batch: 23503');

-- batch_stats -------------------------------------------------------------------

SELECT has_function('conveyor', 'batch_stats', ARRAY['bigint'], 'conveyor.batch_stats(bigint) exists');
SELECT pg_temp.add_job('main', 'later');
UPDATE conveyor.jobs SET run_at = now() + interval '1 hour' WHERE id = pg_temp.fx('later');
SELECT pg_temp.add_job('main', 'retrying');
UPDATE conveyor.jobs SET run_at = now() + interval '1 hour', error_count = 1 WHERE id = pg_temp.fx('retrying');
SELECT pg_advisory_lock(conveyor.job_lock_key1(pg_temp.fx('c')), conveyor.job_lock_key2(pg_temp.fx('c')));
SELECT results_eq(
  $$SELECT batch_id, description, properties, closed_at, ready, scheduled, retrying, running, finished, expired, destroyed, total
      FROM conveyor.batch_stats(pg_temp.fx('main'))$$,
  $$VALUES (pg_temp.fx('main'), 'tap main', '{"user": 42}'::jsonb, NULL::timestamptz, 2::bigint, 1::bigint, 1::bigint, 1::bigint, 0::bigint, 0::bigint, 0::bigint, 5::bigint)$$,
  'batch_stats counts ready, scheduled, retrying and running (locked) jobs as jobs_view defines them');
SELECT pg_advisory_unlock(conveyor.job_lock_key1(pg_temp.fx('c')), conveyor.job_lock_key2(pg_temp.fx('c')));
SELECT throws_ok($$SELECT * FROM conveyor.batch_stats(987654321)$$, 'P0002', 'conveyor.batch_stats: no batch 987654321',
  'batch_stats of a missing batch: P0002');

-- Resolving jobs of an open batch -------------------------------------------------

SELECT ok(conveyor.destroy_job(pg_temp.fx('a')), 'destroy a job of the batch');
SELECT ok(conveyor.finish_job(pg_temp.fx('b')), 'finish a job of the batch');
SELECT is(pg_temp.callbacks(pg_temp.fx('main')), '{}'::text[], 'no callback yet');
SELECT ok(conveyor.expire_job(pg_temp.fx('c')), 'expire a job of the batch');
SELECT is(pg_temp.callbacks(pg_temp.fx('main')), ARRAY['tap.batch.Discard:discard'],
  'the first expiry fires on_discard, though the batch is still open');
SELECT ok((SELECT discarded_at IS NOT NULL AND on_discard_job_id IS NOT NULL FROM conveyor.batches WHERE id = pg_temp.fx('main')),
  'the batch records discarded_at and the on_discard job''s id');
SELECT ok((conveyor.retry_job(pg_temp.fx('retrying'), 'boom', expire => true)).expired_at IS NOT NULL,
  'retry_job(expire => true) expires a second job');
SELECT is(pg_temp.callbacks(pg_temp.fx('main')), ARRAY['tap.batch.Discard:discard'], 'on_discard fires only once');
SELECT is(conveyor.destroy_job(pg_temp.fx('later')), true, 'destroy the last job while the batch is open');
SELECT is(pg_temp.callbacks(pg_temp.fx('main')), ARRAY['tap.batch.Discard:discard'],
  'all jobs resolved, but the batch is open: on_finish waits');

-- A job added after the others resolved is waited for.
SELECT pg_temp.add_job('main', 'late');
SELECT is(conveyor.close_batch(pg_temp.fx('main')), true, 'close_batch closes the batch and says true');
SELECT is(pg_temp.callbacks(pg_temp.fx('main')), ARRAY['tap.batch.Discard:discard'],
  'closed, but the late job is unresolved: on_finish waits for it');
SELECT throws_ok($$SELECT pg_temp.add_job('main', 'too_late')$$, '55000',
  format('conveyor: batch %s is closed; no job may join it', pg_temp.fx('main')), 'an enqueue into a closed batch: 55000');
SELECT is(conveyor.close_batch(pg_temp.fx('main')), false, 'closing it again says false');
SELECT ok(conveyor.finish_job(pg_temp.fx('late')), 'finish the late job');
SELECT is(pg_temp.callbacks(pg_temp.fx('main')), ARRAY['tap.batch.Discard:discard', 'tap.batch.Finish:finish'],
  'the last resolution of a closed batch fires on_finish, and not on_success (a job expired)');
SELECT results_eq(
  $$SELECT job_class, args, queue, priority, data FROM conveyor.jobs
     WHERE id = (SELECT on_finish_job_id FROM conveyor.batches WHERE id = pg_temp.fx('main'))$$,
  format($$VALUES ('tap.batch.Finish', '[1]'::jsonb, 'tap_cb', 7::smallint,
                   '{"tag": "x", "batch": {"id": %s, "event": "finish", "description": "tap main", "properties": {"user": 42}}}'::jsonb)$$,
         pg_temp.fx('main')),
  'the on_finish job is as described, with data.batch = {id, event, description, properties}');
SELECT results_eq(
  $$SELECT ready, scheduled, retrying, running, finished, expired, destroyed, total, finished_at IS NOT NULL
      FROM conveyor.batch_stats(pg_temp.fx('main'))$$,
  $$VALUES (0::bigint, 0::bigint, 0::bigint, 0::bigint, 2::bigint, 2::bigint, 2::bigint, 6::bigint, true)$$,
  'batch_stats counts the resolutions: finished, expired, destroyed');
DELETE FROM conveyor.jobs WHERE id IN (pg_temp.fx('b'), pg_temp.fx('c'));
SELECT results_eq(
  $$SELECT finished, expired, destroyed, total FROM conveyor.batch_stats(pg_temp.fx('main'))$$,
  $$VALUES (2::bigint, 2::bigint, 2::bigint, 6::bigint)$$,
  'deleting resolved rows (clean-up) changes no count and fires nothing');
SELECT is(pg_temp.callbacks(pg_temp.fx('main')), ARRAY['tap.batch.Discard:discard', 'tap.batch.Finish:finish'],
  '... and no callback fires again');

-- close_batch -------------------------------------------------------------------

INSERT INTO fx SELECT 'empty', conveyor.create_batch(on_finish => '{"job_class": "tap.batch.Finish"}',
                                                     on_success => '{"job_class": "tap.batch.Success"}');
SELECT ok(conveyor.close_batch(pg_temp.fx('empty')), 'close an empty batch');
SELECT is(pg_temp.callbacks(pg_temp.fx('empty')), ARRAY['tap.batch.Finish:finish', 'tap.batch.Success:success'],
  'an empty batch finishes when closed: on_finish and on_success fire at once');

INSERT INTO fx SELECT 'success', conveyor.create_batch(on_finish => '{"job_class": "tap.batch.Finish"}',
                                                       on_success => '{"job_class": "tap.batch.Success"}',
                                                       on_discard => '{"job_class": "tap.batch.Discard"}');
SELECT pg_temp.add_job('success', 's1');
SELECT pg_temp.add_job('success', 's2');
SELECT ok(conveyor.close_batch(pg_temp.fx('success')), 'close a batch with two jobs');
SELECT is((SELECT count(*)::integer FROM conveyor.destroy_jobs(ARRAY[pg_temp.fx('s1'), pg_temp.fx('s2')])), 2,
  'destroy both jobs in one statement');
SELECT is(pg_temp.callbacks(pg_temp.fx('success')), ARRAY['tap.batch.Finish:finish', 'tap.batch.Success:success'],
  'both resolved in one statement: on_finish and on_success fire once each');

INSERT INTO fx SELECT 'all_done', conveyor.create_batch(on_finish => '{"job_class": "tap.batch.Finish"}');
SELECT pg_temp.add_job('all_done', 'd1');
SELECT conveyor.finish_job(pg_temp.fx('d1'));
SELECT ok(conveyor.close_batch(pg_temp.fx('all_done')), 'close a batch whose jobs are all resolved');
SELECT is(pg_temp.callbacks(pg_temp.fx('all_done')), ARRAY['tap.batch.Finish:finish'],
  'a batch whose jobs resolved before the close finishes at the close');

SELECT throws_ok($$SELECT conveyor.close_batch(987654321)$$, 'P0002', 'conveyor.close_batch: no batch 987654321',
  'close_batch of a missing batch: P0002');
SELECT throws_ok($$SELECT conveyor.close_batch(NULL)$$, 'P0002', NULL, 'close_batch(NULL): P0002');

-- retry_job that does not expire is no resolution.
INSERT INTO fx SELECT 'retry', conveyor.create_batch(on_finish => '{"job_class": "tap.batch.Finish"}');
SELECT pg_temp.add_job('retry', 'r1');
SELECT conveyor.close_batch(pg_temp.fx('retry'));
SELECT lives_ok(format($$SELECT conveyor.retry_job(%s, 'boom')$$, pg_temp.fx('r1')), 'retry a job of a closed batch');
SELECT is(pg_temp.callbacks(pg_temp.fx('retry')), '{}'::text[], 'a retry resolves nothing and fires nothing');

-- Jobs without a batch never touch conveyor.batches.
SELECT is((SELECT count(*)::integer FROM conveyor.destroy_jobs(ARRAY(
            SELECT (conveyor.enqueue('tap.batch.Loose', queue => 'tap_loose')).id FROM generate_series(1, 3)))), 3,
  'jobs without a batch are enqueued and destroyed');

-- Privileges ----------------------------------------------------------------------

SELECT pg_temp.fx('main') AS main_batch \gset
SET LOCAL ROLE conveyor_enqueuer;
SELECT lives_ok($$SELECT conveyor.close_batch(conveyor.create_batch('by an enqueuer', on_finish => '{"job_class": "tap.batch.Finish"}'))$$,
  'conveyor_enqueuer may create and close batches (they group what it may enqueue)');
SELECT lives_ok(format($$SELECT * FROM conveyor.batch_stats(%s)$$, :main_batch), 'conveyor_enqueuer may read batch_stats (counts, no arguments)');
SELECT lives_ok($$SELECT conveyor.enqueue('tap.batch.Work', queue => 'tap_batch', batch_id => conveyor.create_batch())$$,
  'conveyor_enqueuer may enqueue into a batch (the join trigger runs as the owner)');
SELECT throws_ok($$SELECT * FROM conveyor.batches$$, '42501', NULL, 'conveyor_enqueuer may not read conveyor.batches');
RESET ROLE;

SELECT pg_temp.fx('r1') AS r1 \gset
SET LOCAL ROLE conveyor_worker;
SELECT lives_ok(format($$SELECT conveyor.finish_job(%s)$$, :r1),
  'conveyor_worker resolves the last job of a batch: the trigger fires the callback as the owner');
SELECT throws_ok($$UPDATE conveyor.batches SET closed_at = NULL$$, '42501', NULL, 'conveyor_worker may not write conveyor.batches');
RESET ROLE;
SELECT is(pg_temp.callbacks(pg_temp.fx('retry')), ARRAY['tap.batch.Finish:finish'], '... and on_finish was enqueued');

SELECT * FROM finish();
ROLLBACK;
