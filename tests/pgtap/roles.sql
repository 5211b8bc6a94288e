-- Grants proven with SET ROLE: conveyor_enqueuer may only enqueue;
-- conveyor_worker may lock, resolve, retry, unlock, register and read stats.
-- Job ids are carried in psql variables: the roles cannot read this
-- session's temp tables.
BEGIN;
SELECT plan(50);

SELECT id AS job_a FROM conveyor.enqueue('tap.roles.Job', queue => 'tap_roles', priority => 1) \gset
SELECT id AS job_b FROM conveyor.enqueue('tap.roles.Job', queue => 'tap_roles', priority => 2) \gset
SELECT id AS job_c FROM conveyor.enqueue('tap.roles.Job', queue => 'tap_roles', priority => 3) \gset
SELECT id AS job_d FROM conveyor.enqueue('tap.roles.Job', queue => 'tap_roles', priority => 4) \gset
SELECT id AS job_e FROM conveyor.enqueue('tap.roles.Job', queue => 'tap_roles_by_id') \gset
-- A listening worker, so enqueues below run the trigger's targeting query.
SELECT conveyor.register_locker('{tap_roles,tap_roles_enqueued}', '{NULL}') AS channel \gset

-- conveyor_enqueuer -------------------------------------------------------------

SET ROLE conveyor_enqueuer;

SELECT is(current_user::text, 'conveyor_enqueuer', 'now running as conveyor_enqueuer');
SELECT lives_ok($$SELECT conveyor.enqueue('tap.roles.Enqueued', '[1]', queue => 'tap_roles_enqueued', priority => 5)$$,
  'conveyor_enqueuer can enqueue (named notation), with a listening worker registered');
SELECT is((SELECT job_class FROM conveyor.enqueue('tap.roles.Enqueued', queue => 'tap_roles_enqueued')), 'tap.roles.Enqueued',
  'conveyor_enqueuer gets back the row it enqueued');
