-- +goose Up
-- tasker_read_task_detail (00040_read_task_detail.sql) with narrow rows: the same rows, kinds,
-- order and values, in 37 typed columns that every kind shares instead of 73 columns of which
-- each kind fills its own. A row's width is a cost paid by every node of every statement of
-- the function (the projection of each statement, the tuplestore that returns the rows) and by
-- the client's decoding of each row, whatever the number of nulls. The readiness and DAG rows
-- no longer repeat what the step row says (ids, name, state, attempts, retry limit, backoff,
-- last attempt: the same expressions over the same row of tasker_workflow_steps); the reader
-- (internal/models TaskDetailByID) fills them from the step. Without details the steps are
-- read by a statement of their own, which no longer carries the readiness and DAG probes that
-- each call had to set up whether it ran them or not.
--
-- kind: 1 the task, 2 a task transition, 3 a step, 4 a step transition, in that order (as in
-- 00040). Columns by kind, null where nothing is listed:
--   column  task             transition (2, 4)        step
--   id1     task_id          id                       workflow_step_id
--   id2     named_task_id    workflow_step_id (4)     task_id
--   id3     namespace id     task_id                  named_step_id
--   s1..s5  initiator, source_system, reason, identity_hash, status
--                            to_state, from_state     name, status, blocking_reason (details)
--   j1..j4  tags, context    metadata                 inputs, results, parent_step_ids,
--                                                     child_step_ids (details)
--   t1..t6  requested_at, created_at, updated_at
--                            created_at, updated_at   last_attempted_at, processed_at,
--                                                     created_at, updated_at, last_failure_at,
--                                                     next_retry_at (details)
--   n1..n9                   sort_key                 retry_limit, attempts,
--                                                     backoff_request_seconds, total_parents,
--                                                     completed_parents, parent_count,
--                                                     child_count, min_depth_from_root,
--                                                     dependency_level (the last six: details)
--   b1..b9  complete         most_recent              retryable, processed, in_process,
--                                                     skippable, dependencies_satisfied,
--                                                     retry_eligible, ready_for_execution,
--                                                     is_root_step, is_leaf_step (the last
--                                                     five: details)
DROP FUNCTION tasker_read_task_detail(bigint, boolean, boolean, boolean, boolean);
-- +goose StatementBegin
CREATE FUNCTION tasker_read_task_detail(task bigint, task_transitions boolean, steps boolean,
                                        details boolean, step_transitions boolean)
RETURNS TABLE (
    kind smallint,
    id1 bigint, id2 bigint, id3 bigint,
    s1 varchar, s2 varchar, s3 varchar, s4 varchar, s5 varchar,
    j1 jsonb, j2 jsonb, j3 jsonb, j4 jsonb,
    t1 timestamptz, t2 timestamptz, t3 timestamptz, t4 timestamptz, t5 timestamptz,
    t6 timestamptz,
    n1 integer, n2 integer, n3 integer, n4 integer, n5 integer, n6 integer, n7 integer,
    n8 integer, n9 integer,
    b1 boolean, b2 boolean, b3 boolean, b4 boolean, b5 boolean, b6 boolean, b7 boolean,
    b8 boolean, b9 boolean)
LANGUAGE plpgsql STABLE
SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET jit = off AS $$
#variable_conflict use_column
DECLARE
    keys bigint[];
