-- +goose Up
-- Publishes transitions once per inserting statement instead of once per row: a batch of
-- transitions (a claim, a recorded batch of attempts) sends one NOTIFY per 50 rows, so the
-- commit's work on the notification queue (taken under one lock for the whole server) no
-- longer grows with every row. The payload lists the rows, each with the fields of the
-- previous per-row payload:
--   tasker_step_transitions: {"rows": [{"id", "task_id", "step_id", "from", "to"}, ...]}
--   tasker_task_transitions: {"rows": [{"id", "task_id", "from", "to"}, ...]}
-- in id order, at most 50 rows (under 8,000 bytes) each. internal/events expands a payload
-- into one event per row, so subscribers see the same events as before.

-- +goose StatementBegin
-- tasker_notify_in_chunks sends the elements of the JSON array rows on channel, in order, as
-- {"rows": [...]} payloads of at most 50 elements each; an empty or null array sends nothing.
CREATE FUNCTION tasker_notify_in_chunks(channel text, rows json) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    payload text;
BEGIN
    FOR payload IN
        SELECT json_build_object('rows', json_agg(r.value ORDER BY r.n))::text
        FROM json_array_elements(coalesce(rows, '[]'::json)) WITH ORDINALITY AS r(value, n)
        GROUP BY (r.n - 1) / 50
        ORDER BY (r.n - 1) / 50
    LOOP
        PERFORM pg_notify(channel, payload);
    END LOOP;
END;
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE FUNCTION tasker_notify_step_transitions() RETURNS trigger LANGUAGE plpgsql AS $$
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

-- +goose StatementBegin
CREATE FUNCTION tasker_notify_task_transitions() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM tasker_notify_in_chunks('tasker_task_transitions', (
        SELECT json_agg(json_build_object('id', n.id, 'task_id', n.task_id,
                                          'from', n.from_state, 'to', n.to_state) ORDER BY n.id)
        FROM new_transitions n));
    RETURN NULL;
END;
$$;
-- +goose StatementEnd

DROP TRIGGER tasker_workflow_step_transitions_notify ON tasker_workflow_step_transitions;
DROP TRIGGER tasker_task_transitions_notify ON tasker_task_transitions;

CREATE TRIGGER tasker_workflow_step_transitions_notify
    AFTER INSERT ON tasker_workflow_step_transitions
    REFERENCING NEW TABLE AS new_transitions
    FOR EACH STATEMENT EXECUTE FUNCTION tasker_notify_step_transitions();

CREATE TRIGGER tasker_task_transitions_notify
    AFTER INSERT ON tasker_task_transitions
    REFERENCING NEW TABLE AS new_transitions
    FOR EACH STATEMENT EXECUTE FUNCTION tasker_notify_task_transitions();

-- +goose Down
DROP TRIGGER tasker_task_transitions_notify ON tasker_task_transitions;
DROP TRIGGER tasker_workflow_step_transitions_notify ON tasker_workflow_step_transitions;
DROP FUNCTION tasker_notify_task_transitions();
DROP FUNCTION tasker_notify_step_transitions();
DROP FUNCTION tasker_notify_in_chunks(text, json);

CREATE TRIGGER tasker_workflow_step_transitions_notify
    AFTER INSERT ON tasker_workflow_step_transitions
    FOR EACH ROW EXECUTE FUNCTION tasker_notify_step_transition();

CREATE TRIGGER tasker_task_transitions_notify
    AFTER INSERT ON tasker_task_transitions
    FOR EACH ROW EXECUTE FUNCTION tasker_notify_task_transition();