SELECT is((SELECT count(*) FROM conveyor.enqueue_many('[{"job_class": "tap.roles.Enqueued", "queue": "tap_roles_enqueued"},
                                                        {"job_class": "tap.roles.Enqueued", "queue": "tap_roles_enqueued"}]')),
  2::bigint, 'conveyor_enqueuer can enqueue_many');
SELECT throws_ok($$SELECT conveyor.enqueue('')$$, '22023', 'conveyor.enqueue: job_class must not be empty',
  'conveyor_enqueuer gets enqueue''s own errors');
SELECT throws_ok($$SELECT conveyor.enqueue_many('[{"job_class": "x", "bogus": 1}]')$$, '22023', NULL,
  'conveyor_enqueuer gets enqueue_many''s own errors');
SELECT lives_ok($$SELECT conveyor.schema_version()$$, 'conveyor_enqueuer can read schema_version()');

SELECT throws_ok($$SELECT * FROM conveyor.jobs$$, '42501', NULL, 'conveyor_enqueuer cannot SELECT from conveyor.jobs');
SELECT throws_ok($$SELECT * FROM conveyor.lockers$$, '42501', NULL, 'conveyor_enqueuer cannot SELECT from conveyor.lockers');
SELECT throws_ok($$INSERT INTO conveyor.jobs (job_class) VALUES ('tap.roles.Direct')$$, '42501', NULL,
  'conveyor_enqueuer cannot INSERT into conveyor.jobs directly');
SELECT throws_ok($$UPDATE conveyor.jobs SET priority = 0$$, '42501', NULL, 'conveyor_enqueuer cannot UPDATE conveyor.jobs');
SELECT throws_ok($$DELETE FROM conveyor.jobs$$, '42501', NULL, 'conveyor_enqueuer cannot DELETE from conveyor.jobs');
SELECT throws_ok($$SELECT * FROM conveyor.lock_jobs(ARRAY['tap_roles'], 1)$$, '42501', NULL, 'conveyor_enqueuer cannot lock_jobs');
SELECT throws_ok(format($$SELECT * FROM conveyor.lock_jobs_by_id(ARRAY[%s]::bigint[], queues => (SELECT array_agg(DISTINCT queue) FROM conveyor.jobs))$$, :job_a), '42501', NULL,
  'conveyor_enqueuer cannot lock_jobs_by_id');
SELECT throws_ok(format($$SELECT conveyor.destroy_job(%s)$$, :job_a), '42501', NULL, 'conveyor_enqueuer cannot destroy_job');
SELECT throws_ok(format($$SELECT conveyor.finish_jobs(ARRAY[%s]::bigint[])$$, :job_a), '42501', NULL, 'conveyor_enqueuer cannot finish_jobs');
SELECT throws_ok(format($$SELECT conveyor.expire_job(%s)$$, :job_a), '42501', NULL, 'conveyor_enqueuer cannot expire_job');
SELECT throws_ok(format($$SELECT * FROM conveyor.retry_job(%s)$$, :job_a), '42501', NULL, 'conveyor_enqueuer cannot retry_job');
SELECT throws_ok(format($$SELECT conveyor.unlock_jobs(ARRAY[%s]::bigint[])$$, :job_a), '42501', NULL, 'conveyor_enqueuer cannot unlock_jobs');
SELECT throws_ok($$SELECT * FROM conveyor.job_stats()$$, '42501', NULL, 'conveyor_enqueuer cannot read job_stats');
SELECT throws_ok($$SELECT * FROM conveyor.queue_stats()$$, '42501', NULL, 'conveyor_enqueuer cannot read queue_stats');
SELECT throws_ok($$SELECT conveyor.register_locker('{tap_roles}', '{NULL}')$$, '42501', NULL, 'conveyor_enqueuer cannot register_locker');
SELECT throws_ok($$SELECT conveyor.held_job_ids()$$, '42501', NULL, 'conveyor_enqueuer cannot call the internal held_job_ids');
SELECT throws_ok($$SELECT * FROM conveyor.job_problem('x', '[]', 'q', 1, now(), '{}', 1)$$, '42501', NULL,
  'conveyor_enqueuer cannot call the internal job_problem');
SELECT throws_ok($$CREATE TABLE conveyor.tap_roles_intruder (x int)$$, '42501', NULL,
  'conveyor_enqueuer cannot create objects in schema conveyor');

RESET ROLE;

SELECT is((SELECT count(*) FROM conveyor.jobs WHERE job_class = 'tap.roles.Enqueued'), 4::bigint,
  'the jobs conveyor_enqueuer enqueued are stored');
SELECT is((SELECT count(*) FROM pg_catalog.pg_locks
            WHERE locktype = 'advisory' AND objsubid = 2 AND pid = pg_catalog.pg_backend_pid()
              AND objid::bigint IN (:job_a, :job_b, :job_c, :job_d)),
  0::bigint, 'the refused calls locked nothing');

-- conveyor_worker ---------------------------------------------------------------

SET ROLE conveyor_worker;

SELECT is(current_user::text, 'conveyor_worker', 'now running as conveyor_worker');
SELECT results_eq($$SELECT id FROM conveyor.lock_jobs(ARRAY['tap_roles'], 4)$$,
  ARRAY[:job_a, :job_b, :job_c, :job_d]::bigint[], 'conveyor_worker can lock_jobs');
SELECT results_eq(format($$SELECT id FROM conveyor.lock_jobs_by_id(ARRAY[%s]::bigint[], queues => (SELECT array_agg(DISTINCT queue) FROM conveyor.jobs))$$, :job_e),
  ARRAY[:job_e]::bigint[], 'conveyor_worker can lock_jobs_by_id');
SELECT is(conveyor.finish_job(:job_a), true, 'conveyor_worker can finish_job');
SELECT is(conveyor.destroy_job(:job_b), true, 'conveyor_worker can destroy_job');
SELECT is(conveyor.expire_job(:job_c), true, 'conveyor_worker can expire_job');
SELECT is((SELECT error_count FROM conveyor.retry_job(:job_d, 'boom', 'trace')), 1, 'conveyor_worker can retry_job');
SELECT is(ARRAY(SELECT conveyor.unlock_jobs(ARRAY[:job_e]::bigint[])), ARRAY[:job_e]::bigint[], 'conveyor_worker can unlock_jobs');
SELECT is(ARRAY(SELECT conveyor.finish_jobs(ARRAY[:job_e]::bigint[])), ARRAY[:job_e]::bigint[],
  'conveyor_worker can finish_jobs (and destroy_jobs, expire_jobs: same grants, see 00_inventory)');
SELECT is((SELECT count FROM conveyor.job_stats() WHERE job_class = 'tap.roles.Job'), 1::bigint,
  'conveyor_worker can read job_stats');
SELECT is((SELECT finished FROM conveyor.queue_stats() WHERE queue = 'tap_roles'), 1::bigint,
  'conveyor_worker can read queue_stats');
SELECT is(conveyor.register_locker('{tap_roles}', '{1,NULL}'), :'channel',
  'conveyor_worker can register_locker (same session, same channel)');
SELECT lives_ok($$SELECT conveyor.prune_lockers()$$, 'conveyor_worker can prune_lockers');
SELECT is(conveyor.unregister_locker(), true, 'conveyor_worker can unregister_locker');
SELECT lives_ok($$SELECT conveyor.enqueue('tap.roles.FromJob', queue => 'tap_roles_enqueued')$$,
  'conveyor_worker can enqueue (it is a conveyor_enqueuer)');
SELECT is((SELECT count(*) FROM conveyor.jobs WHERE job_class = 'tap.roles.FromJob'), 1::bigint,
  'conveyor_worker can read conveyor.jobs');
SELECT throws_ok($$INSERT INTO conveyor.jobs (job_class) VALUES ('tap.roles.Direct')$$, '42501', NULL,
  'conveyor_worker cannot INSERT into conveyor.jobs directly (enqueue does)');
SELECT throws_ok($$TRUNCATE conveyor.jobs$$, '42501', NULL, 'conveyor_worker cannot TRUNCATE conveyor.jobs');
SELECT throws_ok($$SELECT * FROM conveyor.job_problem('x', '[]', 'q', 1, now(), '{}', 1)$$, '42501', NULL,
  'conveyor_worker cannot call the internal job_problem');
SELECT throws_ok($$SELECT * FROM conveyor.job_json_problem('{}')$$, '42501', NULL,
  'conveyor_worker cannot call the internal job_json_problem');
SELECT throws_ok($$SELECT conveyor.tg_jobs__notify()$$, '42501', NULL,
  'conveyor_worker cannot call the trigger function');
SELECT throws_ok($$CREATE TABLE conveyor.tap_roles_intruder (x int)$$, '42501', NULL,
  'conveyor_worker cannot create objects in schema conveyor');

RESET ROLE;

SELECT is(current_user::text, session_user::text, 'RESET ROLE returns to the session user');

SELECT * FROM finish();
ROLLBACK;
