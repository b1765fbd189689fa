-- No query reads task instances by state or by pool: every read is by run (the primary key's
-- prefix). The two indices only cost writes: each state change rewrote an entry in both.
DROP INDEX IF EXISTS task_instances_by_state;
DROP INDEX IF EXISTS task_instances_by_pool_state;
