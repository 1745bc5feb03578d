-- +goose Up
-- tasker_workflow_steps_named_step_idx (00001) indexed the steps by their named step. No
-- statement of the service looks steps up by their named step alone: every read that needs a
-- step's name goes from the step to tasker_named_steps by that table's key, the step
-- performance read models group the steps a refresh already holds, and the unique
-- (task_id, named_step_id) index serves a task's steps by name. Its only reader would be the
-- foreign key's check when a named step is deleted or its key changed, which the service never
-- does (a delete by hand then scans the steps). Yet every row version of a step wrote an entry
-- in it: a step's creation, its claim and its outcome, none of which can be a HOT update (the
-- claim flags are in the predicates of the partial indexes that make the claim's walk short).
DROP INDEX tasker_workflow_steps_named_step_idx;

-- +goose Down
CREATE INDEX tasker_workflow_steps_named_step_idx ON tasker_workflow_steps (named_step_id);
