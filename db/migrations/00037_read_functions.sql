-- +goose Up
-- The GraphQL API's batch reads (internal/models readers), one function each. The service's
-- connections plan every statement at each execution (plan_cache_mode = force_custom_plan,
-- internal/database), and for a read of the live views by task or step ids planning costs
-- several times the execution (about 0.5 to 1.5 ms against 0.1 to 0.3 ms for one task of a
-- 100,000-step database). A PL/pgSQL function keeps the plans of its statements for the
-- session, and these ones plan them generically once: each statement filters by = ANY(ids)
-- on an indexed key, a shape whose generic plan is index-driven (the plan tests of
-- internal/models check every live view read under generic plans). Sequential scans are
-- weighed out and every other row is reached from the keyed one by a fenced probe (a scalar
-- subquery, or a LATERAL subquery behind OFFSET 0, as the views do), so that a plan made
-- while the tables were small or empty stays an index plan as they grow; a plan is made
-- again whenever a table it reads is analysed.
--
-- The functions that read a view return its columns, in its order: a new version of the view
-- with other columns needs a new version of its function (internal/models' tests compare
-- every such function with its view). The functions of per-step rows take step ids, or task
-- ids when by_task, and return the rows by step id, or by task id then step id when by_task.

-- The step ids of the per-step readers: ids themselves, or the steps of the tasks ids when
-- by_task.
-- +goose StatementBegin
CREATE FUNCTION tasker_read_step_keys(by_task boolean, ids bigint[]) RETURNS bigint[]
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF by_task THEN
        RETURN ARRAY(SELECT s.workflow_step_id FROM tasker_workflow_steps s WHERE s.task_id = ANY(ids));
    END IF;
    RETURN ids;
END
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE FUNCTION tasker_read_tasks(ids bigint[])
RETURNS TABLE (task_id bigint, named_task_id bigint, complete boolean, requested_at timestamptz,
               initiator varchar, source_system varchar, reason varchar, tags jsonb, context jsonb,
               identity_hash varchar, created_at timestamptz, updated_at timestamptz,
               task_namespace_id bigint, status varchar)
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    SELECT t.task_id, t.named_task_id, t.complete, t.requested_at, t.initiator, t.source_system,
           t.reason, t.tags, t.context, t.identity_hash, t.created_at, t.updated_at,
           (SELECT n.task_namespace_id FROM tasker_named_tasks n WHERE n.named_task_id = t.named_task_id),
           coalesce((SELECT tt.to_state FROM tasker_task_transitions tt
               WHERE tt.task_id = t.task_id AND tt.most_recent), 'pending')::varchar
    FROM tasker_tasks t
    WHERE t.task_id = ANY(ids) ORDER BY t.task_id;
END
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE FUNCTION tasker_read_steps(by_task boolean, ids bigint[])
RETURNS TABLE (workflow_step_id bigint, task_id bigint, named_step_id bigint, retryable boolean,
               retry_limit integer, attempts integer, last_attempted_at timestamptz,
               backoff_request_seconds integer, processed boolean, processed_at timestamptz,
               in_process boolean, skippable boolean, inputs jsonb, results jsonb,
               created_at timestamptz, updated_at timestamptz, name varchar, status varchar)
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    SELECT s.workflow_step_id, s.task_id, s.named_step_id, s.retryable,
           coalesce(s.retry_limit, 3), coalesce(s.attempts, 0), s.last_attempted_at,
           s.backoff_request_seconds, s.processed, s.processed_at, s.in_process, s.skippable,
           s.inputs, s.results, s.created_at, s.updated_at,
           (SELECT ns.name FROM tasker_named_steps ns WHERE ns.named_step_id = s.named_step_id),
           coalesce((SELECT st.to_state FROM tasker_workflow_step_transitions st
               WHERE st.workflow_step_id = s.workflow_step_id AND st.most_recent), 'pending')::varchar
    FROM tasker_workflow_steps s
    WHERE s.workflow_step_id = ANY(tasker_read_step_keys(by_task, ids))
    ORDER BY CASE WHEN by_task THEN s.task_id END, s.workflow_step_id;
END
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE FUNCTION tasker_read_step_transitions(by_task boolean, ids bigint[])
RETURNS TABLE (id bigint, workflow_step_id bigint, to_state varchar, from_state varchar, metadata jsonb,
               sort_key integer, most_recent boolean, created_at timestamptz, updated_at timestamptz,
               task_id bigint)
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
BEGIN
    -- By step then sort key, whatever by_task.
    RETURN QUERY
    SELECT tr.id, s.workflow_step_id, tr.to_state, tr.from_state, tr.metadata, tr.sort_key,
           tr.most_recent, tr.created_at, tr.updated_at, s.task_id
    FROM tasker_workflow_steps s
    CROSS JOIN LATERAL (SELECT * FROM tasker_workflow_step_transitions tr
        WHERE tr.workflow_step_id = s.workflow_step_id ORDER BY tr.sort_key OFFSET 0) tr
    WHERE s.workflow_step_id = ANY(tasker_read_step_keys(by_task, ids))
    ORDER BY s.workflow_step_id, tr.sort_key;
