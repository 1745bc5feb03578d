-- +goose Up
-- A step with its readiness and its DAG row in one read, for the GraphQL API's requests that
-- select both a task's steps and their readiness or DAG (one statement where there were
-- three). Each row holds the step as tasker_read_steps returns it (00037_read_functions.sql)
-- in columns prefixed step_, its row of tasker_step_readiness_statuses prefixed readiness_ and
-- its row of tasker_step_dag_relationships prefixed dag_. Both view rows are taken from their
-- views, probed by the step's primary key behind a fence, and the step's name and state from
-- its readiness row (the same expressions), so every step is read once. It takes step ids, or
-- task ids when by_task, and returns the rows by step id, or by task id then step id when
-- by_task.
-- +goose StatementBegin
CREATE FUNCTION tasker_read_step_details(by_task boolean, ids bigint[])
RETURNS TABLE (
    step_workflow_step_id bigint, step_task_id bigint, step_named_step_id bigint,
    step_retryable boolean, step_retry_limit integer, step_attempts integer,
    step_last_attempted_at timestamptz, step_backoff_request_seconds integer,
    step_processed boolean, step_processed_at timestamptz, step_in_process boolean,
    step_skippable boolean, step_inputs jsonb, step_results jsonb, step_created_at timestamptz,
    step_updated_at timestamptz, step_name varchar, step_status varchar,
    readiness_workflow_step_id bigint, readiness_task_id bigint, readiness_named_step_id bigint,
    readiness_name varchar, readiness_current_state varchar, readiness_dependencies_satisfied boolean,
    readiness_retry_eligible boolean, readiness_ready_for_execution boolean,
    readiness_last_failure_at timestamptz, readiness_next_retry_at timestamptz,
    readiness_total_parents integer, readiness_completed_parents integer,
    readiness_attempts integer, readiness_retry_limit integer,
    readiness_backoff_request_seconds integer, readiness_last_attempted_at timestamptz,
    readiness_blocking_reason varchar, readiness_processed boolean, readiness_in_process boolean,
    dag_workflow_step_id bigint, dag_task_id bigint, dag_named_step_id bigint,
    dag_parent_step_ids jsonb, dag_child_step_ids jsonb, dag_parent_count integer,
    dag_child_count integer, dag_is_root_step boolean, dag_is_leaf_step boolean,
    dag_min_depth_from_root integer, dag_dependency_level integer)
LANGUAGE plpgsql STABLE
SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET jit = off AS $$
BEGIN
    RETURN QUERY
    SELECT s.workflow_step_id, s.task_id, s.named_step_id, s.retryable, coalesce(s.retry_limit, 3),
           coalesce(s.attempts, 0), s.last_attempted_at, s.backoff_request_seconds, s.processed,
           s.processed_at, s.in_process, s.skippable, s.inputs, s.results, s.created_at,
           s.updated_at, r.name, r.current_state::varchar, r.*, d.*
    FROM tasker_workflow_steps s
    CROSS JOIN LATERAL (SELECT * FROM tasker_step_readiness_statuses r
        WHERE r.workflow_step_id = s.workflow_step_id OFFSET 0) r
    CROSS JOIN LATERAL (SELECT * FROM tasker_step_dag_relationships d
        WHERE d.workflow_step_id = s.workflow_step_id OFFSET 0) d
    WHERE s.workflow_step_id = ANY(tasker_read_step_keys(by_task, ids))
    ORDER BY CASE WHEN by_task THEN s.task_id END, s.workflow_step_id;
END
$$;
-- +goose StatementEnd

-- +goose Down
DROP FUNCTION tasker_read_step_details(boolean, bigint[]);
