-- The conveyor schema's inventory: tables, columns, constraints, indexes,
-- the trigger, the whole function surface (public and internal), comments,
-- pinned search_path, SECURITY DEFINER, and who may execute or read what.
BEGIN;
SELECT plan(67);

-- Tables and columns --------------------------------------------------------

SELECT tables_are('conveyor', ARRAY['batches', 'jobs', 'lockers', 'schedules', 'schema_changes', 'pauses', 'concurrency_limits', 'throttle_starts'],
  'conveyor has exactly the tables batches, jobs, lockers, schedules, schema_changes, pauses, concurrency_limits and throttle_starts');

SELECT columns_are('conveyor', 'schema_changes', ARRAY['change', 'planned_at', 'deployed_at'],
  'conveyor.schema_changes has exactly the documented columns');

SELECT columns_are('conveyor', 'schedules', ARRAY[
  'name', 'cron', 'time_zone', 'job_class', 'args', 'queue', 'priority', 'data', 'enabled',
  'catch_up', 'last_run_at', 'next_run_at', 'created_at', 'updated_at'],
  'conveyor.schedules has exactly the documented columns');

SELECT set_eq(
  $$SELECT conname::text COLLATE "default" FROM pg_catalog.pg_constraint
     WHERE conrelid = 'conveyor.schedules'::regclass AND contype = 'c'$$,
  ARRAY['schedules_name_length', 'schedules_cron_length', 'schedules_time_zone_length',
        'schedules_job_class_length', 'schedules_queue_length', 'schedules_priority_in_range',
        'schedules_args_is_array', 'schedules_data_is_object', 'schedules_next_run_after_last_run'],
  'conveyor.schedules has exactly the named check constraints');

SELECT columns_are('conveyor', 'jobs', ARRAY[
  'id', 'priority', 'run_at', 'job_class', 'queue', 'args', 'data', 'error_count',
  'maximum_retry_count', 'last_error_message', 'last_error_backtrace', 'finished_at',
  'expired_at', 'created_at', 'unique_key', 'concurrency_key', 'labels', 'batch_id',
  'result', 'errors', 'attempted_at', 'attempted_by'],
  'conveyor.jobs has exactly the documented columns');

SELECT columns_are('conveyor', 'lockers', ARRAY[
  'pid', 'backend_start', 'postmaster_start', 'hostname', 'process_id', 'queues',
  'worker_priorities', 'max_priority', 'listening', 'started_at', 'buffer_size',
  'maximum_buffer_size', 'reported_at'],
  'conveyor.lockers has exactly the documented columns');

