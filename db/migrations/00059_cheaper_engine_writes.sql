-- +goose Up
-- Cheaper writes for the engine's every step (BENCHMARKS.md "Engine: where its time goes"):
--
-- 1. A task row is updated once in its life by the engine (complete = true when it finishes).
--    With every page full, that update cannot stay on its page and writes a new entry in each
--    of the task's six indexes; with half of each page kept free for it, PostgreSQL updates the
--    row in place (a HOT update: no index is touched). The table takes about twice the pages.
ALTER TABLE tasker_tasks SET (fillfactor = 50);

-- 2. The transition notifications build each payload of at most 50 rows directly, instead of
--    building one JSON array of every row and splitting it again (tasker_notify_in_chunks).
--    Payloads, channels and their order are unchanged (see migration 00034).

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION tasker_notify_step_transitions() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    payload text;
BEGIN
    FOR payload IN
        SELECT json_build_object('rows', json_agg(c.row ORDER BY c.id))::text
        FROM (SELECT n.id, (row_number() OVER (ORDER BY n.id) - 1) / 50 AS chunk,
                     json_build_object('id', n.id, 'task_id', ws.task_id, 'step_id', n.workflow_step_id,
                                       'from', n.from_state, 'to', n.to_state) AS row
              FROM new_transitions n
              LEFT JOIN tasker_workflow_steps ws ON ws.workflow_step_id = n.workflow_step_id) c
        GROUP BY c.chunk
        ORDER BY c.chunk
    LOOP
        PERFORM pg_notify('tasker_step_transitions', payload);
    END LOOP;
    RETURN NULL;
END;
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION tasker_notify_task_transitions() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    payload text;
BEGIN
    FOR payload IN
        SELECT json_build_object('rows', json_agg(c.row ORDER BY c.id))::text
        FROM (SELECT n.id, (row_number() OVER (ORDER BY n.id) - 1) / 50 AS chunk,
                     json_build_object('id', n.id, 'task_id', n.task_id, 'from', n.from_state, 'to', n.to_state) AS row
              FROM new_transitions n) c
        GROUP BY c.chunk
        ORDER BY c.chunk
    LOOP
        PERFORM pg_notify('tasker_task_transitions', payload);
    END LOOP;
    RETURN NULL;
END;
$$;
-- +goose StatementEnd

-- 3. tasker_mark_task_inactive_steps no longer looks for steps to flag for the tasks that the
--    inserting statement keeps active: every row it wrote for the task goes from pending or
--    in_progress (or, the first transition, from no row: pending) to pending or in_progress,
--    so a task that the engine starts no longer probes its steps. All of the task's rows are
--    looked at, not only its new current one: one statement may write several transitions of
--    a task (error -> pending -> in_progress is one batch of the state machine), and the
--    current one alone (pending -> in_progress) does not say that the task was active before.
--    The flags it writes are unchanged (migration 00050).

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION tasker_mark_task_inactive_steps() RETURNS trigger LANGUAGE plpgsql
SET enable_seqscan = off SET enable_bitmapscan = off AS $$
BEGIN
    UPDATE tasker_workflow_steps ws
    SET task_inactive = n.inactive
    FROM (SELECT task_id, to_state NOT IN ('pending', 'in_progress') AS inactive
          FROM new_task_states
          WHERE most_recent
            AND NOT (to_state IN ('pending', 'in_progress')
                     AND coalesce(from_state IN ('pending', 'in_progress'), sort_key = 1)
                     AND task_id NOT IN (SELECT o.task_id FROM new_task_states o
                                         WHERE NOT (o.to_state IN ('pending', 'in_progress')
                                                    AND coalesce(o.from_state IN ('pending', 'in_progress'), o.sort_key = 1))))) n
    WHERE ws.task_id = n.task_id AND NOT ws.processed AND ws.task_inactive <> n.inactive;
    RETURN NULL;
END;
$$;
-- +goose StatementEnd

-- +goose Down
-- +goose StatementBegin
CREATE OR REPLACE FUNCTION tasker_mark_task_inactive_steps() RETURNS trigger LANGUAGE plpgsql
SET enable_seqscan = off SET enable_bitmapscan = off AS $$
BEGIN
    UPDATE tasker_workflow_steps ws
    SET task_inactive = n.inactive
    FROM (SELECT task_id, to_state NOT IN ('pending', 'in_progress') AS inactive
          FROM new_task_states WHERE most_recent) n
    WHERE ws.task_id = n.task_id AND NOT ws.processed AND ws.task_inactive <> n.inactive;
    RETURN NULL;
END;
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION tasker_notify_task_transitions() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM tasker_notify_in_chunks('tasker_task_transitions', (
        SELECT json_agg(json_build_object('id', n.id, 'task_id', n.task_id,
                                          'from', n.from_state, 'to', n.to_state) ORDER BY n.id)
        FROM new_transitions n));
    RETURN NULL;
END;
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION tasker_notify_step_transitions() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM tasker_notify_in_chunks('tasker_step_transitions', (
        SELECT json_agg(json_build_object('id', n.id, 'task_id', ws.task_id, 'step_id', n.workflow_step_id,
                                          'from', n.from_state, 'to', n.to_state) ORDER BY n.id)
        FROM new_transitions n
        LEFT JOIN tasker_workflow_steps ws ON ws.workflow_step_id = n.workflow_step_id));
    RETURN NULL;
END;
$$;
-- +goose StatementEnd

ALTER TABLE tasker_tasks RESET (fillfactor);
