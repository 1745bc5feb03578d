-- +goose Up
-- The DAG-depth trigger's functions run their queries without JIT compilation. They are
-- called once per statement that writes edges, on a batch of fresh rows whose row estimates
-- are inflated (no statistics yet), so PostgreSQL decides to JIT-compile their plans and
-- spends 0.1-1.4 s compiling queries that then run in milliseconds through index probes.
-- The setting is local to each call; it changes nothing else in the session.
ALTER FUNCTION tasker_refresh_dag_levels(bigint[]) SET jit = off;
ALTER FUNCTION tasker_workflow_step_edge_tasks(bigint[], bigint[], boolean) SET jit = off;

-- +goose Down
ALTER FUNCTION tasker_workflow_step_edge_tasks(bigint[], bigint[], boolean) RESET jit;
ALTER FUNCTION tasker_refresh_dag_levels(bigint[]) RESET jit;