SELECT results_eq(
  $$SELECT a.attname::text COLLATE "default", pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull,
           pg_catalog.pg_get_expr(d.adbin, d.adrelid) COLLATE "default"
      FROM pg_catalog.pg_attribute AS a
      LEFT JOIN pg_catalog.pg_attrdef AS d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
     WHERE a.attrelid = 'conveyor.jobs'::regclass AND a.attnum > 0 AND NOT a.attisdropped
     ORDER BY a.attnum$$,
  $$VALUES ('id', 'bigint', true, NULL::text),
           ('priority', 'smallint', true, '100'),
           ('run_at', 'timestamp with time zone', true, 'now()'),
           ('job_class', 'text', true, NULL),
           ('queue', 'text', true, '''default''::text'),
           ('args', 'jsonb', true, '''[]''::jsonb'),
           ('data', 'jsonb', true, '''{}''::jsonb'),
           ('error_count', 'integer', true, '0'),
           ('maximum_retry_count', 'integer', true, '15'),
           ('last_error_message', 'text', false, NULL),
           ('last_error_backtrace', 'text', false, NULL),
           ('finished_at', 'timestamp with time zone', false, NULL),
           ('expired_at', 'timestamp with time zone', false, NULL),
           ('created_at', 'timestamp with time zone', true, 'now()'),
           ('unique_key', 'text', false, NULL),
           ('concurrency_key', 'text', false, NULL),
           ('labels', 'text[]', true, '''{}''::text[]'),
           ('batch_id', 'bigint', false, NULL),
           ('result', 'jsonb', false, NULL),
           ('errors', 'jsonb', true, '''[]''::jsonb'),
           ('attempted_at', 'timestamp with time zone', false, NULL),
           ('attempted_by', 'text', false, NULL)$$,
  'conveyor.jobs columns have the documented types, NOT NULLs and defaults, in order');

SELECT col_is_pk('conveyor', 'jobs', 'id', 'conveyor.jobs.id is the primary key');

SELECT is((SELECT attidentity FROM pg_catalog.pg_attribute
            WHERE attrelid = 'conveyor.jobs'::regclass AND attname = 'id'),
          'a'::"char", 'conveyor.jobs.id is GENERATED ALWAYS AS IDENTITY');

SELECT col_is_pk('conveyor', 'lockers', 'pid', 'conveyor.lockers.pid is the primary key');

SELECT results_eq(
  $$SELECT a.attname::text COLLATE "default", pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull
      FROM pg_catalog.pg_attribute AS a
     WHERE a.attrelid = 'conveyor.lockers'::regclass AND a.attnum > 0 AND NOT a.attisdropped
     ORDER BY a.attnum$$,
  $$VALUES ('pid', 'integer', true), ('backend_start', 'timestamp with time zone', false),
           ('postmaster_start', 'timestamp with time zone', true), ('hostname', 'text', false),
           ('process_id', 'integer', false), ('queues', 'text[]', true),
           ('worker_priorities', 'integer[]', true), ('max_priority', 'integer', false),
           ('listening', 'boolean', true), ('started_at', 'timestamp with time zone', true),
           ('buffer_size', 'integer', false), ('maximum_buffer_size', 'integer', false),
           ('reported_at', 'timestamp with time zone', false)$$,
  'conveyor.lockers columns have the documented types and NOT NULLs');

-- Constraints, indexes, storage, trigger --------------------------------------

SELECT set_eq(
  $$SELECT conname::text COLLATE "default" FROM pg_catalog.pg_constraint
     WHERE conrelid = 'conveyor.jobs'::regclass AND contype = 'c'$$,
  ARRAY['jobs_priority_in_range', 'jobs_job_class_length', 'jobs_queue_length',
        'jobs_args_is_array', 'jobs_data_is_object', 'jobs_error_count_not_negative',
        'jobs_maximum_retry_count_not_negative', 'jobs_last_error_message_length',
        'jobs_last_error_backtrace_length', 'jobs_not_both_finished_and_expired'],
  'conveyor.jobs has exactly the named check constraints');

SELECT set_eq(
  $$SELECT conname::text COLLATE "default" FROM pg_catalog.pg_constraint
     WHERE conrelid = 'conveyor.lockers'::regclass AND contype = 'c'$$,
  ARRAY['lockers_queues_not_empty', 'lockers_has_workers', 'lockers_buffer_not_negative'],
  'conveyor.lockers has exactly the named check constraints');

SELECT indexes_are('conveyor', 'jobs', ARRAY['jobs_pkey', 'jobs_ready_idx', 'jobs_resolved_idx', 'jobs_unique_key_idx',
                                             'jobs_concurrency_key_idx', 'jobs_batch_unresolved_idx'],
  'conveyor.jobs has exactly the primary key, jobs_ready_idx, jobs_resolved_idx, jobs_unique_key_idx, jobs_concurrency_key_idx and jobs_batch_unresolved_idx');

SELECT has_index('conveyor', 'jobs', 'jobs_ready_idx', ARRAY['queue', 'priority', 'run_at', 'id'],
  'jobs_ready_idx is on (queue, priority, run_at, id)');

SELECT is((SELECT pg_catalog.pg_get_expr(indpred, indrelid) FROM pg_catalog.pg_index
            WHERE indexrelid = 'conveyor.jobs_ready_idx'::regclass),
          '((finished_at IS NULL) AND (expired_at IS NULL))',
          'jobs_ready_idx is partial: only unresolved jobs');

SELECT is((SELECT pg_catalog.pg_get_expr(indpred, indrelid) FROM pg_catalog.pg_index
            WHERE indexrelid = 'conveyor.jobs_resolved_idx'::regclass),
          '((finished_at IS NOT NULL) OR (expired_at IS NOT NULL))',
          'jobs_resolved_idx is partial: only resolved jobs');

SELECT results_eq(
  $$SELECT i.indisunique, pg_catalog.pg_get_expr(i.indpred, i.indrelid) COLLATE "default"
      FROM pg_catalog.pg_index AS i WHERE i.indexrelid = 'conveyor.jobs_unique_key_idx'::regclass$$,
  $$VALUES (true, '((unique_key IS NOT NULL) AND (finished_at IS NULL) AND (expired_at IS NULL))')$$,
  'jobs_unique_key_idx is unique over the unresolved jobs that have a key');

SELECT ok((SELECT reloptions FROM pg_catalog.pg_class WHERE oid = 'conveyor.jobs'::regclass)
            @> ARRAY['autovacuum_vacuum_scale_factor=0.01', 'autovacuum_vacuum_threshold=1000',
                     'autovacuum_vacuum_insert_scale_factor=0.01',
                     'autovacuum_analyze_scale_factor=0.02', 'autovacuum_vacuum_cost_delay=0'],
          'conveyor.jobs carries the high-churn autovacuum settings');

SELECT triggers_are('conveyor', 'jobs', ARRAY['_100_join_batch', '_200_resolve_in_batch', '_200_destroy_in_batch', '_300_free_limit_slot', '_900_notify'],
  'conveyor.jobs has exactly the triggers _100_join_batch, _200_resolve_in_batch, _200_destroy_in_batch (tests/pgtap/batches.sql), _300_free_limit_slot (tests/python/test_flow_limits.py) and _900_notify');

SELECT trigger_is('conveyor', 'jobs', '_900_notify', 'conveyor', 'tg_jobs__notify',
  '_900_notify calls conveyor.tg_jobs__notify()');

SELECT results_eq(
  $$SELECT t.tgtype::integer, t.tgnewtable::text COLLATE "default", t.tgenabled::text FROM pg_catalog.pg_trigger AS t
     WHERE t.tgrelid = 'conveyor.jobs'::regclass AND t.tgname = '_900_notify'$$,
  $$VALUES (4, 'new_jobs', 'O')$$,
  '_900_notify is an enabled AFTER INSERT FOR EACH STATEMENT trigger with transition table new_jobs');

SELECT triggers_are('conveyor', 'lockers', ARRAY[]::name[],
  'conveyor.lockers has no triggers');

-- The function surface --------------------------------------------------------

SELECT functions_are('conveyor', ARRAY[
  -- public API
  'enqueue', 'enqueue_many', 'lock_jobs', 'lock_jobs_by_id', 'unlock_jobs',
  'finish_job', 'finish_jobs', 'destroy_job', 'destroy_jobs', 'expire_job', 'expire_jobs',
  'retry_job', 'job_stats', 'queue_stats', 'register_locker', 'unregister_locker',
  'prune_lockers', 'report_locker', 'schema_version', 'cron_next', 'set_schedule', 'set_schedule_enabled',
  'delete_schedule', 'enqueue_due_schedules', 'next_schedule_at',
  'list_jobs', 'retry_now', 'discard_job', 'reschedule_job', 'retry_jobs_where',
  'discard_jobs_where', 'cleanup', 'start_attempt',
  'create_batch', 'close_batch', 'batch_stats', 'index_bloat',
  -- internal helpers and the trigger function
  'cron_field', 'cron_parse', 'enqueue_schedules_due_at',
  'batch_callback_problem', 'enqueue_batch_callback', 'finish_batch_if_done',
  'tg_jobs__join_batch', 'tg_jobs__resolve_in_batch',
  'held_job_ids', 'working_job_ids', 'release_job_locks', 'job_problem', 'job_json_problem',
  'recheck_locked_jobs', 'locked_in_transaction', 'tg_jobs__notify', 'resolve_jobs',
  'require_read_committed', 'job_lock_key1', 'job_lock_key2', 'job_lock_id', 'sorted_array_contains',
  'job_limit', 'flow_fields_problem', 'labels_from_json',
  'errors_append', 'job_state', 'manage_job', 'jobs_where_check',
  -- flow control (tests/pgtap/flow_control.sql)
  'pause', 'resume', 'set_concurrency_limit', 'delete_concurrency_limit', 'check_pause_names',
  'concurrency_limit_for', 'concurrency_key_lock', 'try_lock_limited_job', 'job_paused', 'enqueue_allowed',
  -- throttles (tests/pgtap/throttles.sql)
  'take_throttle_slot', 'give_back_throttle_slot', 'try_lock_flow_job', 'notify_throttle_wake',
  'flow_in_use', 'tg_flow__in_use', 'tg_jobs__free_limit_slot'],
  'conveyor has exactly the public and internal functions of deploy/');

SELECT results_eq(
  $$SELECT p.proname::text COLLATE "default", pg_catalog.pg_get_function_identity_arguments(p.oid),
           pg_catalog.pg_get_function_result(p.oid), p.provolatile::text
      FROM pg_catalog.pg_proc AS p
     WHERE p.pronamespace = 'conveyor'::regnamespace
     ORDER BY 1, 2$$,
  $$VALUES
    ('batch_callback_problem', 'callback jsonb, OUT error_code text, OUT error_message text', 'record', 's'),
    ('batch_stats', 'id bigint', 'TABLE(batch_id bigint, description text, properties jsonb, created_at timestamp with time zone, closed_at timestamp with time zone, finished_at timestamp with time zone, discarded_at timestamp with time zone, ready bigint, scheduled bigint, retrying bigint, running bigint, finished bigint, expired bigint, destroyed bigint, total bigint)', 's'),
    ('check_pause_names', 'caller text, queue text, job_class text, label text', 'void', 'i'),
    ('cleanup', 'finished_before interval, expired_before interval, batch_size integer, max_batches integer', 'bigint', 'v'),
    ('close_batch', 'id bigint', 'boolean', 'v'),
    ('concurrency_key_lock', 'purpose text, key text', 'bigint', 'i'),
    ('concurrency_limit_for', 'key text', 'conveyor.concurrency_limits', 's'),
    ('create_batch', 'description text, on_finish jsonb, on_success jsonb, on_discard jsonb, properties jsonb', 'bigint', 'v'),
    ('cron_field', 'field text, field_name text, lo integer, hi integer, names text[]', 'bigint', 'i'),
    ('cron_next', 'cron text, after timestamp with time zone, time_zone text', 'timestamp with time zone', 'i'),
    ('cron_parse', 'cron text', 'bigint[]', 'i'),
    ('delete_concurrency_limit', 'key text', 'boolean', 'v'),
    ('delete_schedule', 'name text', 'boolean', 'v'),
    ('destroy_job', 'id bigint', 'boolean', 'v'),
    ('destroy_jobs', 'ids bigint[], held bigint[]', 'SETOF bigint', 'v'),
    ('discard_job', 'id bigint, reason text', 'text', 'v'),
    ('discard_jobs_where', 'state text, queue text, job_class text, error_like text, since timestamp with time zone, reason text', 'bigint', 'v'),
    ('enqueue', 'job_class text, args jsonb, queue text, priority integer, run_at timestamp with time zone, data jsonb, maximum_retry_count integer, unique_key text, concurrency_key text, labels text[], batch_id bigint', 'conveyor.jobs', 'v'),
    ('enqueue_allowed', 'key text', 'boolean', 'v'),
    ('enqueue_batch_callback', 'batch conveyor.batches, event text', 'bigint', 'v'),
    ('enqueue_due_schedules', '', 'SETOF bigint', 'v'),
    ('enqueue_many', 'jobs jsonb', 'SETOF bigint', 'v'),
    ('enqueue_schedules_due_at', 'as_of timestamp with time zone', 'SETOF bigint', 'v'),
    ('errors_append', 'errors jsonb, entry jsonb', 'jsonb', 'i'),
    ('expire_job', 'id bigint', 'boolean', 'v'),
    ('expire_jobs', 'ids bigint[], held bigint[]', 'SETOF bigint', 'v'),
    ('finish_batch_if_done', 'batch conveyor.batches', 'boolean', 'v'),
    ('finish_job', 'id bigint, result jsonb', 'boolean', 'v'),
    ('finish_jobs', 'ids bigint[], held bigint[], results jsonb, attempted_at timestamp with time zone[], attempted_by text', 'SETOF bigint', 'v'),
    ('flow_fields_problem', 'concurrency_key text, labels text[], OUT error_code text, OUT error_message text', 'record', 'i'),
    ('flow_in_use', '', 'boolean', 'i'),
    ('give_back_throttle_slot', 'key text, at timestamp with time zone', 'void', 'v'),
    ('held_job_ids', '', 'bigint[]', 's'),
    ('index_bloat', 'minimum_size bigint, factor double precision', 'TABLE(index_name text, table_name text, size_bytes bigint, live_entries bigint, needed_bytes bigint, invalid boolean)', 's'),
    ('job_json_problem', 'job jsonb, OUT error_code text, OUT error_message text', 'record', 's'),
    ('job_limit', 'name text', 'integer', 'i'),
    ('job_lock_id', 'classid oid, objid oid', 'bigint', 'i'),
    ('job_lock_key1', 'id bigint', 'integer', 'i'),
    ('job_lock_key2', 'id bigint', 'integer', 'i'),
    ('job_paused', 'pauses conveyor.pauses[], queue text, job_class text, labels text[]', 'boolean', 'i'),
    ('job_problem', 'job_class text, args jsonb, queue text, priority integer, run_at timestamp with time zone, data jsonb, maximum_retry_count integer, OUT error_code text, OUT error_message text', 'record', 'i'),
    ('job_state', 'finished_at timestamp with time zone, expired_at timestamp with time zone, locked boolean, run_at timestamp with time zone, error_count integer, as_of timestamp with time zone', 'text', 'i'),
    ('job_state', 'finished_at timestamp with time zone, expired_at timestamp with time zone, locked boolean, run_at timestamp with time zone, error_count integer, as_of timestamp with time zone, paused boolean', 'text', 'i'),
    ('job_stats', '', 'TABLE(job_class text, count bigint, count_working bigint, count_errored bigint, highest_error_count integer, oldest_run_at timestamp with time zone)', 's'),
    ('job_stats', 'label text', 'TABLE(job_class text, count bigint, count_working bigint, count_errored bigint, highest_error_count integer, oldest_run_at timestamp with time zone)', 's'),
    ('jobs_where_check', 'action text, state text, allowed text[]', 'void', 'i'),
    ('labels_from_json', 'labels jsonb', 'text[]', 'i'),
    ('list_jobs', 'state text, queue text, job_class text, search text, before_id bigint, max_rows integer', 'SETOF conveyor.jobs_view', 's'),
    ('lock_jobs', 'queues text[], max_jobs integer, max_priority integer, held bigint[]', 'SETOF conveyor.jobs', 'v'),
    ('lock_jobs_by_id', 'ids bigint[], queues text[], held bigint[]', 'SETOF conveyor.jobs', 'v'),
    ('locked_in_transaction', 'add bigint[]', 'bigint[]', 'v'),
    ('manage_job', 'id bigint, action text', 'conveyor.jobs', 'v'),
    ('next_schedule_at', '', 'timestamp with time zone', 's'),
    ('notify_throttle_wake', 'at timestamp with time zone', 'void', 'v'),
    ('pause', 'queue text, job_class text, label text', 'boolean', 'v'),
    ('prune_lockers', '', 'integer', 'v'),
    ('queue_stats', '', 'TABLE(queue text, ready bigint, scheduled bigint, working bigint, errored bigint, expired bigint, finished bigint, oldest_ready_age interval, paused bigint)', 's'),
    ('queue_stats', 'label text', 'TABLE(queue text, ready bigint, scheduled bigint, working bigint, errored bigint, expired bigint, finished bigint, oldest_ready_age interval, paused bigint)', 's'),
    ('recheck_locked_jobs', 'ids bigint[], keep integer', 'SETOF bigint', 'v'),
    ('register_locker', 'queues text[], worker_priorities integer[], hostname text, process_id integer, listening boolean', 'text', 'v'),
    ('release_job_locks', 'ids bigint[], held bigint[]', 'SETOF bigint', 'v'),
    ('report_locker', 'buffer_size integer, maximum_buffer_size integer', 'boolean', 'v'),
    ('require_read_committed', 'caller text', 'void', 's'),
    ('reschedule_job', 'id bigint, run_at timestamp with time zone', 'text', 'v'),
    ('resolve_jobs', 'action text, ids bigint[], held bigint[]', 'SETOF bigint', 'v'),
    ('resume', 'queue text, job_class text, label text', 'boolean', 'v'),
    ('retry_job', 'id bigint, error_message text, error_backtrace text, delay double precision, expire boolean, attempted_at timestamp with time zone, attempted_by text', 'SETOF conveyor.jobs', 'v'),
    ('retry_jobs_where', 'state text, queue text, job_class text, error_like text, since timestamp with time zone', 'bigint', 'v'),
    ('retry_now', 'id bigint', 'text', 'v'),
    ('schema_version', '', 'text', 'i'),
    ('set_concurrency_limit', 'key text, perform_limit integer, enqueue_limit integer, perform_throttle integer, throttle_period interval', 'void', 'v'),
    ('set_schedule', 'name text, cron text, job_class text, args jsonb, queue text, priority integer, data jsonb, time_zone text, enabled boolean, catch_up boolean', 'conveyor.schedules', 'v'),
    ('set_schedule_enabled', 'name text, enabled boolean', 'boolean', 'v'),
    ('sorted_array_contains', 'sorted bigint[], x bigint', 'boolean', 'i'),
    ('start_attempt', 'id bigint, attempted_at timestamp with time zone, attempted_by text', 'SETOF conveyor.jobs', 'v'),
    ('take_throttle_slot', 'key text, perform_throttle integer, throttle_period interval, OUT taken boolean, OUT at timestamp with time zone', 'record', 'v'),
    ('tg_flow__in_use', '', 'trigger', 'v'),
    ('tg_jobs__free_limit_slot', '', 'trigger', 'v'),
    ('tg_jobs__join_batch', '', 'trigger', 'v'),
    ('tg_jobs__notify', '', 'trigger', 'v'),
    ('tg_jobs__resolve_in_batch', '', 'trigger', 'v'),
    ('try_lock_flow_job', 'id bigint, key text, OUT locked boolean, OUT key_full boolean, OUT started_at timestamp with time zone, OUT wake_at timestamp with time zone', 'record', 'v'),
    ('try_lock_limited_job', 'id bigint, key text, perform_limit integer', 'boolean', 'v'),
    ('unlock_jobs', 'ids bigint[], held bigint[]', 'SETOF bigint', 'v'),
    ('unregister_locker', '', 'boolean', 'v'),
    ('working_job_ids', '', 'SETOF bigint', 's')$$,
  'every conveyor function has the documented signature, result and volatility (one overload each)');

SELECT is(
  ARRAY(SELECT p.oid::regprocedure::text FROM pg_catalog.pg_proc AS p
         WHERE p.pronamespace = 'conveyor'::regnamespace
           AND coalesce(btrim(pg_catalog.obj_description(p.oid, 'pg_proc')), '') = ''
         ORDER BY 1),
  '{}'::text[],
  'every conveyor function has a non-empty COMMENT (offenders listed)');

SELECT is(
  ARRAY(SELECT c.relname::text COLLATE "default" FROM pg_catalog.pg_class AS c
         WHERE c.relnamespace = 'conveyor'::regnamespace AND c.relkind = 'r'
           AND coalesce(btrim(pg_catalog.obj_description(c.oid, 'pg_class')), '') = ''
         ORDER BY 1),
  '{}'::text[],
  'every conveyor table has a non-empty COMMENT (offenders listed)');

SELECT is(
  ARRAY(SELECT a.attname::text COLLATE "default" FROM pg_catalog.pg_attribute AS a
         WHERE a.attrelid = 'conveyor.jobs'::regclass AND a.attnum > 0 AND NOT a.attisdropped
           AND coalesce(btrim(pg_catalog.col_description(a.attrelid, a.attnum)), '') = ''
         ORDER BY 1),
  '{}'::text[],
  'every conveyor.jobs column has a non-empty COMMENT (offenders listed)');

SELECT isnt(
  btrim(coalesce((SELECT pg_catalog.obj_description(t.oid, 'pg_trigger') FROM pg_catalog.pg_trigger AS t
                   WHERE t.tgrelid = 'conveyor.jobs'::regclass AND t.tgname = '_900_notify'), '')),
  '',
  'the _900_notify trigger has a non-empty COMMENT');

-- The exception: a SET clause would stop the planner from inlining the tiny
-- helpers of the hot path. Their bodies are SQL-standard (RETURN ...), so
-- every name in them was resolved when they were created, and the caller's
-- search_path cannot change what they call.
SELECT is(
  ARRAY(SELECT p.oid::regprocedure::text FROM pg_catalog.pg_proc AS p
         WHERE p.pronamespace = 'conveyor'::regnamespace
           AND NOT coalesce(p.proconfig, '{}') @> ARRAY['search_path=pg_catalog, pg_temp']
           AND NOT (p.prosqlbody IS NOT NULL AND p.provolatile = 'i' AND NOT p.prosecdef)
         ORDER BY 1),
  '{}'::text[],
  'every conveyor function pins search_path = pg_catalog, pg_temp, or is IMMUTABLE with a SQL-standard body bound at creation (offenders listed)');

SELECT is(
  ARRAY(SELECT p.proname::text COLLATE "default" FROM pg_catalog.pg_proc AS p
         WHERE p.pronamespace = 'conveyor'::regnamespace AND p.proconfig IS NULL
         ORDER BY 1),
  ARRAY['concurrency_key_lock', 'errors_append', 'flow_in_use', 'job_limit', 'job_lock_id', 'job_lock_key1', 'job_lock_key2', 'job_paused', 'job_state', 'job_state', 'sorted_array_contains'],
  'only the inlinable helpers concurrency_key_lock, errors_append, flow_in_use, job_limit, job_lock_id, job_lock_key1, job_lock_key2, job_paused, job_state and sorted_array_contains go without SET clauses');

SELECT is(
  ARRAY(SELECT p.proname::text COLLATE "default" FROM pg_catalog.pg_proc AS p
         WHERE p.pronamespace = 'conveyor'::regnamespace AND p.prosecdef
         ORDER BY 1),
  ARRAY['batch_stats', 'close_batch', 'create_batch', 'enqueue', 'enqueue_due_schedules', 'enqueue_many',
        'give_back_throttle_slot', 'take_throttle_slot', 'tg_flow__in_use', 'tg_jobs__free_limit_slot', 'tg_jobs__join_batch', 'tg_jobs__resolve_in_batch'],
  'only enqueue, enqueue_many, enqueue_due_schedules, the batch functions, the batch triggers and the throttle''s start keepers are SECURITY DEFINER');

SELECT is(
  ARRAY(SELECT p.oid::regprocedure::text FROM pg_catalog.pg_proc AS p
         WHERE p.pronamespace = 'conveyor'::regnamespace
           AND p.prolang NOT IN (SELECT l.oid FROM pg_catalog.pg_language AS l WHERE l.lanname IN ('sql', 'plpgsql'))
         ORDER BY 1),
  '{}'::text[],
  'every conveyor function is written in SQL or PL/pgSQL');

SELECT is(
  ARRAY(SELECT pg_catalog.pg_get_userbyid(p.proowner)::text COLLATE "default" FROM pg_catalog.pg_proc AS p
         WHERE p.pronamespace = 'conveyor'::regnamespace
           AND p.proowner <> (SELECT n.nspowner FROM pg_catalog.pg_namespace AS n WHERE n.nspname = 'conveyor')),
  '{}'::text[],
  'every conveyor function is owned by the schema owner (no role owns a SECURITY DEFINER by accident)');

-- Privileges: PUBLIC ----------------------------------------------------------

SELECT is(
  ARRAY(SELECT p.proname::text COLLATE "default" FROM pg_catalog.pg_proc AS p
         WHERE p.pronamespace = 'conveyor'::regnamespace
           AND pg_catalog.has_function_privilege('public', p.oid, 'EXECUTE')
         ORDER BY 1),
  ARRAY['schema_version'],
  'PUBLIC may execute schema_version and no other conveyor function');

SELECT ok(NOT pg_catalog.has_schema_privilege('public', 'conveyor', 'USAGE')
          AND NOT pg_catalog.has_schema_privilege('public', 'conveyor', 'CREATE'),
          'PUBLIC has neither USAGE nor CREATE on schema conveyor');

SELECT is(
  ARRAY(SELECT (c.relname || ':' || pr.p) COLLATE "default"
          FROM pg_catalog.pg_class AS c
          CROSS JOIN unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER']) AS pr(p)
         WHERE c.relnamespace = 'conveyor'::regnamespace AND c.relkind IN ('r', 'v', 'm', 'S')
           AND pg_catalog.has_table_privilege('public', c.oid, pr.p)
         ORDER BY 1),
  '{}'::text[],
  'PUBLIC has no privilege on any conveyor table');

-- Privileges: conveyor_enqueuer -----------------------------------------------

SELECT ok(EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'conveyor_enqueuer' AND NOT rolcanlogin AND NOT rolsuper),
          'conveyor_enqueuer exists as a NOLOGIN, non-superuser role');

SELECT is(
  ARRAY(SELECT p.proname::text COLLATE "default" FROM pg_catalog.pg_proc AS p
         WHERE p.pronamespace = 'conveyor'::regnamespace
           AND pg_catalog.has_function_privilege('conveyor_enqueuer', p.oid, 'EXECUTE')
         ORDER BY 1),
  ARRAY['batch_stats', 'close_batch', 'create_batch', 'enqueue', 'enqueue_many', 'schema_version'],
  'conveyor_enqueuer may execute enqueue, enqueue_many, create_batch, close_batch and batch_stats (and schema_version, granted to PUBLIC) and nothing else');

SELECT function_privs_are('conveyor', 'enqueue',
  ARRAY['text', 'jsonb', 'text', 'integer', 'timestamp with time zone', 'jsonb', 'integer', 'text', 'text', 'text[]', 'bigint'],
  'conveyor_enqueuer', ARRAY['EXECUTE'],
  'conveyor_enqueuer has EXECUTE on conveyor.enqueue');

SELECT function_privs_are('conveyor', 'enqueue_many', ARRAY['jsonb'],
  'conveyor_enqueuer', ARRAY['EXECUTE'],
  'conveyor_enqueuer has EXECUTE on conveyor.enqueue_many');

SELECT table_privs_are('conveyor', 'jobs', 'conveyor_enqueuer', ARRAY[]::text[],
  'conveyor_enqueuer has no privilege on conveyor.jobs');

SELECT table_privs_are('conveyor', 'lockers', 'conveyor_enqueuer', ARRAY[]::text[],
  'conveyor_enqueuer has no privilege on conveyor.lockers');

SELECT schema_privs_are('conveyor', 'conveyor_enqueuer', ARRAY['USAGE'],
  'conveyor_enqueuer has USAGE (not CREATE) on schema conveyor');

-- Privileges: conveyor_worker -------------------------------------------------

SELECT ok(EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'conveyor_worker' AND NOT rolcanlogin AND NOT rolsuper),
          'conveyor_worker exists as a NOLOGIN, non-superuser role');

SELECT is_member_of('conveyor_enqueuer', ARRAY['conveyor_worker'],
  'conveyor_worker is a member of conveyor_enqueuer (jobs enqueue jobs)');

SELECT is(
  ARRAY(SELECT p.proname::text COLLATE "default" FROM pg_catalog.pg_proc AS p
         WHERE p.pronamespace = 'conveyor'::regnamespace
           AND pg_catalog.has_function_privilege('conveyor_worker', p.oid, 'EXECUTE')
         ORDER BY 1),
  ARRAY['batch_stats', 'cleanup', 'close_batch', 'concurrency_key_lock', 'concurrency_limit_for', 'create_batch',
        'cron_field', 'cron_next', 'cron_parse', 'destroy_job', 'destroy_jobs', 'enqueue',
        'enqueue_due_schedules', 'enqueue_many', 'errors_append', 'expire_job', 'expire_jobs', 'finish_job',
        'finish_jobs', 'flow_in_use', 'give_back_throttle_slot', 'held_job_ids', 'index_bloat', 'job_limit', 'job_lock_id', 'job_lock_key1',
        'job_lock_key2', 'job_paused', 'job_state', 'job_state', 'job_stats', 'job_stats', 'lock_jobs', 'lock_jobs_by_id', 'locked_in_transaction',
        'next_schedule_at', 'notify_throttle_wake', 'prune_lockers', 'queue_stats', 'queue_stats', 'recheck_locked_jobs',
        'register_locker', 'release_job_locks', 'report_locker', 'require_read_committed', 'resolve_jobs',
        'retry_job', 'schema_version', 'sorted_array_contains', 'start_attempt', 'take_throttle_slot', 'try_lock_flow_job', 'try_lock_limited_job', 'unlock_jobs',
        'unregister_locker', 'working_job_ids'],
  'conveyor_worker may execute the worker functions (and enqueue, as an enqueuer, and cleanup), not job_problem, job_json_problem, tg_jobs__notify or the management functions');

SELECT table_privs_are('conveyor', 'jobs', 'conveyor_worker', ARRAY['SELECT', 'UPDATE', 'DELETE'],
  'conveyor_worker may SELECT, UPDATE, DELETE conveyor.jobs (no INSERT: enqueue inserts)');

SELECT table_privs_are('conveyor', 'lockers', 'conveyor_worker', ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE'],
  'conveyor_worker may SELECT, INSERT, UPDATE, DELETE conveyor.lockers');

SELECT table_privs_are('conveyor', 'schedules', 'conveyor_worker', ARRAY['SELECT'],
  'conveyor_worker may SELECT conveyor.schedules (changes go through the owner''s functions)');

SELECT table_privs_are('conveyor', 'schedules', 'conveyor_enqueuer', ARRAY[]::text[],
  'conveyor_enqueuer has no privilege on conveyor.schedules');

SELECT table_privs_are('conveyor', 'schema_changes', 'conveyor_worker', ARRAY[]::text[],
  'conveyor_worker has no privilege on conveyor.schema_changes (only migrate uses it)');

SELECT table_privs_are('conveyor', 'schema_changes', 'conveyor_enqueuer', ARRAY[]::text[],
  'conveyor_enqueuer has no privilege on conveyor.schema_changes');

SELECT schema_privs_are('conveyor', 'conveyor_worker', ARRAY['USAGE'],
  'conveyor_worker has USAGE (not CREATE) on schema conveyor');

SELECT function_privs_are('conveyor', 'job_problem',
  ARRAY['text', 'jsonb', 'text', 'integer', 'timestamp with time zone', 'jsonb', 'integer'],
  'conveyor_worker', ARRAY[]::text[],
  'conveyor_worker has no EXECUTE on the internal conveyor.job_problem');

SELECT table_privs_are('conveyor', 'jobs_view', 'conveyor_worker', ARRAY['SELECT'],
  'conveyor_worker may SELECT conveyor.jobs_view');

SELECT table_privs_are('conveyor', 'jobs_view', 'conveyor_enqueuer', ARRAY[]::text[],
  'conveyor_enqueuer has no privilege on conveyor.jobs_view');

-- Privileges: conveyor_admin --------------------------------------------------

SELECT ok(EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'conveyor_admin' AND NOT rolcanlogin AND NOT rolsuper),
          'conveyor_admin exists as a NOLOGIN, non-superuser role');

SELECT ok(NOT pg_catalog.pg_has_role('conveyor_admin', 'conveyor_worker', 'member')
          AND NOT pg_catalog.pg_has_role('conveyor_admin', 'conveyor_enqueuer', 'member'),
          'conveyor_admin is neither a worker nor an enqueuer');

SELECT is(
  ARRAY(SELECT p.proname::text COLLATE "default" FROM pg_catalog.pg_proc AS p
         WHERE p.pronamespace = 'conveyor'::regnamespace
           AND pg_catalog.has_function_privilege('conveyor_admin', p.oid, 'EXECUTE')
         ORDER BY 1),
  ARRAY['check_pause_names', 'cleanup', 'concurrency_limit_for', 'delete_concurrency_limit',
        'destroy_job', 'discard_job', 'discard_jobs_where', 'errors_append', 'flow_in_use',
        'held_job_ids', 'index_bloat', 'job_limit', 'job_lock_id', 'job_lock_key1', 'job_lock_key2', 'job_paused',
        'job_state', 'job_state',
        'job_stats', 'job_stats', 'jobs_where_check', 'list_jobs', 'manage_job', 'pause', 'queue_stats', 'queue_stats',
        'release_job_locks', 'reschedule_job', 'resolve_jobs', 'resume', 'retry_jobs_where', 'retry_now',
        'schema_version', 'set_concurrency_limit', 'sorted_array_contains', 'working_job_ids'],
  'conveyor_admin may execute the management functions, flow control (pause, resume, the concurrency limits), the stats, destroy_job and their internals; nothing that locks, enqueues or registers');

SELECT table_privs_are('conveyor', 'pauses', 'conveyor_admin', ARRAY['SELECT', 'INSERT', 'DELETE'],
  'conveyor_admin may SELECT, INSERT, DELETE conveyor.pauses (what pause and resume do)');

SELECT table_privs_are('conveyor', 'concurrency_limits', 'conveyor_admin', ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE'],
  'conveyor_admin may SELECT, INSERT, UPDATE, DELETE conveyor.concurrency_limits (what set_concurrency_limit and delete_concurrency_limit do)');

SELECT table_privs_are('conveyor', 'jobs', 'conveyor_admin', ARRAY['SELECT', 'UPDATE', 'DELETE'],
  'conveyor_admin may SELECT, UPDATE, DELETE conveyor.jobs (no INSERT)');

SELECT table_privs_are('conveyor', 'jobs_view', 'conveyor_admin', ARRAY['SELECT'],
  'conveyor_admin may SELECT conveyor.jobs_view');

SELECT table_privs_are('conveyor', 'lockers', 'conveyor_admin', ARRAY['SELECT'],
  'conveyor_admin may SELECT conveyor.lockers (which workers are alive)');

SELECT table_privs_are('conveyor', 'schedules', 'conveyor_admin', ARRAY[]::text[],
  'conveyor_admin has no privilege on conveyor.schedules');

SELECT schema_privs_are('conveyor', 'conveyor_admin', ARRAY['USAGE'],
  'conveyor_admin has USAGE (not CREATE) on schema conveyor');

SELECT * FROM finish();
ROLLBACK;
