-- +goose Up
-- Two writers write only references they have made true themselves:
--   - task creation (internal/orchestration CreateTasks, store.InsertTasks and InsertSteps): a
--     step's task is inserted by the same transaction, its named step and the task's named task
--     are registered before it and never deleted, and both ends of every edge are steps of the
--     same new task (the insert joins them);
--   - the engine's transactions (store.EngineTx): they insert transitions of tasks and steps
--     whose rows they hold locked, and update step and task rows without changing a key.
-- Their foreign-key checks, one lookup per reference, cost more than the rows: about 390 of
-- 490 ms for 1,000 five-step tasks with their edges, and four lookups per one-step task run.
--
-- PostgreSQL runs no foreign-key check where session_replication_role is replica (the mode in
-- which logical replication applies rows that were checked where they were written).
-- tasker_trust_references(is_local) turns that mode on, for the rest of the current transaction
-- (is_local) or of the session, when the role may set it (a superuser, or a role granted SET ON
-- PARAMETER session_replication_role on PostgreSQL 15 or later), and returns whether it did;
-- otherwise it changes nothing and the checks run. Constraints that are not triggers (NOT NULL,
-- CHECK, unique indexes) hold in both modes. Deletes never run in that mode: a cascade is a
-- foreign-key action too.
--
-- In that mode a trigger fires only when it is enabled ALWAYS, so every trigger of the tables
-- these writers write is made ALWAYS: the notifications of new tasks and of transitions, the
-- flag of a task's inactive steps, and the triggers that keep the DAG depths. They then also
-- fire where a logical replica applies these tables, which keeps a replica's derived columns
-- and notifications what they are on the primary.
--
-- `tasker seed` used the replica mode to skip the notifications and the inactive-step flag as
-- well (it writes a whole history at once, sets the flag in its own statement and sends one
-- wake-up per batch). Those four triggers now skip themselves when the transaction has set
-- tasker.bulk_load to on (set_config(..., true)), which only the seed's bulk mode does.
-- +goose StatementBegin
CREATE FUNCTION tasker_trust_references(is_local boolean) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    allowed boolean;
BEGIN
    allowed := current_setting('is_superuser') = 'on';
    IF NOT allowed AND current_setting('server_version_num')::int >= 150000 THEN
        EXECUTE $q$SELECT has_parameter_privilege('session_replication_role', 'SET')$q$ INTO allowed;
    END IF;
    IF allowed THEN
        PERFORM set_config('session_replication_role', 'replica', is_local);
    END IF;
    RETURN allowed;
END;
$$;
-- +goose StatementEnd

DROP TRIGGER tasker_tasks_created_notify ON tasker_tasks;
CREATE TRIGGER tasker_tasks_created_notify
    AFTER INSERT ON tasker_tasks
    REFERENCING NEW TABLE AS new_tasks
    FOR EACH STATEMENT WHEN (current_setting('tasker.bulk_load', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION tasker_notify_tasks_created();

DROP TRIGGER tasker_task_transitions_mark_steps ON tasker_task_transitions;
CREATE TRIGGER tasker_task_transitions_mark_steps
    AFTER INSERT ON tasker_task_transitions
    REFERENCING NEW TABLE AS new_task_states
    FOR EACH STATEMENT WHEN (current_setting('tasker.bulk_load', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION tasker_mark_task_inactive_steps();

DROP TRIGGER tasker_task_transitions_notify ON tasker_task_transitions;
CREATE TRIGGER tasker_task_transitions_notify
    AFTER INSERT ON tasker_task_transitions
    REFERENCING NEW TABLE AS new_transitions
    FOR EACH STATEMENT WHEN (current_setting('tasker.bulk_load', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION tasker_notify_task_transitions();

DROP TRIGGER tasker_workflow_step_transitions_notify ON tasker_workflow_step_transitions;
CREATE TRIGGER tasker_workflow_step_transitions_notify
    AFTER INSERT ON tasker_workflow_step_transitions
    REFERENCING NEW TABLE AS new_transitions
    FOR EACH STATEMENT WHEN (current_setting('tasker.bulk_load', true) IS DISTINCT FROM 'on')
    EXECUTE FUNCTION tasker_notify_step_transitions();

ALTER TABLE tasker_tasks ENABLE ALWAYS TRIGGER tasker_tasks_created_notify;
ALTER TABLE tasker_workflow_step_edges ENABLE ALWAYS TRIGGER tasker_workflow_step_edges_dag_insert;
ALTER TABLE tasker_workflow_step_edges ENABLE ALWAYS TRIGGER tasker_workflow_step_edges_dag_update;
ALTER TABLE tasker_workflow_step_edges ENABLE ALWAYS TRIGGER tasker_workflow_step_edges_dag_delete;
ALTER TABLE tasker_task_transitions ENABLE ALWAYS TRIGGER tasker_task_transitions_mark_steps;
ALTER TABLE tasker_task_transitions ENABLE ALWAYS TRIGGER tasker_task_transitions_notify;
ALTER TABLE tasker_workflow_step_transitions ENABLE ALWAYS TRIGGER tasker_workflow_step_transitions_notify;

-- +goose Down
DROP TRIGGER tasker_workflow_step_transitions_notify ON tasker_workflow_step_transitions;
CREATE TRIGGER tasker_workflow_step_transitions_notify
    AFTER INSERT ON tasker_workflow_step_transitions
    REFERENCING NEW TABLE AS new_transitions
    FOR EACH STATEMENT EXECUTE FUNCTION tasker_notify_step_transitions();
DROP TRIGGER tasker_task_transitions_notify ON tasker_task_transitions;
CREATE TRIGGER tasker_task_transitions_notify
    AFTER INSERT ON tasker_task_transitions
    REFERENCING NEW TABLE AS new_transitions
    FOR EACH STATEMENT EXECUTE FUNCTION tasker_notify_task_transitions();
DROP TRIGGER tasker_task_transitions_mark_steps ON tasker_task_transitions;
CREATE TRIGGER tasker_task_transitions_mark_steps
    AFTER INSERT ON tasker_task_transitions
    REFERENCING NEW TABLE AS new_task_states
    FOR EACH STATEMENT EXECUTE FUNCTION tasker_mark_task_inactive_steps();
DROP TRIGGER tasker_tasks_created_notify ON tasker_tasks;
CREATE TRIGGER tasker_tasks_created_notify
    AFTER INSERT ON tasker_tasks
    REFERENCING NEW TABLE AS new_tasks
    FOR EACH STATEMENT EXECUTE FUNCTION tasker_notify_tasks_created();
ALTER TABLE tasker_workflow_step_edges ENABLE TRIGGER tasker_workflow_step_edges_dag_delete;
ALTER TABLE tasker_workflow_step_edges ENABLE TRIGGER tasker_workflow_step_edges_dag_update;
ALTER TABLE tasker_workflow_step_edges ENABLE TRIGGER tasker_workflow_step_edges_dag_insert;
DROP FUNCTION tasker_trust_references(boolean);
