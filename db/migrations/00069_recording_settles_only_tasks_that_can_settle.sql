-- +goose Up
-- A recording settled every task of its batch by counting all of the task's steps (their
-- states, claims and retries: tasker_tasks_settling), though a task with a step running or
-- ready cannot settle (its execution context is then processing or has_ready_steps). A task of
-- 20,000 independent steps, recorded in batches of about 130, had its 20,000 steps counted
-- about 150 times (one process drained it at about half the rate of 20,000 one-step tasks),
-- and a chain of 1,000 steps counted all its steps at each of its 1,000 recordings: the cost
-- grew with the square of the task's size. The recording now leaves out of its settling, and
-- so counts no step of, a task that cannot settle for one of three reasons, each read by key:
--   - the engine still holds a claim of another of its steps: it hands each such task to the
--     recording with one of those steps (busy_tasks, busy_steps), and a task whose given step
--     is still in process has a running step (a given step no longer in process, its claim
--     lost meanwhile, is ignored);
--   - a recorded step has a child the readiness view finds ready (a chain's next step, a
--     fan-out's branches): each recorded step's children, until one is ready;
--   - one of the task's 16 newest steps, neither processed nor in process, is ready: while a
--     task drains, its newest unfinished steps are those still to run (this covers the steps
--     of a batch that holds every claim of its task, whose next claims follow the recording).
-- Any other task is counted and settled as before.
--
-- tasker_engine_record(task_ids, outcomes) stays, as the new function with no busy task.

-- tasker_tasks_to_settle returns the tasks among tasks (ascending, distinct) that a recording
-- must settle: all but those that cannot settle for one of the reasons above (busy_steps[i] of
-- busy_tasks[i] in process; a child of recorded_steps[i], of recorded_tasks[i], ready; a ready
-- step among the task's 16 newest). Each look is by key: a few index probes.
-- +goose StatementBegin
CREATE FUNCTION tasker_tasks_to_settle(tasks bigint[], busy_tasks bigint[], busy_steps bigint[],
                                       recorded_steps bigint[], recorded_tasks bigint[]) RETURNS bigint[]
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (
        SELECT coalesce(array_agg(u.t ORDER BY u.t), '{}')
        FROM (
            SELECT t FROM unnest(tasks) AS t
            EXCEPT
            SELECT b.task_id FROM unnest(busy_tasks, busy_steps) AS b(task_id, step_id)
            WHERE (SELECT ws.in_process FROM tasker_workflow_steps ws
                   WHERE ws.workflow_step_id = b.step_id AND ws.task_id = b.task_id)
            EXCEPT
            -- A recorded step (recorded_steps[i] of recorded_tasks[i]) with a child now ready:
            -- its children by key, until the readiness view finds one ready.
            SELECT k.task_id FROM unnest(recorded_steps, recorded_tasks) AS k(step_id, task_id)
            WHERE (SELECT true FROM tasker_workflow_step_edges e
                   CROSS JOIN LATERAL (
                       SELECT rs.ready_for_execution FROM tasker_step_readiness_statuses rs
                       WHERE rs.workflow_step_id = e.to_step_id
                       LIMIT 1
                   ) r
                   WHERE e.from_step_id = k.step_id AND r.ready_for_execution
                   LIMIT 1)
        ) u
        -- The task's 16 newest steps (its own index, backwards: a bounded look), and among
        -- those neither processed nor in process, the first the readiness view finds ready.
        WHERE NOT coalesce((
            SELECT true
            FROM (SELECT s.workflow_step_id, s.processed, s.in_process FROM tasker_workflow_steps s
                  WHERE s.task_id = u.t
                  ORDER BY s.task_id DESC, s.named_step_id DESC
                  LIMIT 16) c
            CROSS JOIN LATERAL (
                SELECT rs.ready_for_execution FROM tasker_step_readiness_statuses rs
                WHERE rs.workflow_step_id = c.workflow_step_id
                LIMIT 1
            ) r
            WHERE NOT c.processed AND NOT c.in_process AND r.ready_for_execution
            LIMIT 1), false));
END;
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE FUNCTION tasker_engine_record(task_ids bigint[], outcomes jsonb, busy_tasks bigint[], busy_steps bigint[])
RETURNS text[]
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    kept_steps bigint[];
    kept_tasks bigint[];
    kept_tokens text[];
    kept_states varchar[];
    kept_metadata jsonb[];
    settle bigint[];
    written int;
    step_notes json[];
    task_notes json[];
BEGIN
    -- The recorded steps, ascending, each with its outcome's move (tasker_record_held_outcomes
    -- returns them with their rows): no outcome is looked up by position.
    SELECT coalesce(array_agg(r.step_id ORDER BY r.step_id), '{}'),
           coalesce(array_agg(r.task_id ORDER BY r.step_id), '{}'),
           coalesce(array_agg(r.token ORDER BY r.step_id), '{}'),
           coalesce(array_agg(r.to_state ORDER BY r.step_id), '{}'),
           coalesce(array_agg(r.metadata ORDER BY r.step_id), '{}')
    INTO kept_steps, kept_tasks, kept_tokens, kept_states, kept_metadata
    FROM tasker_record_held_outcomes(task_ids, outcomes) AS r;
    IF cardinality(kept_steps) = 0 THEN
        RETURN kept_tokens;
    END IF;

    -- Each recorded step's current row is found by key from its outcome's row (an index probe
    -- a step) and hands the move on; a step's task is found in kept_tasks by a binary search
    -- of kept_steps, which is ascending (width_bucket).
    WITH previous AS (
        UPDATE tasker_workflow_step_transitions t SET most_recent = false, updated_at = now()
        FROM unnest(kept_steps, kept_states, kept_metadata) AS k(step_id, to_state, metadata)
        WHERE t.workflow_step_id = k.step_id AND t.most_recent
        RETURNING t.workflow_step_id, t.to_state, t.sort_key, k.to_state AS next_state, k.metadata
    ), moved AS (
        INSERT INTO tasker_workflow_step_transitions (workflow_step_id, to_state, from_state, metadata, sort_key, most_recent)
        SELECT p.workflow_step_id, p.next_state, p.to_state, p.metadata, p.sort_key + 1, true
        FROM previous p
        WHERE p.to_state = 'in_progress'
        ORDER BY p.workflow_step_id
        RETURNING id, workflow_step_id, from_state, to_state
    )
    SELECT count(*), array_agg(json_build_object('id', m.id, 'task_id', kept_tasks[width_bucket(m.workflow_step_id, kept_steps)],
                                                 'step_id', m.workflow_step_id, 'from', m.from_state, 'to', m.to_state) ORDER BY m.id)
    INTO written, step_notes
    FROM moved m;
    IF written <> cardinality(kept_steps) THEN
        RAISE EXCEPTION 'recording attempts: % of the % steps whose claims were held are not in_progress',
            cardinality(kept_steps) - written, cardinality(kept_steps);
    END IF;

    settle := tasker_tasks_to_settle(kept_tasks, busy_tasks, busy_steps, kept_steps, kept_tasks);
    WITH counts AS MATERIALIZED (
        SELECT c.* FROM tasker_tasks_settling(settle) AS c
        WHERE coalesce(c.to_state, 'pending') IN ('pending', 'in_progress') AND c.running = 0
    ), status AS MATERIALIZED (
        SELECT c.task_id, c.to_state, c.sort_key, 'all_complete'::varchar AS execution_status,
               c.total::int AS completed_steps, c.total::int AS total_steps, 0 AS permanently_blocked_steps, 0 AS failed_steps
        FROM counts c WHERE c.unfinished = 0 AND c.total > 0
        UNION ALL
        SELECT c.task_id, c.to_state, c.sort_key, ec.execution_status,
               ec.completed_steps, ec.total_steps, ec.permanently_blocked_steps, ec.failed_steps
        -- Called per task that needs it (rare: a task with no steps, or one permanently
        -- blocked), so that a batch with none never starts the view's plan.
        FROM counts c
        CROSS JOIN LATERAL tasker_read_execution_contexts(ARRAY[c.task_id]) AS ec
        WHERE NOT (c.unfinished = 0 AND c.total > 0) AND (c.unfinished = 0 OR c.blocked > 0)
    ), moves AS (
        SELECT s.task_id, s.to_state AS from_state, 'in_progress'::varchar AS to_state,
               jsonb_build_object('reason', 'finalize', 'event', 'start_requested') AS metadata,
               s.sort_key + 1 AS sort_key, false AS most_recent
        FROM status s WHERE s.execution_status = 'all_complete' AND coalesce(s.to_state, 'pending') = 'pending'
        UNION ALL
        SELECT s.task_id, CASE WHEN coalesce(s.to_state, 'pending') = 'pending' THEN 'in_progress' ELSE s.to_state END,
               'complete', jsonb_build_object('completed_steps', s.completed_steps, 'total_steps', s.total_steps, 'event', 'completed'),
               s.sort_key + CASE WHEN coalesce(s.to_state, 'pending') = 'pending' THEN 2 ELSE 1 END, true
        FROM status s WHERE s.execution_status = 'all_complete'
        UNION ALL
        SELECT s.task_id, s.to_state, 'error',
               jsonb_build_object('reason', 'blocked_by_failures', 'permanently_blocked_steps', s.permanently_blocked_steps,
                                  'failed_steps', s.failed_steps, 'event', 'failed'),
               s.sort_key + 1, true
        FROM status s WHERE s.execution_status = 'blocked_by_failures'
    ), previous AS (
        UPDATE tasker_task_transitions t SET most_recent = false, updated_at = now()
        WHERE t.task_id = ANY(ARRAY(SELECT m.task_id FROM moves m)) AND t.most_recent
        RETURNING t.task_id
    ), moved AS (
        INSERT INTO tasker_task_transitions (task_id, to_state, from_state, metadata, sort_key, most_recent)
        SELECT m.task_id, m.to_state, m.from_state, m.metadata, m.sort_key, m.most_recent
        FROM moves m
        WHERE (SELECT count(*) FROM previous) >= 0
        ORDER BY m.task_id, m.sort_key
        RETURNING id, task_id, from_state, to_state
    )
    SELECT array_agg(json_build_object('id', m.id, 'task_id', m.task_id, 'from', m.from_state, 'to', m.to_state) ORDER BY m.id)
    INTO task_notes
    FROM moved m;

    PERFORM tasker_notify_transitions('tasker_step_transitions', step_notes);
    PERFORM tasker_notify_transitions('tasker_task_transitions', task_notes);
    RETURN kept_tokens;
END;
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION tasker_engine_record(task_ids bigint[], outcomes jsonb) RETURNS text[]
LANGUAGE sql VOLATILE AS $$
    SELECT tasker_engine_record(task_ids, outcomes, '{}'::bigint[], '{}'::bigint[])
$$;
-- +goose StatementEnd

-- +goose Down
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION tasker_engine_record(task_ids bigint[], outcomes jsonb) RETURNS text[]
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    kept_steps bigint[];
    kept_tasks bigint[];
    kept_tokens text[];
    kept_states varchar[];
    kept_metadata jsonb[];
    settle bigint[];
    written int;
    step_notes json[];
    task_notes json[];
BEGIN
    -- The recorded steps, ascending, each with its outcome's move (tasker_record_held_outcomes
    -- returns them with their rows): no outcome is looked up by position.
    SELECT coalesce(array_agg(r.step_id ORDER BY r.step_id), '{}'),
           coalesce(array_agg(r.task_id ORDER BY r.step_id), '{}'),
           coalesce(array_agg(r.token ORDER BY r.step_id), '{}'),
           coalesce(array_agg(r.to_state ORDER BY r.step_id), '{}'),
           coalesce(array_agg(r.metadata ORDER BY r.step_id), '{}')
    INTO kept_steps, kept_tasks, kept_tokens, kept_states, kept_metadata
    FROM tasker_record_held_outcomes(task_ids, outcomes) AS r;
    IF cardinality(kept_steps) = 0 THEN
        RETURN kept_tokens;
    END IF;

    -- Each recorded step's current row is found by key from its outcome's row (an index probe
    -- a step) and hands the move on; a step's task is found in kept_tasks by a binary search
    -- of kept_steps, which is ascending (width_bucket).
    WITH previous AS (
        UPDATE tasker_workflow_step_transitions t SET most_recent = false, updated_at = now()
        FROM unnest(kept_steps, kept_states, kept_metadata) AS k(step_id, to_state, metadata)
        WHERE t.workflow_step_id = k.step_id AND t.most_recent
        RETURNING t.workflow_step_id, t.to_state, t.sort_key, k.to_state AS next_state, k.metadata
    ), moved AS (
        INSERT INTO tasker_workflow_step_transitions (workflow_step_id, to_state, from_state, metadata, sort_key, most_recent)
        SELECT p.workflow_step_id, p.next_state, p.to_state, p.metadata, p.sort_key + 1, true
        FROM previous p
        WHERE p.to_state = 'in_progress'
        ORDER BY p.workflow_step_id
        RETURNING id, workflow_step_id, from_state, to_state
    )
    SELECT count(*), array_agg(json_build_object('id', m.id, 'task_id', kept_tasks[width_bucket(m.workflow_step_id, kept_steps)],
                                                 'step_id', m.workflow_step_id, 'from', m.from_state, 'to', m.to_state) ORDER BY m.id)
    INTO written, step_notes
    FROM moved m;
    IF written <> cardinality(kept_steps) THEN
        RAISE EXCEPTION 'recording attempts: % of the % steps whose claims were held are not in_progress',
            cardinality(kept_steps) - written, cardinality(kept_steps);
    END IF;

    settle := ARRAY(SELECT DISTINCT t FROM unnest(kept_tasks) AS t ORDER BY t);
    WITH counts AS MATERIALIZED (
        SELECT c.* FROM tasker_tasks_settling(settle) AS c
        WHERE coalesce(c.to_state, 'pending') IN ('pending', 'in_progress') AND c.running = 0
    ), status AS MATERIALIZED (
        SELECT c.task_id, c.to_state, c.sort_key, 'all_complete'::varchar AS execution_status,
               c.total::int AS completed_steps, c.total::int AS total_steps, 0 AS permanently_blocked_steps, 0 AS failed_steps
        FROM counts c WHERE c.unfinished = 0 AND c.total > 0
        UNION ALL
        SELECT c.task_id, c.to_state, c.sort_key, ec.execution_status,
               ec.completed_steps, ec.total_steps, ec.permanently_blocked_steps, ec.failed_steps
        -- Called per task that needs it (rare: a task with no steps, or one permanently
        -- blocked), so that a batch with none never starts the view's plan.
        FROM counts c
        CROSS JOIN LATERAL tasker_read_execution_contexts(ARRAY[c.task_id]) AS ec
        WHERE NOT (c.unfinished = 0 AND c.total > 0) AND (c.unfinished = 0 OR c.blocked > 0)
    ), moves AS (
        SELECT s.task_id, s.to_state AS from_state, 'in_progress'::varchar AS to_state,
               jsonb_build_object('reason', 'finalize', 'event', 'start_requested') AS metadata,
               s.sort_key + 1 AS sort_key, false AS most_recent
        FROM status s WHERE s.execution_status = 'all_complete' AND coalesce(s.to_state, 'pending') = 'pending'
        UNION ALL
        SELECT s.task_id, CASE WHEN coalesce(s.to_state, 'pending') = 'pending' THEN 'in_progress' ELSE s.to_state END,
               'complete', jsonb_build_object('completed_steps', s.completed_steps, 'total_steps', s.total_steps, 'event', 'completed'),
               s.sort_key + CASE WHEN coalesce(s.to_state, 'pending') = 'pending' THEN 2 ELSE 1 END, true
        FROM status s WHERE s.execution_status = 'all_complete'
        UNION ALL
        SELECT s.task_id, s.to_state, 'error',
               jsonb_build_object('reason', 'blocked_by_failures', 'permanently_blocked_steps', s.permanently_blocked_steps,
                                  'failed_steps', s.failed_steps, 'event', 'failed'),
               s.sort_key + 1, true
        FROM status s WHERE s.execution_status = 'blocked_by_failures'
    ), previous AS (
        UPDATE tasker_task_transitions t SET most_recent = false, updated_at = now()
        WHERE t.task_id = ANY(ARRAY(SELECT m.task_id FROM moves m)) AND t.most_recent
        RETURNING t.task_id
    ), moved AS (
        INSERT INTO tasker_task_transitions (task_id, to_state, from_state, metadata, sort_key, most_recent)
        SELECT m.task_id, m.to_state, m.from_state, m.metadata, m.sort_key, m.most_recent
        FROM moves m
        WHERE (SELECT count(*) FROM previous) >= 0
        ORDER BY m.task_id, m.sort_key
        RETURNING id, task_id, from_state, to_state
    )
    SELECT array_agg(json_build_object('id', m.id, 'task_id', m.task_id, 'from', m.from_state, 'to', m.to_state) ORDER BY m.id)
    INTO task_notes
    FROM moved m;

    PERFORM tasker_notify_transitions('tasker_step_transitions', step_notes);
    PERFORM tasker_notify_transitions('tasker_task_transitions', task_notes);
    RETURN kept_tokens;
END;
$$;
-- +goose StatementEnd

DROP FUNCTION tasker_engine_record(bigint[], jsonb, bigint[], bigint[]);
DROP FUNCTION tasker_tasks_to_settle(bigint[], bigint[], bigint[], bigint[], bigint[]);