BEGIN
    RETURN QUERY SELECT 1::smallint, t.task_id, t.named_task_id,
        (SELECT n.task_namespace_id FROM tasker_named_tasks n WHERE n.named_task_id = t.named_task_id),
        t.initiator, t.source_system, t.reason, t.identity_hash,
        coalesce((SELECT tt.to_state FROM tasker_task_transitions tt
            WHERE tt.task_id = t.task_id AND tt.most_recent), 'pending')::varchar,
        t.tags, t.context, NULL::jsonb, NULL::jsonb,
        t.requested_at, t.created_at, t.updated_at, NULL::timestamptz, NULL::timestamptz,
        NULL::timestamptz,
        NULL::integer, NULL::integer, NULL::integer, NULL::integer, NULL::integer,
        NULL::integer, NULL::integer, NULL::integer, NULL::integer,
        t.complete, NULL::boolean, NULL::boolean, NULL::boolean, NULL::boolean, NULL::boolean,
        NULL::boolean, NULL::boolean, NULL::boolean
    FROM tasker_tasks t WHERE t.task_id = task;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF task_transitions THEN
        RETURN QUERY SELECT 2::smallint, tr.id, NULL::bigint, tr.task_id,
            tr.to_state, tr.from_state, NULL::varchar, NULL::varchar, NULL::varchar,
            tr.metadata, NULL::jsonb, NULL::jsonb, NULL::jsonb,
            tr.created_at, tr.updated_at, NULL::timestamptz, NULL::timestamptz, NULL::timestamptz,
            NULL::timestamptz,
            tr.sort_key, NULL::integer, NULL::integer, NULL::integer, NULL::integer,
            NULL::integer, NULL::integer, NULL::integer, NULL::integer,
            tr.most_recent, NULL::boolean, NULL::boolean, NULL::boolean, NULL::boolean,
            NULL::boolean, NULL::boolean, NULL::boolean, NULL::boolean
        FROM tasker_task_transitions tr WHERE tr.task_id = task ORDER BY tr.sort_key;
    END IF;
    IF NOT steps AND NOT step_transitions THEN
        RETURN;
    END IF;
    keys := ARRAY(SELECT s.workflow_step_id FROM tasker_workflow_steps s WHERE s.task_id = task);
    IF steps AND details THEN
        RETURN QUERY SELECT 3::smallint, s.workflow_step_id, s.task_id, s.named_step_id,
            r.name, r.current_state::varchar, r.blocking_reason, NULL::varchar, NULL::varchar,
            s.inputs, s.results, d.parent_step_ids, d.child_step_ids,
            s.last_attempted_at, s.processed_at, s.created_at, s.updated_at, r.last_failure_at,
            r.next_retry_at,
            coalesce(s.retry_limit, 3), coalesce(s.attempts, 0), s.backoff_request_seconds,
            r.total_parents, r.completed_parents, d.parent_count, d.child_count,
            d.min_depth_from_root, d.dependency_level,
            s.retryable, s.processed, s.in_process, s.skippable, r.dependencies_satisfied,
            r.retry_eligible, r.ready_for_execution, d.is_root_step, d.is_leaf_step
        FROM tasker_workflow_steps s
        LEFT JOIN LATERAL (SELECT * FROM tasker_step_readiness_statuses r
            WHERE r.workflow_step_id = s.workflow_step_id OFFSET 0) r ON true
        LEFT JOIN LATERAL (SELECT * FROM tasker_step_dag_relationships d
            WHERE d.workflow_step_id = s.workflow_step_id OFFSET 0) d ON true
        WHERE s.workflow_step_id = ANY(keys)
        ORDER BY s.workflow_step_id;
    ELSIF steps THEN
        RETURN QUERY SELECT 3::smallint, s.workflow_step_id, s.task_id, s.named_step_id,
            (SELECT ns.name FROM tasker_named_steps ns WHERE ns.named_step_id = s.named_step_id),
            coalesce((SELECT st.to_state FROM tasker_workflow_step_transitions st
                WHERE st.workflow_step_id = s.workflow_step_id AND st.most_recent), 'pending')::varchar,
            NULL::varchar, NULL::varchar, NULL::varchar,
            s.inputs, s.results, NULL::jsonb, NULL::jsonb,
            s.last_attempted_at, s.processed_at, s.created_at, s.updated_at, NULL::timestamptz,
            NULL::timestamptz,
            coalesce(s.retry_limit, 3), coalesce(s.attempts, 0), s.backoff_request_seconds,
            NULL::integer, NULL::integer, NULL::integer, NULL::integer, NULL::integer,
            NULL::integer,
            s.retryable, s.processed, s.in_process, s.skippable, NULL::boolean, NULL::boolean,
            NULL::boolean, NULL::boolean, NULL::boolean
        FROM tasker_workflow_steps s
        WHERE s.workflow_step_id = ANY(keys)
        ORDER BY s.workflow_step_id;
    END IF;
    IF step_transitions THEN
        RETURN QUERY SELECT 4::smallint, tr.id, tr.workflow_step_id, task,
            tr.to_state, tr.from_state, NULL::varchar, NULL::varchar, NULL::varchar,
            tr.metadata, NULL::jsonb, NULL::jsonb, NULL::jsonb,
            tr.created_at, tr.updated_at, NULL::timestamptz, NULL::timestamptz, NULL::timestamptz,
            NULL::timestamptz,
            tr.sort_key, NULL::integer, NULL::integer, NULL::integer, NULL::integer,
            NULL::integer, NULL::integer, NULL::integer, NULL::integer,
            tr.most_recent, NULL::boolean, NULL::boolean, NULL::boolean, NULL::boolean,
            NULL::boolean, NULL::boolean, NULL::boolean, NULL::boolean
        FROM tasker_workflow_step_transitions tr
        WHERE tr.workflow_step_id = ANY(keys)
        ORDER BY tr.workflow_step_id, tr.sort_key;
    END IF;
END
$$;
-- +goose StatementEnd

-- +goose Down
DROP FUNCTION tasker_read_task_detail(bigint, boolean, boolean, boolean, boolean);
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
