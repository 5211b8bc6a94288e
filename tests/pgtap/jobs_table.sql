-- conveyor.jobs: the named check constraints guard rows written without the
-- functions (the owner's maintenance statements); the error names the rule.
BEGIN;
SELECT plan(14);

SELECT throws_ok($$INSERT INTO conveyor.jobs (job_class) VALUES ('')$$, '23514',
  'new row for relation "jobs" violates check constraint "jobs_job_class_length"',
  'an empty job_class violates jobs_job_class_length');
SELECT throws_ok($$INSERT INTO conveyor.jobs (job_class) VALUES (repeat('j', 501))$$, '23514',
  'new row for relation "jobs" violates check constraint "jobs_job_class_length"',
  'a 501-character job_class violates jobs_job_class_length');
SELECT throws_ok($$INSERT INTO conveyor.jobs (job_class) VALUES (NULL)$$, '23502', NULL,
  'a NULL job_class violates NOT NULL');
SELECT throws_ok($$INSERT INTO conveyor.jobs (job_class, queue) VALUES ('tap.table.Direct', repeat('q', 101))$$, '23514',
  'new row for relation "jobs" violates check constraint "jobs_queue_length"',
  'a 101-character queue violates jobs_queue_length');
SELECT throws_ok($$INSERT INTO conveyor.jobs (job_class, args) VALUES ('tap.table.Direct', '{}')$$, '23514',
  'new row for relation "jobs" violates check constraint "jobs_args_is_array"',
  'args that is not an array violates jobs_args_is_array');
SELECT throws_ok($$INSERT INTO conveyor.jobs (job_class, data) VALUES ('tap.table.Direct', '[]')$$, '23514',
  'new row for relation "jobs" violates check constraint "jobs_data_is_object"',
  'data that is not an object violates jobs_data_is_object');
SELECT throws_ok($$INSERT INTO conveyor.jobs (job_class, priority) VALUES ('tap.table.Direct', -1)$$, '23514',
  'new row for relation "jobs" violates check constraint "jobs_priority_in_range"',
  'priority -1 violates jobs_priority_in_range');
SELECT throws_ok($$INSERT INTO conveyor.jobs (job_class, error_count) VALUES ('tap.table.Direct', -1)$$, '23514',
  'new row for relation "jobs" violates check constraint "jobs_error_count_not_negative"',
  'a negative error_count violates jobs_error_count_not_negative');
SELECT throws_ok($$INSERT INTO conveyor.jobs (job_class, maximum_retry_count) VALUES ('tap.table.Direct', -1)$$, '23514',
  'new row for relation "jobs" violates check constraint "jobs_maximum_retry_count_not_negative"',
  'a negative maximum_retry_count violates jobs_maximum_retry_count_not_negative');
SELECT throws_ok($$INSERT INTO conveyor.jobs (job_class, last_error_message) VALUES ('tap.table.Direct', repeat('m', 1001))$$, '23514',
  'new row for relation "jobs" violates check constraint "jobs_last_error_message_length"',
  'a 1,001-character last_error_message violates jobs_last_error_message_length');
SELECT throws_ok($$INSERT INTO conveyor.jobs (job_class, last_error_backtrace) VALUES ('tap.table.Direct', repeat('b', 10001))$$, '23514',
  'new row for relation "jobs" violates check constraint "jobs_last_error_backtrace_length"',
  'a 10,001-character last_error_backtrace violates jobs_last_error_backtrace_length');
SELECT throws_ok($$INSERT INTO conveyor.jobs (job_class, finished_at, expired_at) VALUES ('tap.table.Direct', now(), now())$$, '23514',
  'new row for relation "jobs" violates check constraint "jobs_not_both_finished_and_expired"',
  'a row both finished and expired violates jobs_not_both_finished_and_expired');
SELECT throws_ok($$INSERT INTO conveyor.jobs (id, job_class) VALUES (1, 'tap.table.Direct')$$, '428C9', NULL,
  'id is GENERATED ALWAYS: an explicit id is rejected');

SELECT lives_ok(
  $$INSERT INTO conveyor.jobs (job_class, queue, last_error_message, last_error_backtrace)
    VALUES (repeat('j', 500), repeat('q', 100), repeat('m', 1000), repeat('b', 10000))$$,
  'values exactly at every length limit are accepted');

SELECT * FROM finish();
ROLLBACK;
