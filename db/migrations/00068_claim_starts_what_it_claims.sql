-- +goose Up
-- A busy batch's transaction ran BEGIN, tasker_engine_record, the claim, tasker_engine_start,
-- COMMIT: between the claim and the start, the database waited inside the transaction, its
-- step locks held, while the engine read the claimed rows, encoded each step's moves and sent
-- them back as JSON, which the start then parsed. The claim statement now starts what it
-- claims itself (internal/store: claimSQL), calling tasker_engine_start_claimed with its
-- claimed rows as arrays: the transaction is BEGIN, tasker_engine_record, the claim, COMMIT.
--
-- The state machine still checks every move the start writes: the engine encodes the
-- metadata of the three moves a start can make (a step to in_progress, a step in error to
-- pending before it, a pending task to in_progress) once, through statemachine.Metadata, which
-- refuses a move the transition table does not allow, and hands them to the claim. The claim
-- takes only steps whose current state is pending or error, the states those moves leave.

-- tasker_engine_start_claimed starts steps the calling claim statement has just marked
-- in_process (it holds their row locks). The i-th step is step_ids[i], of task step_tasks[i],
-- its current transition as the claim read it (from_states[i], null when it has none, and
-- sort_keys[i], the last sort key of its history, 0 when none), about to run its attempt
-- attempts[i].
--
--  1. Each step moves to in_progress with step_metadata and its attempt's number ("attempt");
--     a step in error first moves to pending with retry_metadata (the retry is in its
--     history). The moves are written from the current transition the claim read, without
--     reading it again. A transition committed between the claim's snapshot and its lock (an
--     operator's, on a step no engine held) took the sort key the move would write: the
--     claim then fails on the history's unique sort keys and writes nothing.
--  2. The pending tasks among new_tasks (those the claim found pending) move to in_progress
--     with task_metadata. Their rows are locked SKIP LOCKED (tasker_lock_tasks_skip_locked,
--     whose read of their current transitions follows the locks), so the claim, which already
--     holds step locks, never waits for a task lock (the lock order is task, then step); a
--     task skipped here is started by the claim of its next step, or settled by its
--     finalisation. A task no longer pending (another engine started it, an operator moved
--     it) is left.
--  3. The transitions are notified.
--
-- It returns how many steps it started.
-- +goose StatementBegin
CREATE FUNCTION tasker_engine_start_claimed(step_ids bigint[], step_tasks bigint[], from_states varchar[],
                                            sort_keys integer[], attempts integer[], new_tasks bigint[],
                                            step_metadata jsonb, retry_metadata jsonb, task_metadata jsonb)
RETURNS integer
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    locked_tasks bigint[];
    locked_states varchar[];
    locked_keys int[];
    step_notes json[];
    task_notes json[];
BEGIN
    IF coalesce(cardinality(step_ids), 0) = 0 THEN
        RETURN 0;
    END IF;

    WITH given AS MATERIALIZED (
        SELECT g.step_id, g.from_state, g.sort_key, g.attempt, g.from_state = 'error' AS retry
        FROM unnest(step_ids, from_states, sort_keys, attempts) AS g(step_id, from_state, sort_key, attempt)
    ), moves AS (
        SELECT g.step_id, 'pending'::varchar AS to_state, g.from_state, retry_metadata AS metadata,
               g.sort_key + 1 AS sort_key, false AS most_recent
        FROM given g WHERE g.retry
        UNION ALL
        SELECT g.step_id, 'in_progress', CASE WHEN g.retry THEN 'pending' ELSE g.from_state END,
               step_metadata || jsonb_build_object('attempt', g.attempt),
               g.sort_key + CASE WHEN g.retry THEN 2 ELSE 1 END, true
        FROM given g
    ), previous AS (
        UPDATE tasker_workflow_step_transitions t SET most_recent = false, updated_at = now()
        WHERE t.workflow_step_id = ANY(step_ids) AND t.most_recent
        RETURNING t.workflow_step_id
    ), moved AS (
        INSERT INTO tasker_workflow_step_transitions (workflow_step_id, to_state, from_state, metadata, sort_key, most_recent)
        SELECT m.step_id, m.to_state, m.from_state, m.metadata, m.sort_key, m.most_recent
        FROM moves m
        WHERE (SELECT count(*) FROM previous) >= 0
        ORDER BY m.step_id, m.sort_key
        RETURNING id, workflow_step_id, from_state, to_state
    )
    SELECT array_agg(json_build_object('id', m.id, 'task_id', step_tasks[array_position(step_ids, m.workflow_step_id)],
                                       'step_id', m.workflow_step_id, 'from', m.from_state, 'to', m.to_state) ORDER BY m.id)
    INTO step_notes
    FROM moved m;

    IF cardinality(new_tasks) > 0 THEN
        -- The locks and the read of the locked tasks' current transitions, in a statement of
        -- their own: the writes below then run with a snapshot taken after the locks.
        SELECT array_agg(l.task_id ORDER BY l.task_id), array_agg(l.to_state ORDER BY l.task_id),
               array_agg(l.sort_key ORDER BY l.task_id)
        INTO locked_tasks, locked_states, locked_keys
        FROM tasker_lock_tasks_skip_locked(new_tasks) AS l
        WHERE coalesce(l.to_state, 'pending') = 'pending';
        IF locked_tasks IS NOT NULL THEN
            WITH previous AS (
                UPDATE tasker_task_transitions t SET most_recent = false, updated_at = now()
                WHERE t.task_id = ANY(locked_tasks) AND t.most_recent
                RETURNING t.task_id
            ), moved AS (
                INSERT INTO tasker_task_transitions (task_id, to_state, from_state, metadata, sort_key, most_recent)
                SELECT l.task_id, 'in_progress', l.to_state, task_metadata, l.sort_key + 1, true
                FROM unnest(locked_tasks, locked_states, locked_keys) AS l(task_id, to_state, sort_key)
                WHERE (SELECT count(*) FROM previous) >= 0
                ORDER BY l.task_id
                RETURNING id, task_id, from_state, to_state
            )
            SELECT array_agg(json_build_object('id', m.id, 'task_id', m.task_id, 'from', m.from_state, 'to', m.to_state) ORDER BY m.id)
            INTO task_notes
            FROM moved m;
        END IF;
    END IF;

    PERFORM tasker_notify_transitions('tasker_step_transitions', step_notes);
    PERFORM tasker_notify_transitions('tasker_task_transitions', task_notes);
    RETURN cardinality(step_ids);
