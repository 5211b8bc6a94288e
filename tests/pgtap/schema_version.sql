-- conveyor.schema_version()
BEGIN;
SELECT plan(6);

SELECT has_function('conveyor', 'schema_version', ARRAY[]::text[], 'conveyor.schema_version() exists');
SELECT function_returns('conveyor', 'schema_version', ARRAY[]::text[], 'text', 'conveyor.schema_version returns text');
SELECT volatility_is('conveyor', 'schema_version', ARRAY[]::text[], 'immutable', 'conveyor.schema_version is IMMUTABLE');
SELECT is(conveyor.schema_version(), '0.1.0', 'schema_version() is 0.1.0');
SELECT matches(conveyor.schema_version(), '^[0-9]+\.[0-9]+\.[0-9]+$', 'schema_version() is a MAJOR.MINOR.PATCH version');
SELECT function_privs_are('conveyor', 'schema_version', ARRAY[]::text[], 'public', ARRAY['EXECUTE'],
  'PUBLIC may execute conveyor.schema_version()');

SELECT * FROM finish();
ROLLBACK;
