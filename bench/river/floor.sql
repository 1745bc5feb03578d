-- bench_write_floor drains one-step tasks whose steps succeed at their first attempt, writing
-- for each exactly the rows tasker's engine writes (SEMANTICS: the step's claim and its two
-- transitions, the task's two transitions, each clearing the previous most_recent, the step's
-- recorded attempt; the triggers then mark the task complete), and nothing else: no client, no
-- round trip, no handler, no read the engine makes to decide (readiness beyond the step's own
-- columns and its parents, the task's execution context). It is the database's side of a drain
-- at its cheapest, a floor under the engine's cost per step.
--
-- It writes as the engine's transactions do: without foreign-key checks where the role may
-- (tasker_trust_references), and with the transitions' notifications sent by the writer, one
-- per channel and 50 rows, in the triggers' format, instead of by the notification triggers
-- (tasker.writer_notifies).
--
-- Like the engine, it finds a step's task among the batch's by a binary search of the batch's
-- ascending step ids (width_bucket), so that its work grows with the batch, not its square.
--
-- Like the engine, each transaction records the batch claimed by the one before it and claims
-- the next batch of up to batch ready steps (FOR UPDATE SKIP LOCKED, so several backends can
-- drain one database at once). It returns when it finds no step to claim and has none to
-- record. Call it with planner settings that keep to the indexes (see floor.go): a fresh
-- database has no statistics for the tables it fills.
CREATE PROCEDURE bench_write_floor(batch int, worker text)
LANGUAGE plpgsql AS $$
DECLARE
    held_steps bigint[] := '{}';
    held_tasks bigint[] := '{}';
    steps bigint[];
    tasks bigint[];
    started jsonb := jsonb_build_object('event', 'execution_requested', 'attempt', 1, 'worker_id', worker);
    completed jsonb := jsonb_build_object('event', 'completed', 'attempt', 1, 'worker_id', worker, 'duration_ms', 0);
    task_started jsonb := jsonb_build_object('event', 'start_requested', 'worker_id', worker);
    task_completed jsonb := jsonb_build_object('event', 'completed', 'total_steps', 1, 'completed_steps', 1);
    step_notes json[];
    task_notes json[];
    more json[];
BEGIN
    -- For the session, as the engine's connections: set once, since a change of
    -- session_replication_role discards every cached plan.
    PERFORM set_config('tasker.writer_notifies', 'on', false);
    PERFORM tasker_trust_references(false);
    LOOP
        step_notes := '{}';
        task_notes := '{}';
        IF cardinality(held_steps) > 0 THEN
            -- The attempts of the steps claimed by the previous transaction, all successes.
            UPDATE tasker_workflow_steps
            SET attempts = coalesce(attempts, 0) + 1, last_attempted_at = now(), processed = true,
                processed_at = now(), in_process = false, results = '{}', claimed_by = NULL,
                claim_token = NULL, claim_expires_at = NULL, updated_at = now()
            WHERE workflow_step_id = ANY (held_steps) AND in_process;
            -- A one-step task's step is its task's only one: held_steps[i] is of held_tasks[i].
            WITH previous AS (
                UPDATE tasker_workflow_step_transitions SET most_recent = false, updated_at = now()
                WHERE workflow_step_id = ANY (held_steps) AND most_recent
                RETURNING workflow_step_id, to_state, sort_key),
            written AS (
                INSERT INTO tasker_workflow_step_transitions (workflow_step_id, to_state, from_state, metadata, sort_key, most_recent)
                SELECT workflow_step_id, 'complete', to_state, completed, sort_key + 1, true FROM previous
                RETURNING id, workflow_step_id, from_state, to_state)
            SELECT array_agg(json_build_object('id', w.id, 'task_id', held_tasks[width_bucket(w.workflow_step_id, held_steps)],
                                               'step_id', w.workflow_step_id,
                                               'from', w.from_state, 'to', w.to_state) ORDER BY w.id)
            INTO more
            FROM written w;
            step_notes := step_notes || more;
            WITH previous AS (
                UPDATE tasker_task_transitions SET most_recent = false, updated_at = now()
                WHERE task_id = ANY (held_tasks) AND most_recent
                RETURNING task_id, to_state, sort_key),
            written AS (
                INSERT INTO tasker_task_transitions (task_id, to_state, from_state, metadata, sort_key, most_recent)
                SELECT task_id, 'complete', to_state, task_completed, sort_key + 1, true FROM previous
                RETURNING id, task_id, from_state, to_state)
            SELECT array_agg(json_build_object('id', id, 'task_id', task_id, 'from', from_state, 'to', to_state) ORDER BY id)
            INTO more FROM written;
            task_notes := task_notes || more;
        END IF;
        -- The next batch: ready steps of active tasks, first attempts. The retry-eligibility
        -- condition is the partial index's (tasker_workflow_steps_runnable_idx) word for word,
        -- so that the walk can use it; the first-attempt condition then narrows it.
        WITH ready AS (
            SELECT s.workflow_step_id FROM tasker_workflow_steps s
            WHERE NOT s.processed AND NOT s.in_process AND NOT s.task_inactive
              AND (coalesce(s.attempts, 0) = 0 OR (s.retryable AND coalesce(s.attempts, 0) < coalesce(s.retry_limit, 3)))
              AND coalesce(s.attempts, 0) = 0
              AND NOT EXISTS (SELECT 1 FROM tasker_workflow_step_edges e
                              WHERE e.to_step_id = s.workflow_step_id
                                AND coalesce((SELECT p.to_state FROM tasker_workflow_step_transitions p
                                              WHERE p.workflow_step_id = e.from_step_id AND p.most_recent), 'pending')
                                    NOT IN ('complete', 'resolved_manually'))
            ORDER BY s.workflow_step_id
            LIMIT batch
            FOR UPDATE OF s SKIP LOCKED),
        claimed AS (
            UPDATE tasker_workflow_steps s
            SET in_process = true, claimed_by = worker, claim_token = gen_random_uuid(),
                claim_expires_at = now() + interval '5 minutes', updated_at = now()
            FROM ready WHERE s.workflow_step_id = ready.workflow_step_id
            RETURNING s.workflow_step_id, s.task_id)
        SELECT array_agg(workflow_step_id ORDER BY workflow_step_id), array_agg(task_id ORDER BY workflow_step_id)
        INTO steps, tasks FROM claimed;
        IF steps IS NOT NULL THEN
            WITH written AS (
                INSERT INTO tasker_workflow_step_transitions (workflow_step_id, to_state, from_state, metadata, sort_key, most_recent)
                SELECT id, 'in_progress', NULL, started, 1, true FROM unnest(steps) id
                RETURNING id, workflow_step_id, to_state)
            SELECT array_agg(json_build_object('id', w.id, 'task_id', tasks[width_bucket(w.workflow_step_id, steps)],
                                               'step_id', w.workflow_step_id,
                                               'from', NULL, 'to', w.to_state) ORDER BY w.id)
            INTO more
            FROM written w;
            step_notes := step_notes || more;
            WITH written AS (
                INSERT INTO tasker_task_transitions (task_id, to_state, from_state, metadata, sort_key, most_recent)
                SELECT id, 'in_progress', NULL, task_started, 1, true FROM unnest(tasks) id
                RETURNING id, task_id, to_state)
            SELECT array_agg(json_build_object('id', id, 'task_id', task_id, 'from', NULL, 'to', to_state) ORDER BY id)
            INTO more FROM written;
            task_notes := task_notes || more;
        END IF;
        -- The transaction's transitions, per channel, 50 to a notification, in id order.
        PERFORM pg_notify('tasker_step_transitions', json_build_object('rows', json_agg(n ORDER BY i))::text)
        FROM unnest(step_notes) WITH ORDINALITY u(n, i) GROUP BY (i - 1) / 50;
        PERFORM pg_notify('tasker_task_transitions', json_build_object('rows', json_agg(n ORDER BY i))::text)
        FROM unnest(task_notes) WITH ORDINALITY u(n, i) GROUP BY (i - 1) / 50;
        COMMIT;
        EXIT WHEN steps IS NULL AND cardinality(held_steps) = 0;
        held_steps := coalesce(steps, '{}');
        held_tasks := coalesce(tasks, '{}');
    END LOOP;
END
$$;
