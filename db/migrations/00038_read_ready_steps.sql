-- +goose Up
-- Query.steps(filter: {ready: true}), the question "what can run now?" across the database,
-- through a read function like those of 00037_read_functions.sql, so that its statement is
-- planned once per connection rather than at every request. The readiness rows are walked
-- newest first along tasker_workflow_steps_claimable_idx (NOT processed AND NOT in_process),
-- which holds every ready step (SEMANTICS §3.3, conditions 2 and 5) and no finished one, and
-- the walk stops at lim rows. before_id bounds the step ids from above (exclusive). The rows
-- are the view's own row type, so the function follows the view's columns.
-- +goose StatementBegin
CREATE FUNCTION tasker_read_ready_steps(before_id bigint, lim integer)
RETURNS SETOF tasker_step_readiness_statuses
LANGUAGE plpgsql STABLE
SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET jit = off AS $$
BEGIN
    RETURN QUERY SELECT * FROM tasker_step_readiness_statuses r
        WHERE NOT r.processed AND NOT r.in_process AND r.ready_for_execution
          AND r.workflow_step_id < before_id
        ORDER BY r.workflow_step_id DESC LIMIT lim;
END
$$;
-- +goose StatementEnd

-- +goose Down
DROP FUNCTION tasker_read_ready_steps(bigint, integer);