END;
$$;
-- +goose StatementEnd

DROP FUNCTION tasker_engine_start(jsonb, jsonb);

-- +goose Down
-- tasker_engine_start as migration 00066 made it.
-- +goose StatementBegin
CREATE FUNCTION tasker_engine_start(steps jsonb, task_metadata jsonb) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    step_ids bigint[];
    step_tasks bigint[];
    new_tasks bigint[];
    locked_tasks bigint[];
    locked_states varchar[];
    locked_keys int[];
    step_notes json[];
    task_notes json[];
BEGIN
    SELECT array_agg(g.step_id), array_agg(g.task_id),
           coalesce(array_agg(DISTINCT g.task_id ORDER BY g.task_id) FILTER (WHERE g.task_new), '{}')
    INTO step_ids, step_tasks, new_tasks
    FROM jsonb_to_recordset(steps) AS g(step_id bigint, task_id bigint, task_new boolean);

    WITH given AS MATERIALIZED (
        SELECT g.step_id, g.task_id, g.from_state, g.sort_key, g.retry_metadata, g.metadata
        FROM jsonb_to_recordset(steps) AS g(step_id bigint, task_id bigint, from_state varchar, sort_key integer,
                                            retry_metadata jsonb, metadata jsonb)
    ), moves AS (
        SELECT g.step_id, g.task_id, 'pending'::varchar AS to_state, g.from_state, g.retry_metadata AS metadata,
               g.sort_key + 1 AS sort_key, false AS most_recent
        FROM given g WHERE g.retry_metadata IS NOT NULL
        UNION ALL
        SELECT g.step_id, g.task_id, 'in_progress', CASE WHEN g.retry_metadata IS NULL THEN g.from_state ELSE 'pending' END,
               g.metadata, g.sort_key + CASE WHEN g.retry_metadata IS NULL THEN 1 ELSE 2 END, true
        FROM given g
    ), previous AS (
        UPDATE tasker_workflow_step_transitions t SET most_recent = false, updated_at = now()
        WHERE t.workflow_step_id = ANY(step_ids) AND t.most_recent
        RETURNING t.workflow_step_id
    ), moved AS (
        INSERT INTO tasker_workflow_step_transitions (workflow_step_id, to_state, from_state, metadata, sort_key, most_recent)
        SELECT m.step_id, m.to_state, m.from_state, m.metadata, m.sort_key, m.most_recent
        FROM moves m
        WHERE (SELECT count(*) FROM previous) >= 0
        ORDER BY m.step_id, m.sort_key
        RETURNING id, workflow_step_id, from_state, to_state
    )
    SELECT array_agg(json_build_object('id', m.id, 'task_id', step_tasks[array_position(step_ids, m.workflow_step_id)],
                                       'step_id', m.workflow_step_id, 'from', m.from_state, 'to', m.to_state) ORDER BY m.id)
    INTO step_notes
    FROM moved m;

    IF cardinality(new_tasks) > 0 THEN
        -- The locks and the read of the locked tasks' current transitions, in a statement of
        -- their own: the writes below then run with a snapshot taken after the locks.
        SELECT array_agg(l.task_id ORDER BY l.task_id), array_agg(l.to_state ORDER BY l.task_id),
               array_agg(l.sort_key ORDER BY l.task_id)
        INTO locked_tasks, locked_states, locked_keys
        FROM tasker_lock_tasks_skip_locked(new_tasks) AS l
        WHERE coalesce(l.to_state, 'pending') = 'pending';
        IF locked_tasks IS NOT NULL THEN
            WITH previous AS (
                UPDATE tasker_task_transitions t SET most_recent = false, updated_at = now()
                WHERE t.task_id = ANY(locked_tasks) AND t.most_recent
                RETURNING t.task_id
            ), moved AS (
                INSERT INTO tasker_task_transitions (task_id, to_state, from_state, metadata, sort_key, most_recent)
                SELECT l.task_id, 'in_progress', l.to_state, task_metadata, l.sort_key + 1, true
                FROM unnest(locked_tasks, locked_states, locked_keys) AS l(task_id, to_state, sort_key)
                WHERE (SELECT count(*) FROM previous) >= 0
                ORDER BY l.task_id
                RETURNING id, task_id, from_state, to_state
            )
            SELECT array_agg(json_build_object('id', m.id, 'task_id', m.task_id, 'from', m.from_state, 'to', m.to_state) ORDER BY m.id)
            INTO task_notes
            FROM moved m;
        END IF;
    END IF;

    PERFORM tasker_notify_transitions('tasker_step_transitions', step_notes);
    PERFORM tasker_notify_transitions('tasker_task_transitions', task_notes);
END;
$$;
-- +goose StatementEnd

DROP FUNCTION tasker_engine_start_claimed(bigint[], bigint[], varchar[], integer[], integer[], bigint[], jsonb, jsonb, jsonb);
