-- +goose Up
-- The statements of two triggers on the task transitions ran with the session's planner
-- settings, and a trigger's statement (it has no parameters) is planned once per connection,
-- when it first fires, and kept. On a connection of the service's own pool (task creation,
-- operator actions) that first firing could come while the tables' statistics were those of
-- empty tables: tasker_mark_completed_tasks then kept a sequential scan of every task, and
-- tasker_mark_task_inactive_steps (which already kept sequential and bitmap scans out) a merge
-- join along the index of every step, for each task transition inserted for the rest of the
-- connection's life (10,000 tasks and 10,000 steps read to flag 8;
-- TestEngineCallsReadOnlyTheRowsOfTheirBatch). Both join the rows a statement inserted to a
-- table by key, so, as the engine's connections do, they now plan with sequential and bitmap
-- scans and merge and hash joins weighed out.
ALTER FUNCTION tasker_mark_completed_tasks()
    SET enable_seqscan = off SET enable_bitmapscan = off SET enable_mergejoin = off SET enable_hashjoin = off;
ALTER FUNCTION tasker_mark_task_inactive_steps()
    SET enable_mergejoin = off SET enable_hashjoin = off;

-- +goose Down
ALTER FUNCTION tasker_mark_task_inactive_steps() RESET enable_mergejoin RESET enable_hashjoin;
ALTER FUNCTION tasker_mark_completed_tasks() RESET ALL;
