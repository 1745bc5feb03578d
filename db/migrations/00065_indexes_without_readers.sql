-- +goose Up
-- Two indexes that no statement of the service reads, written at every version of their rows.
--
-- tasker_workflow_steps_named_step_idx (00001) indexed the steps by their named step. Every
-- read that needs a step's name goes from the step to tasker_named_steps by that table's key,
-- the step performance read models group the steps a refresh already holds, and the unique
-- (task_id, named_step_id) index serves a task's steps by name. Its only reader would be the
-- foreign key's check when a named step is deleted or its key changed, which the service never
-- does (a delete by hand then scans the steps). Yet every version of a step row wrote an entry
-- in it: a step's creation, its claim and its outcome, none of which can be a HOT update (the
-- claim flags are in the predicates of the partial indexes that make the claim's walk short).
--
-- tasker_tasks_requested_at_idx (00001) indexed the tasks by requested_at, which no query
-- filters or orders by (the pages of tasks order by id and filter by created_at, through
-- tasker_tasks_created_at_idx). A task's row is written once and then updated in place (HOT,
-- fillfactor 50), so this one cost every task's creation an entry.
DROP INDEX tasker_workflow_steps_named_step_idx;
DROP INDEX tasker_tasks_requested_at_idx;

-- +goose Down
CREATE INDEX tasker_tasks_requested_at_idx ON tasker_tasks (requested_at);
CREATE INDEX tasker_workflow_steps_named_step_idx ON tasker_workflow_steps (named_step_id);
