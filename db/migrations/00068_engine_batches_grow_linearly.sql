-- +goose Up
-- The engine's calls into the database (migration 00066) did work that grew with the square
-- of their batch, which now reaches workers and prefetch together (500 steps at 100 workers
-- by default). The engine's connections plan with merge and hash joins off (internal/database
-- EngineSettings), so a join of two sets of the batch's rows is a nested loop over both:
--   - the recording matched its outcomes to the locked steps that way (every outcome against
--     every step: 125,000 comparisons for 500), after locking the steps whose token was any of
--     the outcomes' (a scan of every token for each step);
--   - each recorded step looked its outcome's move up by its position among the recorded
--     steps (array_position, a scan), then read it from arrays of variable-length values
--     (a subscript walks such an array from its start); the start looked each step's task up
--     the same way.
-- Recording 2,000 steps took 6.6 times as long as 500 instead of 4. Now every row of a batch
-- finds its match by key: an outcome finds its step through the primary key, a recorded step
-- its current transition through its index, with the outcome's move carried along the rows
-- (tasker_record_held_outcomes returns it), and a step's task is found by a binary search of
-- the ascending step ids (width_bucket). The rows written and their order do not change.

-- tasker_record_held_outcomes is tasker_record_held_attempts (below) that also returns each
-- recorded outcome's move off in_progress: its to_state and metadata, as outcomes gives them
-- ({..., to_state, metadata}; null where absent). Each outcome finds its step by key (an index
-- probe), the step still claimed with the outcome's token; the steps are locked in id order
-- after the tasks, then written.
-- +goose StatementBegin
CREATE FUNCTION tasker_record_held_outcomes(task_ids bigint[], outcomes jsonb)
RETURNS TABLE (step_id bigint, task_id bigint, token text, ord bigint, to_state varchar, metadata jsonb)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH tasks AS MATERIALIZED (
        SELECT t.task_id FROM tasker_tasks t WHERE t.task_id = ANY(task_ids) ORDER BY t.task_id FOR NO KEY UPDATE
    ), given AS MATERIALIZED (
        SELECT o.step_id, o.token, o.success, o.results, o.backoff, o.permanent, o.to_state, o.metadata, o.ord
        FROM ROWS FROM (jsonb_to_recordset(outcomes) AS (step_id bigint, token uuid, success boolean, results jsonb,
                                                         backoff integer, permanent boolean, to_state varchar,
                                                         metadata jsonb))
             WITH ORDINALITY AS o(step_id, token, success, results, backoff, permanent, to_state, metadata, ord)
    ), held AS MATERIALIZED (
        -- Each outcome, in step id order, locks its step if the step is still claimed with
        -- its token: a subquery of its own, so that the step is found by key whatever the
        -- statistics say (a plain join may be planned as a walk of every step filtered on
        -- in_process, when the statistics were taken while no step was claimed). The
        -- uncorrelated subquery on tasks gates the loop: every task lock is taken before the
        -- first step lock.
        SELECT x.workflow_step_id, g.token, g.success, g.results, g.backoff, g.permanent, g.to_state, g.metadata, g.ord
        FROM (SELECT * FROM given ORDER BY step_id) g
        CROSS JOIN LATERAL (
            SELECT ws.workflow_step_id FROM tasker_workflow_steps ws
            WHERE ws.workflow_step_id = g.step_id AND ws.claim_token = g.token AND ws.in_process
            FOR UPDATE
        ) x
        WHERE (SELECT count(*) FROM tasks) >= 0
    )
    UPDATE tasker_workflow_steps ws
    SET attempts = coalesce(ws.attempts, 0) + 1, last_attempted_at = now(),
        processed = ws.processed OR h.success,
        processed_at = CASE WHEN h.success THEN now() ELSE ws.processed_at END,
        results = h.results,
        backoff_request_seconds = CASE WHEN h.success THEN ws.backoff_request_seconds ELSE h.backoff END,
        retryable = ws.retryable AND NOT h.permanent,
        in_process = false, claimed_by = NULL, claim_token = NULL, claim_expires_at = NULL,
        updated_at = now()
    -- By key and token only: a filter on in_process here could again make a walk of every
    -- step look cheap. A step's token is cleared whenever its claim is (in_process with it).
    FROM held h
    WHERE ws.workflow_step_id = h.workflow_step_id AND ws.claim_token = h.token
    RETURNING ws.workflow_step_id, ws.task_id, h.token::text, h.ord, h.to_state, h.metadata;
END;
$$;
-- +goose StatementEnd

-- tasker_record_held_attempts keeps its contract (migration 00066): it is now
-- tasker_record_held_outcomes without the moves.
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION tasker_record_held_attempts(task_ids bigint[], outcomes jsonb)
RETURNS TABLE (step_id bigint, task_id bigint, token text, ord bigint)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY SELECT r.step_id, r.task_id, r.token, r.ord FROM tasker_record_held_outcomes(task_ids, outcomes) AS r;
END;
$$;
-- +goose StatementEnd

