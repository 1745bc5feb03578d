-- +goose Up
-- Worker claims on workflow steps. A worker that claims a step sets in_process together with
-- who claimed it, a token unique to this claim, and when the claim's lease runs out. The
-- worker extends the lease while the handler runs; a claim whose lease ran out belongs to a
-- worker that died, and is recovered (the lost attempt counted, the step moved to error) by
-- any process. The token lets a worker recognise that its claim was taken away (recovered,
-- cancelled) and discard its result.
--
-- Two partial indexes keep the hot queries small however many finished steps accumulate:
-- the claim scans only steps that are neither processed nor claimed, in id order (oldest
-- first); recovery scans only claimed steps by lease expiry.
ALTER TABLE tasker_workflow_steps
    ADD COLUMN claimed_by       varchar(128),
    ADD COLUMN claim_token      uuid,
    ADD COLUMN claim_expires_at timestamptz;

CREATE INDEX tasker_workflow_steps_claimable_idx
    ON tasker_workflow_steps (workflow_step_id) INCLUDE (task_id, attempts)
    WHERE NOT processed AND NOT in_process;

CREATE INDEX tasker_workflow_steps_lease_idx
    ON tasker_workflow_steps (claim_expires_at)
    WHERE in_process;

-- +goose Down
DROP INDEX tasker_workflow_steps_lease_idx;
DROP INDEX tasker_workflow_steps_claimable_idx;
ALTER TABLE tasker_workflow_steps
    DROP COLUMN claim_expires_at,
    DROP COLUMN claim_token,
    DROP COLUMN claimed_by;
