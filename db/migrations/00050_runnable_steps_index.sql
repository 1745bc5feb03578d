-- +goose Up
-- The engine's claim (internal/store, claimSQL) and its next-retry query (nextRetrySQL) walk
-- candidate steps in a partial index and read the readiness view per candidate. Their indexes
-- held every unfinished, unclaimed step, so they also held steps that can never run again:
-- the unfinished steps of tasks in error, cancelled, complete or resolved_manually, and steps
-- whose retries are exhausted. Those stay unfinished forever, and the claim walked past all of
-- them before it found a ready step: its cost grew with the history of failures (at 1,000,000
-- steps, 15,000 failed tasks brought the engine from about 1,300 to 25 steps/s).
--
-- tasker_workflow_steps.task_inactive records, for every step that is not processed, whether
-- its task's current state is anything but pending or in_progress (a task without a
-- transition is pending, so a new step is active). The trigger below keeps it exact: it is
-- set in the statement that writes a task's transition, for the unprocessed steps of that
-- task, under the task's row lock that every task transition is written with (the engine's
-- lock order: task, then step). For a processed step the flag is not maintained: such a step
-- is never a candidate.
--
-- The two indexes hold only the steps that can still become ready: unfinished, unclaimed,
-- of an active task, and retry-eligible (SEMANTICS §3.2, the view's own expression; a step
-- an operator grants one more attempt re-enters the index by that write). Their size follows
-- the work that can still run, not the history.
ALTER TABLE tasker_workflow_steps ADD COLUMN task_inactive boolean NOT NULL DEFAULT false;

UPDATE tasker_workflow_steps ws
SET task_inactive = true
WHERE NOT ws.processed
  AND coalesce((SELECT tt.to_state FROM tasker_task_transitions tt
                WHERE tt.task_id = ws.task_id AND tt.most_recent), 'pending') NOT IN ('pending', 'in_progress');

-- The claim's candidates, oldest first (the claim stops after its batch).
CREATE INDEX tasker_workflow_steps_runnable_idx
    ON tasker_workflow_steps (workflow_step_id) INCLUDE (task_id, attempts)
    WHERE NOT processed AND NOT in_process AND NOT task_inactive
      AND (coalesce(attempts, 0) = 0 OR (retryable AND coalesce(attempts, 0) < coalesce(retry_limit, 3)));

-- The next-retry query's candidates: the runnable steps that were attempted or asked for a
-- delay (only those can be waiting out a backoff). It replaces tasker_workflow_steps_retrying_idx,
-- which also held the exhausted steps and those of finished tasks.
CREATE INDEX tasker_workflow_steps_retry_waiting_idx
    ON tasker_workflow_steps (workflow_step_id) INCLUDE (task_id)
    WHERE NOT processed AND NOT in_process AND NOT task_inactive
      AND (coalesce(attempts, 0) > 0 OR backoff_request_seconds IS NOT NULL)
      AND (coalesce(attempts, 0) = 0 OR (retryable AND coalesce(attempts, 0) < coalesce(retry_limit, 3)));

DROP INDEX tasker_workflow_steps_retrying_idx;

-- +goose StatementBegin
-- tasker_mark_task_inactive_steps sets task_inactive on the unprocessed steps of the tasks
-- whose current transition the inserting statement wrote: true unless the new state is
-- pending or in_progress. Only the steps whose flag changes are written, so the transitions
-- that keep a task active (pending -> in_progress, the engine's common case) write no step.
-- Each task's steps are an index probe on (task_id); the scans that would read the whole
-- table are weighed out, whatever the planner believes about the tables.
CREATE FUNCTION tasker_mark_task_inactive_steps() RETURNS trigger LANGUAGE plpgsql
SET enable_seqscan = off SET enable_bitmapscan = off AS $$
BEGIN
    UPDATE tasker_workflow_steps ws
    SET task_inactive = n.inactive
    FROM (SELECT task_id, to_state NOT IN ('pending', 'in_progress') AS inactive
          FROM new_task_states WHERE most_recent) n
    WHERE ws.task_id = n.task_id AND NOT ws.processed AND ws.task_inactive <> n.inactive;
    RETURN NULL;
END;
$$;
-- +goose StatementEnd

CREATE TRIGGER tasker_task_transitions_mark_steps
    AFTER INSERT ON tasker_task_transitions
    REFERENCING NEW TABLE AS new_task_states
    FOR EACH STATEMENT EXECUTE FUNCTION tasker_mark_task_inactive_steps();

-- +goose Down
DROP TRIGGER tasker_task_transitions_mark_steps ON tasker_task_transitions;
DROP FUNCTION tasker_mark_task_inactive_steps();
CREATE INDEX tasker_workflow_steps_retrying_idx
    ON tasker_workflow_steps (workflow_step_id) INCLUDE (task_id)
    WHERE NOT processed AND NOT in_process AND (coalesce(attempts, 0) > 0 OR backoff_request_seconds IS NOT NULL);
DROP INDEX tasker_workflow_steps_retry_waiting_idx;
DROP INDEX tasker_workflow_steps_runnable_idx;
ALTER TABLE tasker_workflow_steps DROP COLUMN task_inactive;
