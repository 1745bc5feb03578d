-- +goose Up
-- Recovery no longer has an index of its own. tasker_workflow_steps_lease_idx (00005) listed
-- the claimed steps by lease expiry, so every claim wrote an entry in it (a claim already
-- writes its step's row version into four other indexes), and every lease renewal, which
-- changes only claim_expires_at, could not be a HOT update. Recovery, every few seconds, now
-- walks tasker_workflow_steps_claimed_idx (00032: the unfinished claimed steps, in id order),
-- whose size is the number of steps running at that moment, and sorts the expired ones
-- (store.ExpiredClaims). A step is never processed and claimed at once: the outcome that
-- marks it processed clears its claim in the same statement, and a claim takes only
-- unprocessed steps. In drains of 10,000 one-step tasks the claim statement took 1.93-2.01 ms
-- for 31 steps against 2.11-2.16 ms with the index.
DROP INDEX tasker_workflow_steps_lease_idx;

-- +goose Down
CREATE INDEX tasker_workflow_steps_lease_idx
    ON tasker_workflow_steps (claim_expires_at)
    WHERE in_process;