END
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE FUNCTION tasker_read_task_transitions(ids bigint[])
RETURNS TABLE (id bigint, task_id bigint, to_state varchar, from_state varchar, metadata jsonb,
               sort_key integer, most_recent boolean, created_at timestamptz, updated_at timestamptz)
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    SELECT tr.id, k.task_id, tr.to_state, tr.from_state, tr.metadata, tr.sort_key, tr.most_recent,
           tr.created_at, tr.updated_at
    FROM (SELECT DISTINCT unnest(ids) AS task_id) k
    CROSS JOIN LATERAL (SELECT * FROM tasker_task_transitions tr
        WHERE tr.task_id = k.task_id ORDER BY tr.sort_key OFFSET 0) tr
    ORDER BY k.task_id, tr.sort_key;
END
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE FUNCTION tasker_read_readiness(by_task boolean, ids bigint[])
RETURNS TABLE (workflow_step_id bigint, task_id bigint, named_step_id bigint, name varchar,
               current_state varchar, dependencies_satisfied boolean, retry_eligible boolean,
               ready_for_execution boolean, last_failure_at timestamptz, next_retry_at timestamptz,
               total_parents integer, completed_parents integer, attempts integer, retry_limit integer,
               backoff_request_seconds integer, last_attempted_at timestamptz, blocking_reason varchar,
               processed boolean, in_process boolean)
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY SELECT * FROM tasker_step_readiness_statuses
        WHERE workflow_step_id = ANY(tasker_read_step_keys(by_task, ids))
        ORDER BY CASE WHEN by_task THEN task_id END, workflow_step_id;
END
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE FUNCTION tasker_read_dags(by_task boolean, ids bigint[])
RETURNS TABLE (workflow_step_id bigint, task_id bigint, named_step_id bigint, parent_step_ids jsonb,
               child_step_ids jsonb, parent_count integer, child_count integer, is_root_step boolean,
               is_leaf_step boolean, min_depth_from_root integer, dependency_level integer)
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY SELECT * FROM tasker_step_dag_relationships
        WHERE workflow_step_id = ANY(tasker_read_step_keys(by_task, ids))
        ORDER BY CASE WHEN by_task THEN task_id END, workflow_step_id;
END
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE FUNCTION tasker_read_execution_contexts(ids bigint[])
RETURNS TABLE (task_id bigint, named_task_id bigint, status varchar, total_steps integer,
               pending_steps integer, in_progress_steps integer, completed_steps integer,
               failed_steps integer, ready_steps integer, permanently_blocked_steps integer,
               execution_status varchar, recommended_action varchar, completion_percentage numeric,
               health_status varchar)
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY SELECT * FROM tasker_task_execution_contexts WHERE task_id = ANY(ids) ORDER BY task_id;
END
$$;
-- +goose StatementEnd

-- +goose StatementBegin
CREATE FUNCTION tasker_read_workflow_summaries(ids bigint[])
RETURNS TABLE (task_id bigint, named_task_id bigint, status varchar, total_steps integer,
               pending_steps integer, in_progress_steps integer, completed_steps integer,
               failed_steps integer, ready_steps integer, permanently_blocked_steps integer,
               execution_status varchar, recommended_action varchar, completion_percentage numeric,
               health_status varchar, root_step_ids jsonb, root_step_count integer,
               ready_step_ids jsonb, blocked_step_ids jsonb, blocking_reasons jsonb,
               max_dependency_level integer, parallelism_potential varchar)
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY SELECT * FROM tasker_task_workflow_summaries WHERE task_id = ANY(ids) ORDER BY task_id;
END
$$;
-- +goose StatementEnd

-- Every read function plans its statements with these settings, local to the call.
-- +goose StatementBegin
DO $$
DECLARE f regprocedure;
BEGIN
    FOR f IN SELECT p.oid FROM pg_proc p
             WHERE p.proname LIKE 'tasker\_read\_%' AND p.prolang = (SELECT oid FROM pg_language WHERE lanname = 'plpgsql')
    LOOP
        EXECUTE format('ALTER FUNCTION %s SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET jit = off', f);
    END LOOP;
END
$$;
-- +goose StatementEnd

-- +goose Down
DROP FUNCTION tasker_read_workflow_summaries(bigint[]);
DROP FUNCTION tasker_read_execution_contexts(bigint[]);
DROP FUNCTION tasker_read_dags(boolean, bigint[]);
DROP FUNCTION tasker_read_readiness(boolean, bigint[]);
DROP FUNCTION tasker_read_task_transitions(bigint[]);
DROP FUNCTION tasker_read_step_transitions(boolean, bigint[]);
DROP FUNCTION tasker_read_steps(boolean, bigint[]);
DROP FUNCTION tasker_read_tasks(bigint[]);
DROP FUNCTION tasker_read_step_keys(boolean, bigint[]);
