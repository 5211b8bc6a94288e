#!/usr/bin/env node
// A minimal conveyor worker in Node.js, written from docs/reference/protocol.md
// alone. It is documentation first: short, one job at a time per slot, no
// reconnects (on a lost connection it exits and its jobs are freed with its
// session; run it under a supervisor). tests/python/test_node_worker.py runs it.
//
//   DATABASE_URL=postgresql://... node worker.js
//
// Environment: DATABASE_URL (required), QUEUE (default "default"),
// WORKER_COUNT (jobs run at once, default 2), POLL_INTERVAL_MS (default 5000).
//
// The example handlers write to a table of their own; create it first:
//   CREATE TABLE node_worker_effects (job_id bigint NOT NULL, value text);
'use strict';

const { Client, Pool } = require('pg');

const url = process.env.DATABASE_URL;
const queue = process.env.QUEUE || 'default';
const workerCount = Number(process.env.WORKER_COUNT || 2);
const pollIntervalMs = Number(process.env.POLL_INTERVAL_MS || 5000);
const bufferSize = workerCount * 2; // jobs locked ahead, waiting for a free slot

// The worker registry, in one place.
const REGISTER =
  'SELECT conveyor.register_locker(queues => $1, worker_priorities => $2) AS channel';
const UNREGISTER = 'SELECT conveyor.unregister_locker()';

// The locker connection: a real session (never through a transaction-mode
// pooler), since it holds the advisory locks and LISTENs. Job code uses the pool.
const locker = new Client({ connectionString: url });
const pool = new Pool({ connectionString: url, max: workerCount });

const log = (event, fields = {}) => console.log(JSON.stringify({ event, ...fields }));

// --- job handlers, by job_class ---------------------------------------------
// A handler gets the job row, its args (a JSON array) and its kwargs (the
// object data.kwargs, as the Python worker passes them). It returns what the
// worker does with the job: undefined = destroy it, 'finish', 'expire', or
// 'resolved' when the handler resolved the job itself. A throw is retried.
const handlers = {
  // The exactly-once pattern: the effect and the job's deletion commit in one
  // transaction on the job's own connection.
  async RecordEffect(job, [value]) {
    await inTransaction(async (db) => {
      await db.query('INSERT INTO node_worker_effects (job_id, value) VALUES ($1, $2)', [
        job.id,
        value,
      ]);
      const { rows } = await db.query('SELECT conveyor.destroy_job($1) AS destroyed', [job.id]);
      // false: another run resolved the job first (this worker lost its lock),
      // so undo the effect too.
      if (!rows[0].destroyed) throw new Rollback();
    });
    return 'resolved'; // the locker only has to release the lock
  },

  // Fails while the job has fewer than kwargs.fail_times recorded errors.
  async Flaky(job, [value], { fail_times: failTimes = 1 } = {}) {
    if (job.error_count < failTimes) {
      throw new Error(`Flaky failed on purpose (${job.error_count + 1})`);
    }
    return handlers.RecordEffect(job, [value]);
  },

  async Sleep(job, [ms]) {
    await new Promise((resolve) => setTimeout(resolve, ms));
    return 'finish'; // keep the row, with finished_at set
  },

  async Obsolete() {
    return 'expire'; // keep the row, with expired_at set, and never run it again
  },
};

class Rollback extends Error {}

async function inTransaction(fn) {
  const db = await pool.connect();
  try {
    await db.query('BEGIN');
    await fn(db);
    await db.query('COMMIT');
  } catch (err) {
    await db.query('ROLLBACK');
    if (!(err instanceof Rollback)) throw err;
  } finally {
    db.release();
  }
}

// --- the locker ----------------------------------------------------------------
const buffer = []; // locked jobs waiting for a slot, most urgent first
let running = 0;
let stopping = false; // SIGTERM came: lock nothing more
let bufferReturned = false; // ...and the buffered jobs were unlocked
let pollTimer;
let locking = Promise.resolve(); // one lock call at a time

const byUrgency = (a, b) =>
  a.priority - b.priority || a.run_at - b.run_at || Number(BigInt(a.id) - BigInt(b.id));

// Locks jobs and buffers them. `query(room)` gives the SQL and its parameters
// for at most `room` more jobs. lock_jobs and lock_jobs_by_id skip jobs this
// session already holds, so a job both announced and polled is locked once.
// No call passes `held` (protocol.md): the functions then read pg_locks
// themselves, which costs little at this size.
function lock(query) {
  locking = locking.then(async () => {
    const room = bufferSize - buffer.length;
    if (stopping || room <= 0) return;
    const { rows } = await locker.query(...query(room));
    buffer.push(...rows);
    buffer.sort(byUrgency);
    dispatch();
  });
  return locking;
}