-- tasker_engine_record and tasker_engine_start do what they did (migration 00066), with the
-- rows of their batch matched by key.

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

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION tasker_engine_start(steps jsonb, task_metadata jsonb) RETURNS void
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
    SELECT array_agg(g.step_id ORDER BY g.step_id), array_agg(g.task_id ORDER BY g.step_id),
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
    -- A step's task is found in step_tasks by a binary search of step_ids, which is ascending.
    SELECT array_agg(json_build_object('id', m.id, 'task_id', step_tasks[width_bucket(m.workflow_step_id, step_ids)],
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

-- +goose Down
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION tasker_engine_start(steps jsonb, task_metadata jsonb) RETURNS void
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
    -- The recorded steps, ascending, with what their outcomes say, position by position: the
    -- statements below look a step up in these arrays (array_position, a scan of integers)
    -- rather than join the batch's rows to each other.
    WITH recorded AS (
        SELECT r.step_id, r.task_id, r.token, r.ord FROM tasker_record_held_attempts(task_ids, outcomes) AS r
    ), moves AS (
        SELECT o.to_state, o.metadata, o.ord
        FROM ROWS FROM (jsonb_to_recordset(outcomes) AS (to_state varchar, metadata jsonb)) WITH ORDINALITY AS o(to_state, metadata, ord)
    ), given AS (
        SELECT array_agg(m.to_state ORDER BY m.ord) AS states, array_agg(m.metadata ORDER BY m.ord) AS metadata FROM moves m
    )
    SELECT coalesce(array_agg(r.step_id ORDER BY r.step_id), '{}'),
           coalesce(array_agg(r.task_id ORDER BY r.step_id), '{}'),
           coalesce(array_agg(r.token ORDER BY r.step_id), '{}'),
           coalesce(array_agg(g.states[r.ord] ORDER BY r.step_id), '{}'),
           coalesce(array_agg(g.metadata[r.ord] ORDER BY r.step_id), '{}')
    INTO kept_steps, kept_tasks, kept_tokens, kept_states, kept_metadata
    FROM recorded r, given g;
    IF cardinality(kept_steps) = 0 THEN
        RETURN kept_tokens;
    END IF;

    WITH previous AS (
        UPDATE tasker_workflow_step_transitions t SET most_recent = false, updated_at = now()
        WHERE t.workflow_step_id = ANY(kept_steps) AND t.most_recent
        RETURNING t.workflow_step_id, t.to_state, t.sort_key, array_position(kept_steps, t.workflow_step_id) AS k
    ), moved AS (
        INSERT INTO tasker_workflow_step_transitions (workflow_step_id, to_state, from_state, metadata, sort_key, most_recent)
        SELECT p.workflow_step_id, kept_states[p.k], p.to_state, kept_metadata[p.k], p.sort_key + 1, true
        FROM previous p
        WHERE p.to_state = 'in_progress'
        ORDER BY p.workflow_step_id
        RETURNING id, workflow_step_id, from_state, to_state
    )
    SELECT count(*), array_agg(json_build_object('id', m.id, 'task_id', kept_tasks[array_position(kept_steps, m.workflow_step_id)],
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

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION tasker_record_held_attempts(task_ids bigint[], outcomes jsonb)
RETURNS TABLE (step_id bigint, task_id bigint, token text, ord bigint)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH tasks AS MATERIALIZED (
        SELECT t.task_id FROM tasker_tasks t WHERE t.task_id = ANY(task_ids) ORDER BY t.task_id FOR NO KEY UPDATE
    ), given AS MATERIALIZED (
        SELECT o.step_id, o.token, o.success, o.results, o.backoff, o.permanent, o.ord
        FROM ROWS FROM (jsonb_to_recordset(outcomes) AS (step_id bigint, token uuid, success boolean, results jsonb,
                                                         backoff integer, permanent boolean))
             WITH ORDINALITY AS o(step_id, token, success, results, backoff, permanent, ord)
    ), held AS MATERIALIZED (
        SELECT ws.workflow_step_id, ws.claim_token
        FROM tasker_workflow_steps ws
        WHERE ws.workflow_step_id = ANY(ARRAY(SELECT g.step_id FROM given g))
          AND ws.claim_token = ANY(ARRAY(SELECT g.token FROM given g))
          AND ws.in_process AND (SELECT count(*) FROM tasks) >= 0
        ORDER BY ws.workflow_step_id
        FOR UPDATE OF ws
    )
    -- Each outcome finds its step by key, and the step must be one of those locked above
    -- (an array's scan), so no step of the batch is joined to every outcome.
    UPDATE tasker_workflow_steps ws
    SET attempts = coalesce(ws.attempts, 0) + 1, last_attempted_at = now(),
        processed = ws.processed OR g.success,
        processed_at = CASE WHEN g.success THEN now() ELSE ws.processed_at END,
        results = g.results,
        backoff_request_seconds = CASE WHEN g.success THEN ws.backoff_request_seconds ELSE g.backoff END,
        retryable = ws.retryable AND NOT g.permanent,
        in_process = false, claimed_by = NULL, claim_token = NULL, claim_expires_at = NULL,
        updated_at = now()
    FROM given g
    WHERE ws.workflow_step_id = g.step_id AND ws.claim_token = g.token
      AND ws.workflow_step_id = ANY(ARRAY(SELECT h.workflow_step_id FROM held h))
    RETURNING ws.workflow_step_id, ws.task_id, g.token::text, g.ord;
END;
$$;
-- +goose StatementEnd

DROP FUNCTION tasker_record_held_outcomes(bigint[], jsonb);
