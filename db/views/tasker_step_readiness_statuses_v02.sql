-- tasker_step_readiness_statuses, version 2: version 1 plus the step's own processed and
-- in_process flags as the last two columns (the columns of SEMANTICS §3 are unchanged, in
-- the same order). A filter on them is a filter on tasker_workflow_steps itself, so a query
-- that asks for unfinished steps ("NOT processed AND NOT in_process", which every ready step
-- and every step blocked for a reason after in_progress satisfies) lets the planner walk the
-- partial indexes of unfinished steps instead of every step ever run.
--
-- tasker_step_readiness_statuses: one row per workflow step, saying whether it can run now and,
-- when it cannot, why (SEMANTICS §3).
--
-- The view is driven by tasker_workflow_steps; everything else is computed per step in LATERAL
-- subqueries or scalar subqueries correlated on the step id, each fenced (LIMIT, aggregate or
-- scalar subquery) so that it is an index probe: the step's name by primary key, the current
-- state through the partial unique "most_recent" index, the parents through the edges
-- (to_step_id) index. A filter on task_id or workflow_step_id therefore reaches the steps
-- indexes and the cost of a read grows with the steps read, never with the database.
CREATE OR REPLACE VIEW tasker_step_readiness_statuses AS
SELECT
    ws.workflow_step_id,
    ws.task_id,
    ws.named_step_id,
    (SELECT ns.name FROM tasker_named_steps ns WHERE ns.named_step_id = ws.named_step_id) AS name,
    st.current_state,
    st.dependencies_satisfied,
    el.retry_eligible,
    rd.ready_for_execution,
    st.last_failure_at,
    CASE WHEN st.current_state IN ('pending', 'error') AND NOT ws.processed
        THEN greatest(bo.explicit_at, bo.implicit_at)
    END AS next_retry_at,
    st.total_parents,
    st.completed_parents,
    st.attempts,
    st.retry_limit,
    ws.backoff_request_seconds,
    ws.last_attempted_at,
    CASE
        WHEN rd.ready_for_execution THEN NULL
        WHEN ws.processed THEN 'already_processed'
        WHEN st.current_state = 'in_progress' OR ws.in_process THEN 'in_progress'
        WHEN st.current_state IN ('complete', 'cancelled', 'resolved_manually') THEN 'terminal_state'
        WHEN NOT st.dependencies_satisfied THEN 'dependencies_not_satisfied'
        WHEN NOT el.retry_eligible AND st.attempts >= st.retry_limit THEN 'retries_exhausted'
        WHEN NOT el.retry_eligible THEN 'not_retryable'
        WHEN NOT bo.elapsed THEN 'backoff'
    END::varchar(32) AS blocking_reason,
    ws.processed,
    ws.in_process
FROM tasker_workflow_steps ws
LEFT JOIN LATERAL (
    SELECT t.to_state, t.created_at
    FROM tasker_workflow_step_transitions t
    WHERE t.workflow_step_id = ws.workflow_step_id AND t.most_recent
    LIMIT 1
) cur ON true
CROSS JOIN LATERAL (
    SELECT
        count(*)::integer AS total_parents,
        (count(*) FILTER (WHERE (
            SELECT pt.to_state
            FROM tasker_workflow_step_transitions pt
            WHERE pt.workflow_step_id = e.from_step_id AND pt.most_recent
        ) IN ('complete', 'resolved_manually')))::integer AS completed_parents
    FROM tasker_workflow_step_edges e
    WHERE e.to_step_id = ws.workflow_step_id
) par
CROSS JOIN LATERAL (
    SELECT
        coalesce(cur.to_state, 'pending')::varchar(32) AS current_state,
        par.total_parents,
        par.completed_parents,
        par.completed_parents = par.total_parents AS dependencies_satisfied,
        coalesce(ws.attempts, 0) AS attempts,
        coalesce(ws.retry_limit, 3) AS retry_limit,
        CASE WHEN cur.to_state = 'error' THEN cur.created_at END AS last_failure_at
) st
CROSS JOIN LATERAL (
    SELECT st.attempts = 0 OR (ws.retryable AND st.attempts < st.retry_limit) AS retry_eligible
) el
CROSS JOIN LATERAL (
    SELECT
        x.explicit_at,
        x.implicit_at,
        (x.explicit_at IS NULL OR x.explicit_at <= now())
            AND (x.implicit_at IS NULL OR x.implicit_at <= now()) AS elapsed
    FROM (
        SELECT
            ws.last_attempted_at + ws.backoff_request_seconds * interval '1 second' AS explicit_at,
            -- min(2^attempts, 30) seconds; 2^5 already exceeds 30, so the shift never overflows.
            st.last_failure_at
                + least(1 << least(st.attempts, 5), 30) * interval '1 second' AS implicit_at
    ) x
) bo
CROSS JOIN LATERAL (
    SELECT
        st.current_state IN ('pending', 'error')
        AND NOT ws.processed
        AND st.dependencies_satisfied
        AND el.retry_eligible
        AND NOT ws.in_process
        AND bo.elapsed AS ready_for_execution
) rd;