const poll = () =>
  lock((room) => [
    'SELECT * FROM conveyor.lock_jobs(queues => $1, max_jobs => $2)',
    [[queue], room],
  ]);

function onNotification(msg) {
  const { jobs, more } = JSON.parse(msg.payload);
  // Lock the announced ids (those that fit; the next poll finds the rest).
  // lock_jobs_by_id checks they are still ready and in our queue.
  const ids = (room) => jobs.slice(0, room).map((job) => job.id);
  lock((room) => [
    'SELECT * FROM conveyor.lock_jobs_by_id($1, queues => $2)',
    [ids(room), [queue]],
  ]).catch(fatal);
  if (more) poll().catch(fatal); // the insert announced only some of its jobs
}

function dispatch() {
  while (!stopping && running < workerCount && buffer.length > 0) work(buffer.shift()).catch(fatal);
}

async function work(job) {
  running += 1;
  const started = Date.now();
  let outcome;
  try {
    const handler = handlers[job.job_class];
    if (!handler) throw new Error(`unknown job class ${job.job_class}`);
    outcome = (await handler(job, job.args, job.data.kwargs || {})) || 'destroy';
  } catch (err) {
    // Record the error and reschedule (error_count^4 + 3 s), or expire the
    // job past its maximum_retry_count. retry_job releases this session's lock.
    await locker.query(
      'SELECT FROM conveyor.retry_job($1, error_message => $2, error_backtrace => $3)',
      [job.id, String(err.message), String(err.stack)],
    );
    outcome = 'retried';
  }
  // Resolve on the locker connection, which releases the lock. A busy worker
  // would batch these (destroy_jobs takes an array); one at a time is clearer.
  const resolve = {
    destroy: 'SELECT conveyor.destroy_jobs($1)',
    finish: 'SELECT conveyor.finish_jobs($1)',
    expire: 'SELECT conveyor.expire_jobs($1)',
    resolved: 'SELECT conveyor.unlock_jobs($1)', // after the job's transaction committed
  }[outcome];
  if (resolve) await locker.query(resolve, [[job.id]]);
  log('job_worked', { id: job.id, job_class: job.job_class, outcome, ms: Date.now() - started });
  running -= 1;
  if (stopping) maybeExit().catch(fatal);
  else {
    dispatch();
    if (buffer.length < workerCount) poll().catch(fatal);
  }
}

// --- start and stop ------------------------------------------------------------
async function main() {
  if (!url) throw new Error('set DATABASE_URL');
  await locker.connect();
  locker.on('notification', onNotification);
  locker.on('error', fatal);
  pool.on('error', fatal);
  // Register, then LISTEN, then poll once: jobs announced before the LISTEN
  // took effect are lost as notifications but found by the poll.
  const { rows } = await locker.query(REGISTER, [[queue], Array(workerCount).fill(null)]);
  await locker.query(`LISTEN "${rows[0].channel}"`);
  log('worker_started', { channel: rows[0].channel, queue, workerCount });
  await poll();
  // Scheduled jobs and retries are never announced: poll for them.
  pollTimer = setInterval(() => poll().catch(fatal), pollIntervalMs);
}

async function stop() {
  log('worker_stopping', { buffered: buffer.length, running });
  stopping = true; // no lock call starts from now on
  clearInterval(pollTimer);
  await locking; // let a lock call in flight land in the buffer
  const ids = buffer.splice(0).map((job) => job.id);
  await locker.query('SELECT conveyor.unlock_jobs($1)', [ids]); // give buffered jobs back now
  bufferReturned = true;
  await maybeExit();
}

let exiting = false;
async function maybeExit() {
  // The last of stop() and the running jobs to finish gets through.
  if (running > 0 || !bufferReturned || exiting) return;
  exiting = true;
  await locker.query(UNREGISTER);
  await locker.end();
  await pool.end();
  log('worker_stopped');
  process.exit(0);
}

// Anything unexpected (the database went away, a bug): exit non-zero. The
// session ends with the process, so PostgreSQL releases every lock it held
// and the jobs run again elsewhere.
function fatal(err) {
  console.error(err);
  process.exit(1);
}

const started = main();
started.catch(fatal);

// SIGTERM or Ctrl-C: stop cleanly, once started; a second one: exit now
// (PostgreSQL then releases the running jobs' locks with the session, and
// they run again).
let signalled = false;
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    if (signalled) process.exit(1);
    signalled = true;
    started.then(stop).catch(fatal);
  });
}
