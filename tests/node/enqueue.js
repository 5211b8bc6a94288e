#!/usr/bin/env node
// Enqueue one conveyor job from Node.js with the `pg` driver, the way an
// application in another language would: one statement in a transaction.
//
//   node tests/node/enqueue.js [CONNECTION_STRING]   (default: $DATABASE_URL)
//
// Prints the new job's id. Used by tests/python/test_sql_any_language.py.
'use strict';

const { Client } = require('pg');

async function main() {
  const connectionString = process.argv[2] || process.env.DATABASE_URL;
  if (!connectionString) {
    throw new Error('usage: enqueue.js CONNECTION_STRING (or set DATABASE_URL)');
  }
  const client = new Client({ connectionString });
  await client.connect();
  try {
    await client.query('BEGIN');
    const { rows } = await client.query(
      "SELECT id FROM conveyor.enqueue('FromNode', '[\"x\"]')",
    );
    await client.query('COMMIT');
    console.log(rows[0].id);
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {});
    throw err;
  } finally {
    await client.end();
  }
}

main().catch((err) => {
  console.error(`enqueue.js: ${err.message}`);
  process.exitCode = 1;
});
