-- +goose Up
-- The engine's busy transaction (record a batch of attempts, settle their tasks, claim and
-- start the next steps) ran about ten statements, each a round trip during which the
-- database waited on the engine inside the transaction, holding the batch's locks. Two
-- functions now write what followed the recording and the claim, from what the engine hands
-- them: the transaction is BEGIN, tasker_engine_record, the claim, tasker_engine_start,
-- COMMIT. They write the same rows as the state machine's writer did (internal/statemachine:
-- each move a new row with the next sort key and most_recent, the owner's previous current
-- row cleared), and notify them as an engine transaction does (migration 00063: the
-- triggers leave it to a writer that sets tasker.writer_notifies).
--
-- The engine encodes every step move's metadata itself, through the state machine, which
-- checks the move against SEMANTICS' transition table and names its event: the functions
-- decide no step move. The settling moves of tasks are decided here, by SEMANTICS §7 (as
-- orchestration.FinalizeTask decides them for an operator): all_complete → complete (through
-- in_progress when pending), blocked_by_failures → error; only a pending or in_progress task
-- with no step running moves.

-- tasker_notify_transitions sends the notifications of transitions written by an engine
-- transaction: rows (JSON objects in the triggers' format, {"id", "task_id", "step_id",
-- "from", "to"}, without step_id for a task's) in id order, 50 to a notification, on channel.
-- +goose StatementBegin
CREATE FUNCTION tasker_notify_transitions(channel text, rows json[]) RETURNS void
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_notify(channel, json_build_object('rows', json_agg(r ORDER BY i))::text)
    FROM unnest(rows) WITH ORDINALITY AS u(r, i)
    GROUP BY (i - 1) / 50;
END;
$$;
-- +goose StatementEnd

-- tasker_tasks_settling counts, per task of ids, what decides whether it may be settled
-- (store.TasksSettling, and tasker_engine_record below): its current transition (state, null
-- when it has none, and the last sort key of its history, 0 when none), and how many steps it
-- has, and how many of them are running (in_progress by state or claim), unfinished (not
-- complete or resolved_manually) and permanently blocked (cancelled, or pending or in error
-- and not retry-eligible). Each step's state is an index probe, so the cost follows the tasks'
-- steps, whatever the table statistics say. The task's current transition, like each step's
-- state, is read in a fenced subquery (OFFSET 0), an index probe per task whatever the
-- statistics: pulled up into a join, it was read as a filtered join over every current task
-- transition, materialised once per statement, when the engine's cached generic plan was made
-- while that table was nearly empty (6.6 ms for 31 tasks of 10,000 where 0.2 ms do).
-- +goose StatementBegin
CREATE FUNCTION tasker_tasks_settling(ids bigint[])
RETURNS TABLE (task_id bigint, to_state varchar, sort_key integer, total integer, running integer,
               unfinished integer, blocked integer)
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY SELECT u.id, cur.to_state, coalesce(cur.sort_key, 0),
           agg.total::int, agg.running::int, agg.unfinished::int, agg.blocked::int
    FROM unnest(ids) AS u(id)
    LEFT JOIN LATERAL (
        SELECT tt.to_state, tt.sort_key FROM tasker_task_transitions tt
        WHERE tt.task_id = u.id AND tt.most_recent
        OFFSET 0
    ) cur ON true
    CROSS JOIN LATERAL (
        SELECT count(*) AS total,
               count(*) FILTER (WHERE s.in_process OR x.state = 'in_progress') AS running,
               count(*) FILTER (WHERE x.state NOT IN ('complete', 'resolved_manually')) AS unfinished,
               count(*) FILTER (WHERE x.state = 'cancelled'
                                   OR (x.state IN ('pending', 'error')
                                       AND NOT (coalesce(s.attempts, 0) = 0
                                                OR (s.retryable AND coalesce(s.attempts, 0) < coalesce(s.retry_limit, 3)))))
                   AS blocked
        FROM tasker_workflow_steps s
        CROSS JOIN LATERAL (
            SELECT coalesce((SELECT st.to_state FROM tasker_workflow_step_transitions st
                             WHERE st.workflow_step_id = s.workflow_step_id AND st.most_recent), 'pending') AS state
            OFFSET 0
        ) x
        WHERE s.task_id = u.id
    ) agg;
