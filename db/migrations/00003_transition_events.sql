-- +goose Up
-- Publishes every transition, and every batch of new tasks, with NOTIFY so that other
-- processes can react (workers wake up, subscriptions fan out). Notifications are delivered at
-- commit and are only a wake-up: the tables remain the source of truth, and a listener that
-- missed one catches up from them.
--   tasker_step_transitions: {"id", "task_id", "step_id", "from", "to"}
--   tasker_task_transitions: {"id", "task_id", "from", "to"}
--   tasker_tasks_created:    {"count"} once per inserting statement

-- +goose StatementBegin
CREATE FUNCTION tasker_notify_step_transition() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('tasker_step_transitions', json_build_object(
        'id', NEW.id,
        'task_id', (SELECT task_id FROM tasker_workflow_steps WHERE workflow_step_id = NEW.workflow_step_id),
        'step_id', NEW.workflow_step_id,
        'from', NEW.from_state,
        'to', NEW.to_state)::text);
    RETURN NULL;
END;
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE FUNCTION tasker_notify_task_transition() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('tasker_task_transitions', json_build_object(
        'id', NEW.id, 'task_id', NEW.task_id, 'from', NEW.from_state, 'to', NEW.to_state)::text);
    RETURN NULL;
END;
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE FUNCTION tasker_notify_tasks_created() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    n bigint;
BEGIN
    SELECT count(*) INTO n FROM new_tasks;
    IF n > 0 THEN
        PERFORM pg_notify('tasker_tasks_created', json_build_object('count', n)::text);
    END IF;
    RETURN NULL;
END;
$$;
-- +goose StatementEnd

CREATE TRIGGER tasker_workflow_step_transitions_notify
    AFTER INSERT ON tasker_workflow_step_transitions
    FOR EACH ROW EXECUTE FUNCTION tasker_notify_step_transition();

CREATE TRIGGER tasker_task_transitions_notify
    AFTER INSERT ON tasker_task_transitions
    FOR EACH ROW EXECUTE FUNCTION tasker_notify_task_transition();

CREATE TRIGGER tasker_tasks_created_notify
    AFTER INSERT ON tasker_tasks
    REFERENCING NEW TABLE AS new_tasks
    FOR EACH STATEMENT EXECUTE FUNCTION tasker_notify_tasks_created();

-- +goose Down
DROP TRIGGER tasker_tasks_created_notify ON tasker_tasks;
DROP TRIGGER tasker_task_transitions_notify ON tasker_task_transitions;
DROP TRIGGER tasker_workflow_step_transitions_notify ON tasker_workflow_step_transitions;
DROP FUNCTION tasker_notify_tasks_created();
DROP FUNCTION tasker_notify_task_transition();
DROP FUNCTION tasker_notify_step_transition();
