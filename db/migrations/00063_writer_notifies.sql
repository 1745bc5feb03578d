-- +goose Up
-- A transaction that sets tasker.writer_notifies to 'on' sends the notifications of the
-- transitions it writes itself, and the transition tables' notification triggers do not fire
-- for it. The engine's transactions do (their connections carry the setting,
-- database.EngineSettings; the notes and their sending are internal/store's notify.go):
-- building each statement's payloads in SQL, with each step's task looked up, cost about a
-- third of a millisecond per statement, three statements of every batch the engine records,
-- where the engine knows every row's id and task already. Channels and payloads are those of
-- 00034, 00059 and 00061. Every other writer (operators' actions, task creation, a psql
-- session) still gets the triggers' notifications. The triggers are 00051's with the setting
-- added to their condition, and stay enabled ALWAYS.
DROP TRIGGER tasker_task_transitions_notify ON tasker_task_transitions;
CREATE TRIGGER tasker_task_transitions_notify
    AFTER INSERT ON tasker_task_transitions
    REFERENCING NEW TABLE AS new_transitions
    FOR EACH STATEMENT WHEN (current_setting('tasker.bulk_load', true) IS DISTINCT FROM 'on'
                             AND current_setting('tasker.writer_notifies', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION tasker_notify_task_transitions();

DROP TRIGGER tasker_workflow_step_transitions_notify ON tasker_workflow_step_transitions;
CREATE TRIGGER tasker_workflow_step_transitions_notify
    AFTER INSERT ON tasker_workflow_step_transitions
    REFERENCING NEW TABLE AS new_transitions
    FOR EACH STATEMENT WHEN (current_setting('tasker.bulk_load', true) IS DISTINCT FROM 'on'
                             AND current_setting('tasker.writer_notifies', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION tasker_notify_step_transitions();

ALTER TABLE tasker_task_transitions ENABLE ALWAYS TRIGGER tasker_task_transitions_notify;
ALTER TABLE tasker_workflow_step_transitions ENABLE ALWAYS TRIGGER tasker_workflow_step_transitions_notify;

-- +goose Down
DROP TRIGGER tasker_workflow_step_transitions_notify ON tasker_workflow_step_transitions;
CREATE TRIGGER tasker_workflow_step_transitions_notify
    AFTER INSERT ON tasker_workflow_step_transitions
    REFERENCING NEW TABLE AS new_transitions
    FOR EACH STATEMENT WHEN (current_setting('tasker.bulk_load', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION tasker_notify_step_transitions();

DROP TRIGGER tasker_task_transitions_notify ON tasker_task_transitions;
CREATE TRIGGER tasker_task_transitions_notify
    AFTER INSERT ON tasker_task_transitions
    REFERENCING NEW TABLE AS new_transitions
    FOR EACH STATEMENT WHEN (current_setting('tasker.bulk_load', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION tasker_notify_task_transitions();

ALTER TABLE tasker_task_transitions ENABLE ALWAYS TRIGGER tasker_task_transitions_notify;
ALTER TABLE tasker_workflow_step_transitions ENABLE ALWAYS TRIGGER tasker_workflow_step_transitions_notify;
