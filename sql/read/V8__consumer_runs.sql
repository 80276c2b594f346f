-- The consumer core (crate `consumer`) now serves the inventory service and
-- the order reactor too, with the same tables in their databases
-- (sql/consumer/core.sql); the run tallies get the core's name there and here.
ALTER TABLE projector_runs RENAME TO consumer_runs;
