-- tasker_task_execution_contexts: one row per task, with the counts of its steps by state and
-- readiness and the verdicts derived from them (SEMANTICS §5). A task without steps has a row
-- with zero counts.
--
-- The view is driven by tasker_tasks; the task's current state comes from the partial unique
-- "most_recent" index and the step counts from one aggregate over the readiness view of that
-- task's steps only (correlated on task_id), so a filter on task_id reads that task alone.
CREATE OR REPLACE VIEW tasker_task_execution_contexts AS
SELECT
    t.task_id,
    t.named_task_id,
    coalesce(cur.to_state, 'pending')::varchar(32) AS status,
    agg.total_steps,
    agg.pending_steps,
    agg.in_progress_steps,
    agg.completed_steps,
    agg.failed_steps,
    agg.ready_steps,
    agg.permanently_blocked_steps,
    CASE
        WHEN agg.ready_steps > 0 THEN 'has_ready_steps'
        WHEN agg.in_progress_steps > 0 THEN 'processing'
        WHEN agg.permanently_blocked_steps > 0 THEN 'blocked_by_failures'
        WHEN agg.total_steps > 0 AND agg.completed_steps = agg.total_steps THEN 'all_complete'
        ELSE 'waiting_for_dependencies'
    END::varchar(32) AS execution_status,
    CASE
        WHEN agg.ready_steps > 0 THEN 'execute_ready_steps'
        WHEN agg.in_progress_steps > 0 THEN 'wait_for_completion'
        WHEN agg.permanently_blocked_steps > 0 THEN 'handle_failures'
        WHEN agg.total_steps > 0 AND agg.completed_steps = agg.total_steps THEN 'finalize_task'
        ELSE 'wait_for_dependencies'
    END::varchar(32) AS recommended_action,
    CASE
        WHEN agg.total_steps = 0 THEN 0::numeric(5, 2)
        ELSE round(agg.completed_steps * 100.0 / agg.total_steps, 2)::numeric(5, 2)
    END AS completion_percentage,
    CASE
        WHEN agg.failed_steps = 0 AND agg.permanently_blocked_steps = 0 THEN 'healthy'
        WHEN agg.permanently_blocked_steps > 0 AND agg.ready_steps = 0 THEN 'blocked'
        ELSE 'recovering'
    END::varchar(32) AS health_status
FROM tasker_tasks t
LEFT JOIN LATERAL (
    SELECT tt.to_state
    FROM tasker_task_transitions tt
    WHERE tt.task_id = t.task_id AND tt.most_recent
    LIMIT 1
) cur ON true
CROSS JOIN LATERAL (
    SELECT
        count(*)::integer AS total_steps,
        (count(*) FILTER (WHERE r.current_state = 'pending'))::integer AS pending_steps,
        (count(*) FILTER (WHERE r.current_state = 'in_progress' OR x.in_process))::integer
            AS in_progress_steps,
        (count(*) FILTER (WHERE r.current_state IN ('complete', 'resolved_manually')))::integer
            AS completed_steps,
        (count(*) FILTER (WHERE r.current_state = 'error'))::integer AS failed_steps,
        (count(*) FILTER (WHERE r.ready_for_execution))::integer AS ready_steps,
        (count(*) FILTER (WHERE
            (r.current_state IN ('pending', 'error') AND NOT r.retry_eligible)
            OR r.current_state = 'cancelled'))::integer AS permanently_blocked_steps
    FROM tasker_step_readiness_statuses r
    CROSS JOIN LATERAL (
        SELECT ws.in_process, ws.dependency_level
        FROM tasker_workflow_steps ws
        WHERE ws.workflow_step_id = r.workflow_step_id
        LIMIT 1
    ) x
    WHERE r.task_id = t.task_id
) agg;
