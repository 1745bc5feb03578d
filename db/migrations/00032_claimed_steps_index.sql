-- +goose Up
-- A partial index of the claimed steps that have not run to success, in id order. "What is
-- blocked as in progress?" (Query.steps with blockingReason IN_PROGRESS) walks it newest
-- first, together with tasker_workflow_steps_claimable_idx (the unfinished steps that are not
-- claimed, where a step in state in_progress without a claim would be): a step blocked as
-- in_progress is never processed (SEMANTICS §3.4), so neither walk reads the history of
-- finished steps, which is most of the table. The engine's queries, which look for unclaimed
-- steps, cannot use it and keep the claimable index.
CREATE INDEX tasker_workflow_steps_claimed_idx
    ON tasker_workflow_steps (workflow_step_id) INCLUDE (task_id)
    WHERE NOT processed AND in_process;

-- An unclaimed step is blocked as in_progress only when its current state is in_progress
-- (a claim lost between two writes): this index lists those steps, so that the question
-- does not walk every unclaimed unfinished step to find the few.
CREATE INDEX tasker_workflow_step_transitions_in_progress_idx
    ON tasker_workflow_step_transitions (workflow_step_id)
    WHERE most_recent AND to_state = 'in_progress';

-- +goose Down
DROP INDEX tasker_workflow_step_transitions_in_progress_idx;
DROP INDEX tasker_workflow_steps_claimed_idx;
