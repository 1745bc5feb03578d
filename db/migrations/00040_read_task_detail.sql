-- +goose Up
-- One task with what the GraphQL API's "task detail" asks of it, in one statement: the task,
-- its transitions, its steps (with their readiness and DAG rows when details) and its steps'
-- transitions. A request for one task that selects its steps reads them all through this
-- function rather than through four statements (internal/models TaskDetailByID).
--
-- The rows are those the read functions of 00037_read_functions.sql and
-- 00039_read_step_details.sql return for the one task, in the same order (internal/models'
-- tests compare them), read by statements of the same shapes: index-driven generic plans,
-- every view row probed by its step's primary key behind a fence. The statements are the
-- function's own rather than calls of those functions: nested calls, each with its settings,
-- its own plans and its rows materialised twice, cost about a fifth more backend time. The
-- task's step ids are read once. Each row says what it holds in kind, and the columns of the
-- other kinds are null:
--   1  the task: the columns of tasker_read_tasks, prefixed task_ (one row, first; no row at
--      all when the task does not exist);
--   2  a task transition: the columns of tasker_read_task_transitions, prefixed tr_, with a
--      null tr_workflow_step_id, by sort key, when task_transitions;
--   3  a step: the columns of tasker_read_step_details (step_, readiness_, dag_), by step id,
--      when steps; the readiness_ and dag_ columns are null unless details;
--   4  a step transition: the columns of tasker_read_step_transitions, prefixed tr_, by step
--      then sort key, when step_transitions.
-- The kinds come in that order.
-- +goose StatementBegin
CREATE FUNCTION tasker_read_task_detail(task bigint, task_transitions boolean, steps boolean,
                                        details boolean, step_transitions boolean)
