-- +goose Up
-- A trusted writer may tell the edges insert trigger that the statement it is about to run
-- writes the edges of steps whose DAG depth it has already stored, computed from a validated
-- (acyclic) template, and whose two ends belong to the same, newly created task. It does so by
-- setting tasker.dag_levels_precomputed to 'on' (set_config(..., true): local to its
-- transaction) just before that one INSERT. The trigger then skips its walk, its same-task check
-- and its task-row locks for that statement, and turns the setting off again, so every later
-- statement of the transaction, and every other writer, gets the full checks of migration 00002.
--
-- This is an optimisation, not a security boundary: a role that may insert edges may as well
-- write the depth columns directly. Task creation from a template (internal/orchestration) is
-- the only writer that sets it.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION tasker_workflow_step_edges_after_insert() RETURNS trigger
    LANGUAGE plpgsql AS
$$
DECLARE
    v_from bigint[];
    v_to   bigint[];
BEGIN
    IF current_setting('tasker.dag_levels_precomputed', true) = 'on' THEN
        PERFORM set_config('tasker.dag_levels_precomputed', 'off', true);
        RETURN NULL;
    END IF;
    SELECT array_agg(n.from_step_id), array_agg(n.to_step_id) INTO v_from, v_to FROM new_edges n;
    IF v_from IS NOT NULL THEN
        PERFORM tasker_refresh_dag_levels(tasker_workflow_step_edge_tasks(v_from, v_to, true));
    END IF;
    RETURN NULL;
END;
$$;
-- +goose StatementEnd

-- +goose Down
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION tasker_workflow_step_edges_after_insert() RETURNS trigger
    LANGUAGE plpgsql AS
$$
DECLARE
    v_from bigint[];
    v_to   bigint[];
BEGIN
    SELECT array_agg(n.from_step_id), array_agg(n.to_step_id) INTO v_from, v_to FROM new_edges n;
    IF v_from IS NOT NULL THEN
        PERFORM tasker_refresh_dag_levels(tasker_workflow_step_edge_tasks(v_from, v_to, true));
    END IF;
    RETURN NULL;
END;
$$;
-- +goose StatementEnd
