-- +goose Up
-- The step-transition notification (00059) joined the statement's new rows to
-- tasker_workflow_steps for each row's task_id. The new rows come from a transition table,
-- which has no statistics, and PL/pgSQL keeps the plan it made first on a connection until the
-- table's statistics change: planned on small or stale statistics, the join became a hash join
-- that reads every step, kept for every later statement (seen: 1.5 ms for 32 transitions over
-- 10,000 steps, where 100 statement pairs of 32 step transitions each cost 116-140 µs per step
-- with that plan and 51-65 µs with this function). The task id is now looked up per row by
-- primary key, and the function plans with sequential scans disabled, so that the lookup is an
-- index probe whatever the table's size when it was planned (a per-row lookup planned as a scan
-- of a tiny table would read the whole table once per row). The payloads are byte for byte
-- those of 00034 and 00059. The engine's and the service's own connections were already
-- protected by their session settings (database.EngineSettings: sequential scans off;
-- plan_cache_mode force_custom_plan); the function no longer depends on the session that
-- writes the transitions (a psql session, a script, any other program).

-- +goose StatementBegin
CREATE OR REPLACE FUNCTION tasker_notify_step_transitions() RETURNS trigger LANGUAGE plpgsql
SET enable_seqscan = off AS $$
DECLARE
    payload text;
BEGIN
    FOR payload IN
        SELECT json_build_object('rows', json_agg(c.row ORDER BY c.id))::text
        FROM (SELECT n.id, (row_number() OVER (ORDER BY n.id) - 1) / 50 AS chunk,
                     json_build_object('id', n.id,
                                       'task_id', (SELECT ws.task_id FROM tasker_workflow_steps ws
                                                   WHERE ws.workflow_step_id = n.workflow_step_id),
                                       'step_id', n.workflow_step_id,
                                       'from', n.from_state, 'to', n.to_state) AS row
              FROM new_transitions n) c
        GROUP BY c.chunk
        ORDER BY c.chunk
    LOOP
        PERFORM pg_notify('tasker_step_transitions', payload);
    END LOOP;
    RETURN NULL;
END;
$$;
-- +goose StatementEnd

-- +goose Down
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
