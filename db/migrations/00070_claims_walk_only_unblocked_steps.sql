-- +goose Up
-- The claim walks its candidates in id order on tasker_workflow_steps_runnable_idx and reads
-- the readiness of each (internal/store, claimBaseSQL). The index held every unfinished step of
-- an active task, including the steps still waiting for a parent, so a claim passed all of them
-- before it found its batch of ready steps: a chain of 1,000 steps has one ready step and up to
-- 999 waiting ones, and each of its 1,000 claims walked the waiting steps (about 8 ms of
-- database time a step; the drain's cost grew with the square of the chain), and a queue of
-- chains or of wide fan-ins had every claim walk the waiting steps of every task in flight.
--
-- tasker_workflow_steps.parents_left counts, for a step that is not processed, the parents it
-- still waits for: it is never more than the number of its parents whose current state is not
-- complete or resolved_manually (SEMANTICS §3.2's dependency rule), so a step whose every
-- parent is done has 0. The two indexes of migration 00050 hold only the steps with 0, so a
-- claim walks only steps whose parents are done (and still reads the readiness view for each).
-- The count is kept by
--   - the task creation, which writes each new step with its number of parents (its parents
--     are new steps, none done; store.InsertSteps);
--   - tasker_count_down_parents below: a statement that writes transitions to complete or
--     resolved_manually lowers the count of each child of those steps by the number of its
--     parents it finished. Those states are terminal (SEMANTICS §2), so a parent is counted
--     down once; an update of the child's row reads its newest version, so the counts of two
--     writers that finish two parents of one step add up, whatever their order;
--   - the edges' triggers below: an edge deleted or moved sets the count of the steps it led
--     to back to 0 (the walk then reads their readiness, as it did for every step before).
-- A step written another way (edges inserted after their steps, `tasker seed`'s bulk load)
-- has 0: such a step is walked, as before. Nothing else reads the count: readiness, the views
-- and the API are unchanged.
ALTER TABLE tasker_workflow_steps ADD COLUMN parents_left integer NOT NULL DEFAULT 0;

UPDATE tasker_workflow_steps c
SET parents_left = w.n
FROM (SELECT e.to_step_id, count(*) AS n
      FROM tasker_workflow_step_edges e
      JOIN tasker_workflow_steps ws ON ws.workflow_step_id = e.to_step_id AND NOT ws.processed
      WHERE coalesce((SELECT pt.to_state FROM tasker_workflow_step_transitions pt
                      WHERE pt.workflow_step_id = e.from_step_id AND pt.most_recent), 'pending')
            NOT IN ('complete', 'resolved_manually')
      GROUP BY e.to_step_id) w
WHERE c.workflow_step_id = w.to_step_id;

DROP INDEX tasker_workflow_steps_runnable_idx;
CREATE INDEX tasker_workflow_steps_runnable_idx
    ON tasker_workflow_steps (workflow_step_id) INCLUDE (task_id, attempts)
    WHERE NOT processed AND NOT in_process AND NOT task_inactive AND parents_left = 0
      AND (coalesce(attempts, 0) = 0 OR (retryable AND coalesce(attempts, 0) < coalesce(retry_limit, 3)));

DROP INDEX tasker_workflow_steps_retry_waiting_idx;
CREATE INDEX tasker_workflow_steps_retry_waiting_idx
    ON tasker_workflow_steps (workflow_step_id) INCLUDE (task_id)
    WHERE NOT processed AND NOT in_process AND NOT task_inactive AND parents_left = 0
      AND (coalesce(attempts, 0) > 0 OR backoff_request_seconds IS NOT NULL)
      AND (coalesce(attempts, 0) = 0 OR (retryable AND coalesce(attempts, 0) < coalesce(retry_limit, 3)));

-- tasker_count_down_parents lowers, for each step a statement moved to complete or
-- resolved_manually, the count of each of its children that still waits for parents. Every
-- row is found by key, whatever the planner believes about the tables (a connection keeps the
-- plan it made while they were small): the finished steps' edges by the index condition
-- from_step_id = ANY(...), the children by workflow_step_id = ANY(...), and each child's number
-- of finished parents by a binary search of the ascending children (width_bucket). A statement
-- that finishes no step (a claim's starts) reads nothing more than its own rows, and one that
-- finishes no step with a child writes nothing. It runs after the writer's locks (the lock
-- order is task, then step; the engine and the operators' actions write a step's transitions
-- under its task's lock), so it takes only the child rows of tasks already locked.
-- +goose StatementBegin
CREATE FUNCTION tasker_count_down_parents() RETURNS trigger LANGUAGE plpgsql
SET enable_seqscan = off SET enable_bitmapscan = off SET enable_mergejoin = off SET enable_hashjoin = off AS $$
DECLARE
    finished bigint[];
    children bigint[];
    counts int[];
BEGIN
    finished := ARRAY(SELECT DISTINCT n.workflow_step_id FROM new_step_states n
                      WHERE n.to_state IN ('complete', 'resolved_manually'));
    IF cardinality(finished) = 0 THEN
        RETURN NULL;
    END IF;
    SELECT array_agg(d.to_step_id ORDER BY d.to_step_id), array_agg(d.n ORDER BY d.to_step_id)
    INTO children, counts
    FROM (SELECT e.to_step_id, count(*)::int AS n
          FROM tasker_workflow_step_edges e
          WHERE e.from_step_id = ANY(finished)
          GROUP BY e.to_step_id) d;
    IF children IS NULL THEN
        RETURN NULL;
    END IF;
    UPDATE tasker_workflow_steps c
    SET parents_left = greatest(c.parents_left - counts[width_bucket(c.workflow_step_id, children)], 0)
    WHERE c.workflow_step_id = ANY(children) AND c.parents_left > 0;
    RETURN NULL;
END;
$$;
-- +goose StatementEnd

CREATE TRIGGER tasker_workflow_step_transitions_count_down_parents
    AFTER INSERT ON tasker_workflow_step_transitions
    REFERENCING NEW TABLE AS new_step_states
    FOR EACH STATEMENT
    WHEN (current_setting('tasker.bulk_load', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION tasker_count_down_parents();
-- It fires in the engine's transactions, which run in replica mode (migration 00051).
ALTER TABLE tasker_workflow_step_transitions ENABLE ALWAYS TRIGGER tasker_workflow_step_transitions_count_down_parents;

-- tasker_release_edge_children sets back to 0 the count of each step an edge deleted or moved
-- led to: the count may then be below the parents it waits for, never above.
-- +goose StatementBegin
CREATE FUNCTION tasker_release_edge_children() RETURNS trigger LANGUAGE plpgsql
SET enable_seqscan = off SET enable_bitmapscan = off SET enable_mergejoin = off SET enable_hashjoin = off AS $$
BEGIN
    UPDATE tasker_workflow_steps c
    SET parents_left = 0
    WHERE c.workflow_step_id = ANY(ARRAY(SELECT o.to_step_id FROM old_edges o)) AND c.parents_left > 0;
    RETURN NULL;
END;
$$;
-- +goose StatementEnd

CREATE TRIGGER tasker_workflow_step_edges_release_on_delete
    AFTER DELETE ON tasker_workflow_step_edges
    REFERENCING OLD TABLE AS old_edges
    FOR EACH STATEMENT EXECUTE FUNCTION tasker_release_edge_children();

CREATE TRIGGER tasker_workflow_step_edges_release_on_update
    AFTER UPDATE ON tasker_workflow_step_edges
    REFERENCING OLD TABLE AS old_edges
    FOR EACH STATEMENT EXECUTE FUNCTION tasker_release_edge_children();
ALTER TABLE tasker_workflow_step_edges ENABLE ALWAYS TRIGGER tasker_workflow_step_edges_release_on_delete;
ALTER TABLE tasker_workflow_step_edges ENABLE ALWAYS TRIGGER tasker_workflow_step_edges_release_on_update;

-- +goose Down
DROP TRIGGER tasker_workflow_step_edges_release_on_update ON tasker_workflow_step_edges;
DROP TRIGGER tasker_workflow_step_edges_release_on_delete ON tasker_workflow_step_edges;
DROP FUNCTION tasker_release_edge_children();
DROP TRIGGER tasker_workflow_step_transitions_count_down_parents ON tasker_workflow_step_transitions;
DROP FUNCTION tasker_count_down_parents();
DROP INDEX tasker_workflow_steps_retry_waiting_idx;
CREATE INDEX tasker_workflow_steps_retry_waiting_idx
    ON tasker_workflow_steps (workflow_step_id) INCLUDE (task_id)
    WHERE NOT processed AND NOT in_process AND NOT task_inactive
      AND (coalesce(attempts, 0) > 0 OR backoff_request_seconds IS NOT NULL)
      AND (coalesce(attempts, 0) = 0 OR (retryable AND coalesce(attempts, 0) < coalesce(retry_limit, 3)));
DROP INDEX tasker_workflow_steps_runnable_idx;
CREATE INDEX tasker_workflow_steps_runnable_idx
    ON tasker_workflow_steps (workflow_step_id) INCLUDE (task_id, attempts)
    WHERE NOT processed AND NOT in_process AND NOT task_inactive
      AND (coalesce(attempts, 0) = 0 OR (retryable AND coalesce(attempts, 0) < coalesce(retry_limit, 3)));
ALTER TABLE tasker_workflow_steps DROP COLUMN parents_left;