RETURNS TABLE (
    kind smallint,
    task_task_id bigint, task_named_task_id bigint, task_complete boolean,
    task_requested_at timestamptz, task_initiator varchar, task_source_system varchar,
    task_reason varchar, task_tags jsonb, task_context jsonb, task_identity_hash varchar,
    task_created_at timestamptz, task_updated_at timestamptz, task_task_namespace_id bigint,
    task_status varchar,
    tr_id bigint, tr_workflow_step_id bigint, tr_task_id bigint, tr_to_state varchar,
    tr_from_state varchar, tr_metadata jsonb, tr_sort_key integer, tr_most_recent boolean,
    tr_created_at timestamptz, tr_updated_at timestamptz,
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
#variable_conflict use_column
DECLARE
    keys bigint[];
BEGIN
    RETURN QUERY SELECT 1::smallint, t.task_id, t.named_task_id, t.complete, t.requested_at,
        t.initiator, t.source_system, t.reason, t.tags, t.context, t.identity_hash, t.created_at,
        t.updated_at,
        (SELECT n.task_namespace_id FROM tasker_named_tasks n WHERE n.named_task_id = t.named_task_id),
        coalesce((SELECT tt.to_state FROM tasker_task_transitions tt
            WHERE tt.task_id = t.task_id AND tt.most_recent), 'pending')::varchar,
        NULL::bigint, NULL::bigint, NULL::bigint, NULL::varchar, NULL::varchar, NULL::jsonb,
        NULL::integer, NULL::boolean, NULL::timestamptz, NULL::timestamptz,
        NULL::bigint, NULL::bigint, NULL::bigint, NULL::boolean, NULL::integer, NULL::integer,
        NULL::timestamptz, NULL::integer, NULL::boolean, NULL::timestamptz, NULL::boolean,
        NULL::boolean, NULL::jsonb, NULL::jsonb, NULL::timestamptz, NULL::timestamptz,
        NULL::varchar, NULL::varchar,
        (NULL::tasker_step_readiness_statuses).*, (NULL::tasker_step_dag_relationships).*
    FROM tasker_tasks t WHERE t.task_id = task;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF task_transitions THEN
        RETURN QUERY SELECT 2::smallint,
            NULL::bigint, NULL::bigint, NULL::boolean, NULL::timestamptz, NULL::varchar,
            NULL::varchar, NULL::varchar, NULL::jsonb, NULL::jsonb, NULL::varchar,
            NULL::timestamptz, NULL::timestamptz, NULL::bigint, NULL::varchar,
            tr.id, NULL::bigint, tr.task_id, tr.to_state, tr.from_state, tr.metadata, tr.sort_key,
            tr.most_recent, tr.created_at, tr.updated_at,
            NULL::bigint, NULL::bigint, NULL::bigint, NULL::boolean, NULL::integer, NULL::integer,
            NULL::timestamptz, NULL::integer, NULL::boolean, NULL::timestamptz, NULL::boolean,
            NULL::boolean, NULL::jsonb, NULL::jsonb, NULL::timestamptz, NULL::timestamptz,
            NULL::varchar, NULL::varchar,
            (NULL::tasker_step_readiness_statuses).*, (NULL::tasker_step_dag_relationships).*
        FROM tasker_task_transitions tr WHERE tr.task_id = task ORDER BY tr.sort_key;
    END IF;
    IF NOT steps AND NOT step_transitions THEN
        RETURN;
    END IF;
    keys := ARRAY(SELECT s.workflow_step_id FROM tasker_workflow_steps s WHERE s.task_id = task);
    IF steps THEN
        -- A step's name and state: from its readiness row with details (the same expressions
        -- as tasker_read_steps), else as tasker_read_steps reads them.
        RETURN QUERY SELECT 3::smallint,
            NULL::bigint, NULL::bigint, NULL::boolean, NULL::timestamptz, NULL::varchar,
            NULL::varchar, NULL::varchar, NULL::jsonb, NULL::jsonb, NULL::varchar,
            NULL::timestamptz, NULL::timestamptz, NULL::bigint, NULL::varchar,
            NULL::bigint, NULL::bigint, NULL::bigint, NULL::varchar, NULL::varchar, NULL::jsonb,
            NULL::integer, NULL::boolean, NULL::timestamptz, NULL::timestamptz,
            s.workflow_step_id, s.task_id, s.named_step_id, s.retryable, coalesce(s.retry_limit, 3),
            coalesce(s.attempts, 0), s.last_attempted_at, s.backoff_request_seconds, s.processed,
            s.processed_at, s.in_process, s.skippable, s.inputs, s.results, s.created_at,
            s.updated_at,
            CASE WHEN details THEN r.name ELSE
                (SELECT ns.name FROM tasker_named_steps ns WHERE ns.named_step_id = s.named_step_id) END,
            CASE WHEN details THEN r.current_state::varchar ELSE
                coalesce((SELECT st.to_state FROM tasker_workflow_step_transitions st
                    WHERE st.workflow_step_id = s.workflow_step_id AND st.most_recent), 'pending')::varchar END,
            r.*, d.*
        FROM tasker_workflow_steps s
        LEFT JOIN LATERAL (SELECT * FROM tasker_step_readiness_statuses r
            WHERE details AND r.workflow_step_id = s.workflow_step_id OFFSET 0) r ON true
        LEFT JOIN LATERAL (SELECT * FROM tasker_step_dag_relationships d
            WHERE details AND d.workflow_step_id = s.workflow_step_id OFFSET 0) d ON true
        WHERE s.workflow_step_id = ANY(keys)
        ORDER BY s.workflow_step_id;
    END IF;
    IF step_transitions THEN
        RETURN QUERY SELECT 4::smallint,
            NULL::bigint, NULL::bigint, NULL::boolean, NULL::timestamptz, NULL::varchar,
            NULL::varchar, NULL::varchar, NULL::jsonb, NULL::jsonb, NULL::varchar,
            NULL::timestamptz, NULL::timestamptz, NULL::bigint, NULL::varchar,
            tr.id, tr.workflow_step_id, task, tr.to_state, tr.from_state, tr.metadata,
            tr.sort_key, tr.most_recent, tr.created_at, tr.updated_at,
            NULL::bigint, NULL::bigint, NULL::bigint, NULL::boolean, NULL::integer, NULL::integer,
            NULL::timestamptz, NULL::integer, NULL::boolean, NULL::timestamptz, NULL::boolean,
            NULL::boolean, NULL::jsonb, NULL::jsonb, NULL::timestamptz, NULL::timestamptz,
            NULL::varchar, NULL::varchar,
            (NULL::tasker_step_readiness_statuses).*, (NULL::tasker_step_dag_relationships).*
        FROM tasker_workflow_step_transitions tr
        WHERE tr.workflow_step_id = ANY(keys)
        ORDER BY tr.workflow_step_id, tr.sort_key;
    END IF;
END
$$;
-- +goose StatementEnd

-- +goose Down
DROP FUNCTION tasker_read_task_detail(bigint, boolean, boolean, boolean, boolean);
