-- Revert conveyor:batches from pg

BEGIN;

DROP FUNCTION conveyor.batch_stats(bigint);
DROP TRIGGER _200_destroy_in_batch ON conveyor.jobs;
DROP TRIGGER _200_resolve_in_batch ON conveyor.jobs;
DROP TRIGGER _100_join_batch ON conveyor.jobs;
DROP FUNCTION conveyor.tg_jobs__resolve_in_batch();
DROP FUNCTION conveyor.tg_jobs__join_batch();
DROP FUNCTION conveyor.close_batch(bigint);
DROP FUNCTION conveyor.finish_batch_if_done(conveyor.batches);
DROP FUNCTION conveyor.enqueue_batch_callback(conveyor.batches, text);
DROP FUNCTION conveyor.create_batch(text, jsonb, jsonb, jsonb, jsonb);
DROP FUNCTION conveyor.batch_callback_problem(jsonb);
DROP INDEX conveyor.jobs_batch_unresolved_idx;
DROP TABLE conveyor.batches;

COMMIT;
