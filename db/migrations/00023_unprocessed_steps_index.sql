-- +goose Up
-- A partial index of the steps that have not run to success, in id order. "What is blocked as
-- in progress?" (Query.steps with blockingReason IN_PROGRESS) walks it newest first; a step
-- blocked as in_progress is never processed (SEMANTICS §3.4), so the walk skips the history
-- of finished steps, which is most of the table. The other unfinished questions ("what is
-- ready", "what waits on its dependencies, its backoff...") walk
-- tasker_workflow_steps_claimable_idx, the smaller set that also excludes claimed steps.
CREATE INDEX tasker_workflow_steps_unprocessed_idx
    ON tasker_workflow_steps (workflow_step_id) INCLUDE (task_id)
    WHERE NOT processed;

-- +goose Down
DROP INDEX tasker_workflow_steps_unprocessed_idx;
