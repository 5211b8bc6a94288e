-- conveyor.report_locker() and the buffer columns of conveyor.lockers
BEGIN;
SELECT plan(14);

SELECT has_function('conveyor', 'report_locker', ARRAY['integer', 'integer'],
  'conveyor.report_locker(integer, integer) exists');
SELECT has_column('conveyor', 'lockers', 'buffer_size', 'conveyor.lockers.buffer_size exists');
SELECT has_column('conveyor', 'lockers', 'maximum_buffer_size', 'conveyor.lockers.maximum_buffer_size exists');
SELECT has_column('conveyor', 'lockers', 'reported_at', 'conveyor.lockers.reported_at exists');

SELECT lives_ok($$SELECT conveyor.unregister_locker()$$, 'fixture: this session not registered');
SELECT is(conveyor.report_locker(3, 8), false, 'report_locker returns false when the session is not registered');

SELECT lives_ok($$SELECT conveyor.register_locker('{tap_buffer}', '{NULL}')$$, 'fixture: registered');
SELECT results_eq(
  $$SELECT buffer_size, maximum_buffer_size, reported_at FROM conveyor.lockers WHERE pid = pg_catalog.pg_backend_pid()$$,
  $$VALUES (NULL::integer, NULL::integer, NULL::timestamptz)$$,
  'a new registration has no report: NULLs');

SELECT is(conveyor.report_locker(3, 8), true, 'report_locker returns true for a registered session');
SELECT results_eq(
  $$SELECT buffer_size, maximum_buffer_size, reported_at FROM conveyor.lockers WHERE pid = pg_catalog.pg_backend_pid()$$,
  $$VALUES (3, 8, now())$$,
  'the row holds the reported size, maximum and the time of the report');

SELECT throws_ok($$SELECT conveyor.report_locker(-1, 8)$$, '23514', NULL, 'a negative buffer size is refused (23514)');

-- Other sessions' rows are not touched: only the caller's pid is updated.
INSERT INTO conveyor.lockers (pid, backend_start, queues, worker_priorities) VALUES (-7, NULL, '{tap_buffer}', '{NULL}');
SELECT lives_ok($$SELECT conveyor.report_locker(5, 8)$$, 'reporting again');
SELECT is((SELECT buffer_size FROM conveyor.lockers WHERE pid = -7), NULL::integer,
  'another session''s row is left alone');
SELECT is((SELECT buffer_size FROM conveyor.lockers WHERE pid = pg_catalog.pg_backend_pid()), 5,
  'the caller''s row has the latest report');

SELECT * FROM finish();
ROLLBACK;
