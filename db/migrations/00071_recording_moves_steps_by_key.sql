-- +goose Up
-- The recording moved each recorded step from in_progress by joining its outcome's row to the
-- step's current transition (migration 00068: UPDATE ... FROM unnest(...) WHERE
-- t.workflow_step_id = k.step_id AND t.most_recent). A connection keeps the plan of a function's
-- statement that it made while the tables were small (after five calls it keeps a generic
-- plan), and while the transitions were few the join was planned as a scan of the whole index
-- of current transitions, kept in memory and matched with each outcome. The tables then grow
-- (without a new ANALYZE the plan stays): every recording read every current transition. A
-- chain of 1,000 steps, whose history grows at each step, was recorded in time that grew with
-- the chain (the recording of one step read 234 transitions after 234 steps), and a
-- connection that first recorded on a fresh database kept reading the whole index.
--
-- tasker_move_recorded_steps finds the current transitions by the index condition
-- workflow_step_id = ANY(kept_steps), a probe a step whatever the statistics, and pairs them
-- with the moves by position: both are in step id order, and a step has one current
-- transition, so unnest zips them (no join). A recorded step that is not in_progress, or has no
-- current transition, is refused as before (the whole recording fails).
-- tasker_engine_record calls it; nothing else changes: the rows written, their order and the
-- notifications are those of migration 00069.

-- tasker_move_recorded_steps moves each recorded step (recorded_steps, ascending, of
-- recorded_tasks, with its outcome's state and metadata) from in_progress to its outcome's state: the current
-- transition loses most_recent and the new one is written with the next sort key. It returns
-- the notifications of the new transitions, in id order.
-- +goose StatementBegin
CREATE FUNCTION tasker_move_recorded_steps(recorded_steps bigint[], recorded_tasks bigint[], recorded_states varchar[], recorded_metadata jsonb[])
RETURNS json[]
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    written int;
    notes json[];
BEGIN
    -- A step's task is found in recorded_tasks by a binary search of recorded_steps, which is
    -- ascending.
    WITH previous AS (
        UPDATE tasker_workflow_step_transitions t SET most_recent = false, updated_at = now()
        WHERE t.workflow_step_id = ANY(recorded_steps) AND t.most_recent
        RETURNING t.workflow_step_id, t.to_state, t.sort_key
    ), current_rows AS (
        SELECT array_agg(p.workflow_step_id ORDER BY p.workflow_step_id) AS steps,
               array_agg(p.to_state ORDER BY p.workflow_step_id) AS states,
               array_agg(p.sort_key ORDER BY p.workflow_step_id) AS sort_keys
        FROM previous p
    ), moved AS (
        INSERT INTO tasker_workflow_step_transitions (workflow_step_id, to_state, from_state, metadata, sort_key, most_recent)
        SELECT z.step_id, z.to_state, z.from_state, z.metadata, z.sort_key + 1, true
        FROM current_rows c
        CROSS JOIN LATERAL unnest(recorded_steps, recorded_states, recorded_metadata, c.steps, c.states, c.sort_keys)
            AS z(step_id, to_state, metadata, current_step, from_state, sort_key)
        WHERE z.current_step = z.step_id AND z.from_state = 'in_progress'
        ORDER BY z.step_id
        RETURNING id, workflow_step_id, from_state, to_state
    )
    SELECT count(*), array_agg(json_build_object('id', m.id, 'task_id', recorded_tasks[width_bucket(m.workflow_step_id, recorded_steps)],
                                                 'step_id', m.workflow_step_id, 'from', m.from_state, 'to', m.to_state) ORDER BY m.id)
    INTO written, notes
    FROM moved m;
    IF written <> cardinality(recorded_steps) THEN
        RAISE EXCEPTION 'recording attempts: % of the % steps whose claims were held are not in_progress',
            cardinality(recorded_steps) - written, cardinality(recorded_steps);
    END IF;
    RETURN notes;
END;
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION tasker_engine_record(task_ids bigint[], outcomes jsonb, busy_tasks bigint[], busy_steps bigint[])
RETURNS text[]
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    kept_steps bigint[];
    kept_tasks bigint[];
    kept_tokens text[];
    kept_states varchar[];
    kept_metadata jsonb[];
    settle bigint[];
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

    step_notes := tasker_move_recorded_steps(kept_steps, kept_tasks, kept_states, kept_metadata);

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

-- +goose Down
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION tasker_engine_record(task_ids bigint[], outcomes jsonb, busy_tasks bigint[], busy_steps bigint[])
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

DROP FUNCTION tasker_move_recorded_steps(bigint[], bigint[], varchar[], jsonb[]);