END;
$$;
-- +goose StatementEnd

-- tasker_record_held_attempts locks the tasks of task_ids (in id order: the engine's lock
-- order is task, then step), then the steps whose claims are still held with the tokens of
-- outcomes (a JSON array of store.StepOutcome: {step_id, token, success, results, backoff,
-- permanent}), in id order, and writes those outcomes to their rows: attempts + 1,
-- last_attempted_at, the claim cleared, and either processed with the results, or the failure
-- in results, the requested delay, and retryable cleared for a permanent failure. It returns
-- the steps it recorded, with their tasks, the tokens of their claims and the positions of
-- their outcomes in outcomes (from 1); an outcome of a
-- claim that no longer holds its step (a step's stale token, given beside its current one) is
-- not written. The lock order holds within the statement: the tasks are locked by an
-- uncorrelated subquery that the step scan's filter needs before it lets any row through, so
-- every task lock is taken before the first step lock, and the steps are locked before they
-- are written. A claim token is drawn for one step's claim, so a step whose token is among the
-- outcomes' holds the claim of its own outcome; the steps are found by key (= ANY: an index
-- probe each), never by a join the planner could turn into a walk of the table.
-- +goose StatementBegin
CREATE FUNCTION tasker_record_held_attempts(task_ids bigint[], outcomes jsonb)
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

-- tasker_engine_record records finished attempts and settles their tasks, and returns the
-- claim tokens of the attempts it recorded. outcomes is a JSON array of
-- {step_id, token, success, results, backoff, permanent, to_state, metadata}: the attempt's
-- outcome (store.StepOutcome) and the move of its step off in_progress, with its metadata.
--
--  1. It locks the tasks of task_ids (in id order: the engine's lock order is task, then
--     step), then the steps whose claims are still held with the outcomes' tokens (in id
--     order), and writes their outcomes (attempts + 1, the claim cleared, processed with the
--     results, or the failure, the requested delay and retryable cleared for a permanent
--     failure). An outcome of a claim no longer held (cancelled, recovered) is not written.
--  2. Each recorded step moves from in_progress (its current row, which the held claim kept
--     current: every other writer that moves a claimed step clears the claim) to its
--     outcome's state. A step found in another state fails the call: nothing is written.
--  3. The tasks of the recorded steps are settled under their locks. A task with no step
--     running and every step complete or resolved_manually is all_complete; for the others
--     that may settle (none running; every step finished or one permanently blocked) the
--     execution context is read (tasker_read_execution_contexts).
--  4. The transitions are notified.
-- +goose StatementBegin
CREATE FUNCTION tasker_engine_record(task_ids bigint[], outcomes jsonb) RETURNS text[]
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

-- tasker_engine_start starts steps a claim has just marked in_process (its statement ran
-- before this call, in the same transaction, and holds their row locks). steps is a JSON
-- array of {step_id, task_id, task_new, from_state, sort_key, retry_metadata, metadata}: the
-- step's current transition as the claim read it (from_state null when it has none, sort_key
-- the last of its history, 0 when none) and the metadata of its moves, encoded by the state
-- machine: a step in error goes through pending (retry_metadata) to in_progress (metadata).
--
--  1. Each step's moves are written from the current transition the claim read, without
--     reading it again. A transition committed between the claim's snapshot and its lock (an
--     operator's, on a step no engine held) took the sort key the move would write: the call
--     then fails on the history's unique sort keys and writes nothing.
--  2. The pending tasks among those the claim found new (task_new) move to in_progress, with
--     task_metadata. Their rows are locked SKIP LOCKED (tasker_lock_tasks_skip_locked, whose
--     read of their current transitions follows the locks), so the claim, which already holds
--     step locks, never waits for a task lock (the lock order is task, then step); a task
--     skipped here is started by the claim of its next step, or settled by its finalisation.
--     A task no longer pending (another engine started it, an operator moved it) is left.
--  3. The transitions are notified.
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

-- +goose Down
DROP FUNCTION tasker_engine_start(jsonb, jsonb);
DROP FUNCTION tasker_engine_record(bigint[], jsonb);
DROP FUNCTION tasker_notify_transitions(text, json[]);
DROP FUNCTION tasker_tasks_settling(bigint[]);
DROP FUNCTION tasker_record_held_attempts(bigint[], jsonb);
