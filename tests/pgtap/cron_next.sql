-- conveyor.cron_next: fields, names, steps, the either-day rule, macros, time
-- zones and DST, errors by SQLSTATE, privileges.
BEGIN;
SELECT plan(32);

SELECT is(conveyor.cron_next('*/15 * * * *', '2026-06-01 10:07+00'), '2026-06-01 10:15+00', '*/15 gives the next quarter hour');
SELECT is(conveyor.cron_next('* * * * *', '2026-06-01 10:07+00'), '2026-06-01 10:08+00', 'strictly after: the next minute');
SELECT is(conveyor.cron_next('* * * * *', '2026-06-01 10:07:30+00'), '2026-06-01 10:08+00', 'seconds are dropped, the result is on a minute');
SELECT is(conveyor.cron_next('1-30/5 * * * *', '2026-06-01 10:07+00'), '2026-06-01 10:11+00', 'a stepped range');
SELECT is(conveyor.cron_next('5/20 * * * *', '2026-06-01 10:30+00'), '2026-06-01 10:45+00', 'a/step runs from a to the top of the field');
SELECT is(conveyor.cron_next('0 9 * * MON-fri', '2026-06-05 10:00+00'), '2026-06-08 09:00+00', 'weekday names in any case (Friday 10:00 -> Monday)');
SELECT is(conveyor.cron_next('0 0 1 Jan *', '2026-06-05 10:00+00'), '2027-01-01 00:00+00', 'month names');
SELECT is(conveyor.cron_next('0 0 * * 7', '2026-06-01 00:00+00'), '2026-06-07 00:00+00', '7 is Sunday');
SELECT is(conveyor.cron_next('0 0 1,15 * sun', '2026-06-01 00:00+00'), '2026-06-07 00:00+00', 'both day fields restricted: either matches (a Sunday)');
SELECT is(conveyor.cron_next('0 0 13 * fri', '2026-06-07 00:00+00'), '2026-06-12 00:00+00', 'both day fields restricted: a Friday before the 13th');
SELECT is(conveyor.cron_next('0 0 */2 * *', '2026-06-01 00:00+00'), '2026-06-03 00:00+00', 'a day-of-month step alone');
SELECT is(conveyor.cron_next('0 0 29 2 *', '2026-06-01 00:00+00'), '2028-02-29 00:00+00', 'a leap day is years away');
SELECT is(conveyor.cron_next('@hourly', '2026-06-01 10:07+00'), '2026-06-01 11:00+00', '@hourly');
SELECT is(conveyor.cron_next('@DAILY', '2026-06-01 10:07+00'), '2026-06-02 00:00+00', '@daily, any case');
SELECT is(conveyor.cron_next('@weekly', '2026-06-01 10:07+00'), '2026-06-07 00:00+00', '@weekly is Sunday midnight');
SELECT is(conveyor.cron_next('@yearly', '2026-06-01 10:07+00'), '2027-01-01 00:00+00', '@yearly');
SELECT is(conveyor.cron_next('0 3 * * *', '2026-06-01 10:07+00', 'Europe/Berlin'), '2026-06-02 01:00+00', 'the time zone''s wall clock (CEST)');
-- Europe/Berlin: 2026-03-29 02:00 CET -> 03:00 CEST; 2026-10-25 03:00 CEST -> 02:00 CET.
SELECT is(conveyor.cron_next('30 2 * * *', '2026-03-29 00:00+00', 'Europe/Berlin'), '2026-03-29 01:00+00', 'a skipped local time runs at the change');
SELECT is(conveyor.cron_next('10,40 * * * *', '2026-03-29 00:59+00', 'Europe/Berlin'), '2026-03-29 01:10+00', 'with the hour field *, skipped times are skipped');
SELECT is(conveyor.cron_next('30 2 * * *', '2026-10-25 00:00+00', 'Europe/Berlin'), '2026-10-25 00:30+00', 'a repeated local time runs first in summer time...');
SELECT is(conveyor.cron_next('30 2 * * *', '2026-10-25 00:30+00', 'Europe/Berlin'), '2026-10-25 01:30+00', '...and again in winter time');
SELECT is(conveyor.cron_next('*/15 * * * *', '2026-10-25 00:50+00', 'Europe/Berlin'), '2026-10-25 01:00+00', 'the repeated hour comes round again');
SELECT is(conveyor.cron_next(NULL, '2026-06-01 10:07+00'), NULL, 'NULL in, NULL out');

SELECT throws_ok($$SELECT conveyor.cron_next('61 * * * *', now())$$, '22023',
  'conveyor: minute field "61": 61 is out of range 0-59', 'a value out of range: 22023 naming the field');
SELECT throws_ok($$SELECT conveyor.cron_next('* * * *', now())$$, '22023', NULL, 'four fields: 22023');
SELECT throws_ok($$SELECT conveyor.cron_next('* * * foo *', now())$$, '22023', NULL, 'an unknown month name: 22023');
SELECT throws_ok($$SELECT conveyor.cron_next('* * 5-3 * *', now())$$, '22023', NULL, 'a backwards range: 22023');
SELECT throws_ok($$SELECT conveyor.cron_next('0 0 30 2 *', now())$$, '22023', NULL, 'a date that never comes: 22023');
SELECT throws_ok($$SELECT conveyor.cron_next('* * * * *', now(), 'Mars/Base')$$, '22023', NULL, 'an unknown time zone: 22023');
SELECT throws_ok($$SELECT conveyor.cron_next('* * * * *', 'infinity')$$, '22007', NULL, 'an infinite after: 22007');
SELECT is(conveyor.cron_next('5 4 3 2 7', '2026-01-01 00:00+00'), '2026-02-01 04:05+00', 'plain numbers (the fast path), 7 as Sunday, either day');

SET LOCAL ROLE conveyor_enqueuer;
SELECT throws_ok($$SELECT conveyor.cron_next('* * * * *', now())$$, '42501', NULL, 'conveyor_enqueuer may not call cron_next');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
