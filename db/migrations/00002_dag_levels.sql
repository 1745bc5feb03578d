-- +goose Up
-- Stored DAG depth per step, kept exact by statement-level triggers on the edges table.
--
-- A task's DAG is written once, when the task is created, so depth is computed then, per task,
-- and stored on the step: min_depth_from_root (shortest path from any root of the same task, in
-- edges) and dependency_level (longest path from a root: the level at which the step can first
-- run). Roots, and steps without edges, are 0/0.
--
-- The triggers also enforce two rules of the domain contract for every statement that writes
-- edges, refusing the whole statement (SQLSTATE 23514 check_violation, nothing is written):
--   * both ends of an edge belong to the same task
--     (constraint name tasker_workflow_step_edges_same_task);
--   * the edges of a task form no cycle (constraint name tasker_workflow_step_edges_acyclic).
-- Only the tasks touched by the statement are read and rewritten, so the cost of writing a
-- task's edges grows with that task, never with the database.

ALTER TABLE tasker_workflow_steps
    ADD COLUMN min_depth_from_root integer NOT NULL DEFAULT 0,
    ADD COLUMN dependency_level    integer NOT NULL DEFAULT 0;

-- tasker_refresh_dag_levels recomputes the stored depth of every step of the given tasks, or
-- raises check_violation (constraint tasker_workflow_step_edges_acyclic) naming a task whose
-- edges contain a cycle and the step ids of one cycle in it.
--
-- The walk is a recursive UNION over distinct (step, depth) pairs starting at the roots, so its
-- size is bounded by steps x depths and dense DAGs do not multiply paths. Each task's walk stops
-- at depth 2n-1 (n = the task's step count). In a DAG every path is shorter than n, so a step
-- that is reached at depth >= n, or that has parents but is never reached, is on or behind a
-- cycle; within the bound every such step is caught. The inner lookups are fenced (LIMIT /
-- OFFSET 0) so that each one is an index probe and the walk never scans the edges table.
-- +goose StatementBegin
CREATE FUNCTION tasker_refresh_dag_levels(p_task_ids bigint[]) RETURNS void
    LANGUAGE plpgsql AS
$$
DECLARE
    v_task     bigint;
    v_suspects bigint[];
    v_path     bigint[] := '{}';
    v_step     bigint;
    v_pos      integer;
BEGIN
    IF p_task_ids IS NULL OR cardinality(p_task_ids) = 0 THEN
        RETURN;
    END IF;

    WITH RECURSIVE
    task_steps AS MATERIALIZED (
        SELECT s.workflow_step_id, s.task_id, count(*) OVER (PARTITION BY s.task_id) AS n
        FROM tasker_workflow_steps s
        WHERE s.task_id = ANY (p_task_ids)
    ),
    walk (step_id, depth, bound) AS (
        SELECT ts.workflow_step_id, 0, (2 * ts.n - 1)::integer
        FROM task_steps ts
        LEFT JOIN LATERAL (
            SELECT 1 AS found FROM tasker_workflow_step_edges e
            WHERE e.to_step_id = ts.workflow_step_id LIMIT 1
        ) parent ON true
        WHERE parent.found IS NULL
        UNION
        SELECT child.to_step_id, w.depth + 1, w.bound
        FROM walk w
        CROSS JOIN LATERAL (
            SELECT e.to_step_id FROM tasker_workflow_step_edges e
            WHERE e.from_step_id = w.step_id OFFSET 0
        ) child
        WHERE w.depth < w.bound
    ),
    reached AS (
        SELECT step_id, min(depth) AS min_depth, max(depth) AS max_depth
        FROM walk GROUP BY step_id
    ),
    levels AS (
        SELECT ts.workflow_step_id AS step_id, ts.task_id, ts.n, r.min_depth, r.max_depth
        FROM task_steps ts LEFT JOIN reached r ON r.step_id = ts.workflow_step_id
    ),
    cyclic AS (
        SELECT task_id, array_agg(step_id ORDER BY step_id) AS suspects
        FROM levels
        WHERE max_depth IS NULL OR max_depth >= n
        GROUP BY task_id
    ),
    updated AS (
        UPDATE tasker_workflow_steps s
        SET min_depth_from_root = l.min_depth, dependency_level = l.max_depth
        FROM levels l
        WHERE s.task_id = ANY (p_task_ids)
          AND s.workflow_step_id = l.step_id
          AND NOT EXISTS (SELECT 1 FROM cyclic c WHERE c.task_id = l.task_id)
          AND (s.min_depth_from_root, s.dependency_level) IS DISTINCT FROM (l.min_depth, l.max_depth)
        RETURNING 1
    )
    SELECT c.task_id, c.suspects INTO v_task, v_suspects
    FROM cyclic c ORDER BY c.task_id LIMIT 1;

    IF v_task IS NULL THEN
        RETURN;
    END IF;

    -- Every suspect step has a parent that is a suspect too, so walking up through suspect
    -- parents must return to a step already on the path: the steps from there on form a cycle.
    v_step := v_suspects[1];
    LOOP
        v_pos := array_position(v_path, v_step);
        EXIT WHEN v_pos IS NOT NULL OR cardinality(v_path) > cardinality(v_suspects);
        v_path := v_path || v_step;
        SELECT min(e.from_step_id) INTO v_step
        FROM tasker_workflow_step_edges e
        WHERE e.to_step_id = v_step AND e.from_step_id = ANY (v_suspects);
        EXIT WHEN v_step IS NULL;
    END LOOP;
    IF v_pos IS NOT NULL THEN
        -- The path was walked child to parent; report the cycle in edge direction.
        SELECT array_agg(x ORDER BY i DESC) INTO v_path
        FROM unnest(v_path[v_pos:]) WITH ORDINALITY AS u (x, i);
    ELSE
        v_path := v_suspects;
    END IF;

    RAISE EXCEPTION 'edges of task % form a cycle through steps % (a task''s steps must form a DAG)',
        v_task, array_to_string(v_path[1:20], ' -> ')
            || CASE WHEN cardinality(v_path) > 20 THEN ' -> ...' ELSE '' END
        USING ERRCODE = 'check_violation',
              CONSTRAINT = 'tasker_workflow_step_edges_acyclic',
              TABLE = 'tasker_workflow_step_edges';
END;
$$;
-- +goose StatementEnd

-- tasker_workflow_step_edge_tasks returns the ids of the tasks that the given edges (parallel
-- arrays of from/to step ids) belong to, ascending, and locks those task rows (FOR NO KEY UPDATE)
-- so that two transactions writing edges of one task take turns. With p_check it first raises
-- check_violation (constraint tasker_workflow_step_edges_same_task) for an edge whose ends belong
-- to different tasks. Ends that no longer exist (a cascading delete) are skipped. Each end is
-- looked up by primary key, so the cost follows the number of edges, not the size of the table.
-- +goose StatementBegin
CREATE FUNCTION tasker_workflow_step_edge_tasks(p_from bigint[], p_to bigint[], p_check boolean)
    RETURNS bigint[]
    LANGUAGE plpgsql AS
$$
DECLARE
    v_from_tasks bigint[];
    v_to_tasks   bigint[];
    v_bad        record;
    v_tasks      bigint[];
BEGIN
    SELECT array_agg((SELECT s.task_id FROM tasker_workflow_steps s WHERE s.workflow_step_id = u.f) ORDER BY u.i),
           array_agg((SELECT s.task_id FROM tasker_workflow_steps s WHERE s.workflow_step_id = u.t) ORDER BY u.i)
    INTO v_from_tasks, v_to_tasks
    FROM unnest(p_from, p_to) WITH ORDINALITY AS u (f, t, i);

    IF p_check THEN
        SELECT u.f, u.ft, u.t, u.tt INTO v_bad
        FROM unnest(p_from, v_from_tasks, p_to, v_to_tasks) AS u (f, ft, t, tt)
        WHERE u.ft <> u.tt
        LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'edge from step % (task %) to step % (task %) joins two tasks: both ends of an edge must belong to the same task',
                v_bad.f, v_bad.ft, v_bad.t, v_bad.tt
                USING ERRCODE = 'check_violation',
                      CONSTRAINT = 'tasker_workflow_step_edges_same_task',
                      TABLE = 'tasker_workflow_step_edges';
        END IF;
    END IF;

    SELECT array_agg(DISTINCT x ORDER BY x) INTO v_tasks
    FROM unnest(v_from_tasks || v_to_tasks) AS x
    WHERE x IS NOT NULL;

    PERFORM 1 FROM tasker_tasks t WHERE t.task_id = ANY (v_tasks) ORDER BY t.task_id FOR NO KEY UPDATE;
    RETURN coalesce(v_tasks, '{}');
END;
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE FUNCTION tasker_workflow_step_edges_after_insert() RETURNS trigger
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

-- +goose StatementBegin
CREATE FUNCTION tasker_workflow_step_edges_after_update() RETURNS trigger
    LANGUAGE plpgsql AS
$$
DECLARE
    v_from     bigint[];
    v_to       bigint[];
    v_old_from bigint[];
    v_old_to   bigint[];
BEGIN
    SELECT array_agg(n.from_step_id), array_agg(n.to_step_id) INTO v_from, v_to FROM new_edges n;
    SELECT array_agg(o.from_step_id), array_agg(o.to_step_id) INTO v_old_from, v_old_to FROM old_edges o;
    IF v_from IS NOT NULL THEN
        PERFORM tasker_refresh_dag_levels(
            tasker_workflow_step_edge_tasks(v_from, v_to, true)
            || tasker_workflow_step_edge_tasks(v_old_from, v_old_to, false));
    END IF;
    RETURN NULL;
END;
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE FUNCTION tasker_workflow_step_edges_after_delete() RETURNS trigger
    LANGUAGE plpgsql AS
$$
DECLARE
    v_from bigint[];
    v_to   bigint[];
BEGIN
    SELECT array_agg(o.from_step_id), array_agg(o.to_step_id) INTO v_from, v_to FROM old_edges o;
    IF v_from IS NOT NULL THEN
        PERFORM tasker_refresh_dag_levels(tasker_workflow_step_edge_tasks(v_from, v_to, false));
    END IF;
    RETURN NULL;
END;
$$;
-- +goose StatementEnd

CREATE TRIGGER tasker_workflow_step_edges_dag_insert
    AFTER INSERT ON tasker_workflow_step_edges
    REFERENCING NEW TABLE AS new_edges
    FOR EACH STATEMENT EXECUTE FUNCTION tasker_workflow_step_edges_after_insert();

CREATE TRIGGER tasker_workflow_step_edges_dag_update
    AFTER UPDATE ON tasker_workflow_step_edges
    REFERENCING OLD TABLE AS old_edges NEW TABLE AS new_edges
    FOR EACH STATEMENT EXECUTE FUNCTION tasker_workflow_step_edges_after_update();

CREATE TRIGGER tasker_workflow_step_edges_dag_delete
    AFTER DELETE ON tasker_workflow_step_edges
    REFERENCING OLD TABLE AS old_edges
    FOR EACH STATEMENT EXECUTE FUNCTION tasker_workflow_step_edges_after_delete();

-- +goose Down
DROP TRIGGER tasker_workflow_step_edges_dag_delete ON tasker_workflow_step_edges;
DROP TRIGGER tasker_workflow_step_edges_dag_update ON tasker_workflow_step_edges;
DROP TRIGGER tasker_workflow_step_edges_dag_insert ON tasker_workflow_step_edges;
DROP FUNCTION tasker_workflow_step_edges_after_delete();
DROP FUNCTION tasker_workflow_step_edges_after_update();
DROP FUNCTION tasker_workflow_step_edges_after_insert();
DROP FUNCTION tasker_workflow_step_edge_tasks(bigint[], bigint[], boolean);
DROP FUNCTION tasker_refresh_dag_levels(bigint[]);
ALTER TABLE tasker_workflow_steps DROP COLUMN dependency_level, DROP COLUMN min_depth_from_root;
