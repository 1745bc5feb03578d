-- +goose Up
-- Task creation (internal/orchestration CreateTasks, store.InsertTasks and store.InsertSteps)
-- writes rows whose references it has just made true: a step's task is inserted by the same
-- transaction, its named step and the task's named task are registered before it and never
-- deleted, and both ends of every edge are steps of the same new task (the insert joins them).
-- The foreign-key checks of those rows cost more than the rows themselves (measured: about 390
-- of 490 ms for 1,000 five-step tasks with their edges: one lookup per reference).
--
-- PostgreSQL runs no foreign-key check in a transaction whose session_replication_role is
-- replica (the mode in which logical replication applies rows that were checked where they
-- were written). tasker_trust_creation() turns that on for the rest of the current transaction
-- when the role may set it (a superuser, or one granted SET ON PARAMETER
-- session_replication_role on PostgreSQL 15 or later) and returns whether it did; otherwise it
-- changes nothing and the checks run. Constraints that are not triggers (NOT NULL, CHECK,
-- unique indexes) hold in both modes.
--
-- In that mode a trigger fires only when it is enabled ALWAYS, so every trigger of the tables
-- creation writes is made ALWAYS: the notification of new tasks and the triggers that keep the
-- DAG depths. They then also fire where a logical replica applies these tables, which keeps a
-- replica's depths and notifications what they are on the primary.
-- +goose StatementBegin
CREATE FUNCTION tasker_trust_creation() RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    allowed boolean;
BEGIN
    allowed := current_setting('is_superuser') = 'on';
    IF NOT allowed AND current_setting('server_version_num')::int >= 150000 THEN
        EXECUTE $q$SELECT has_parameter_privilege('session_replication_role', 'SET')$q$ INTO allowed;
    END IF;
    IF allowed THEN
        PERFORM set_config('session_replication_role', 'replica', true);
    END IF;
    RETURN allowed;
END;
$$;
-- +goose StatementEnd

ALTER TABLE tasker_tasks ENABLE ALWAYS TRIGGER tasker_tasks_created_notify;
ALTER TABLE tasker_workflow_step_edges ENABLE ALWAYS TRIGGER tasker_workflow_step_edges_dag_insert;
ALTER TABLE tasker_workflow_step_edges ENABLE ALWAYS TRIGGER tasker_workflow_step_edges_dag_update;
ALTER TABLE tasker_workflow_step_edges ENABLE ALWAYS TRIGGER tasker_workflow_step_edges_dag_delete;

-- +goose Down
ALTER TABLE tasker_workflow_step_edges ENABLE TRIGGER tasker_workflow_step_edges_dag_delete;
ALTER TABLE tasker_workflow_step_edges ENABLE TRIGGER tasker_workflow_step_edges_dag_update;
ALTER TABLE tasker_workflow_step_edges ENABLE TRIGGER tasker_workflow_step_edges_dag_insert;
ALTER TABLE tasker_tasks ENABLE TRIGGER tasker_tasks_created_notify;
DROP FUNCTION tasker_trust_creation();
