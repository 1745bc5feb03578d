-- tasker_task_workflow_summaries: one row per task: its execution context plus its roots, ready
-- and blocked steps (with why each is blocked), deepest dependency level and how much of its
-- ready work can run in parallel (SEMANTICS §6). Arrays are jsonb, ascending by step id, '[]'
-- when empty; blocked_step_ids and blocking_reasons are parallel.
--
-- Built on tasker_task_execution_contexts (one source for the counts and verdicts) and one
-- aggregate over the readiness view of the task's steps only (correlated on task_id), so a
-- filter on task_id reads that task alone.
CREATE OR REPLACE VIEW tasker_task_workflow_summaries AS
SELECT
    ec.task_id,
    ec.named_task_id,
    ec.status,
    ec.total_steps,
    ec.pending_steps,
    ec.in_progress_steps,
    ec.completed_steps,
    ec.failed_steps,
    ec.ready_steps,
    ec.permanently_blocked_steps,
    ec.execution_status,
    ec.recommended_action,
    ec.completion_percentage,
    ec.health_status,
    s.root_step_ids,
    s.root_step_count,
    s.ready_step_ids,
    s.blocked_step_ids,
    s.blocking_reasons,
    s.max_dependency_level,
    CASE
        WHEN ec.ready_steps > 5 THEN 'high_parallelism'
        WHEN ec.ready_steps >= 2 THEN 'moderate_parallelism'
        WHEN ec.ready_steps = 1 THEN 'sequential_only'
        ELSE 'no_ready_work'
    END::varchar(32) AS parallelism_potential
FROM tasker_task_execution_contexts ec
CROSS JOIN LATERAL (
    SELECT
        coalesce(jsonb_agg(r.workflow_step_id ORDER BY r.workflow_step_id)
            FILTER (WHERE r.total_parents = 0), '[]'::jsonb) AS root_step_ids,
        (count(*) FILTER (WHERE r.total_parents = 0))::integer AS root_step_count,
        coalesce(jsonb_agg(r.workflow_step_id ORDER BY r.workflow_step_id)
            FILTER (WHERE r.ready_for_execution), '[]'::jsonb) AS ready_step_ids,
        coalesce(jsonb_agg(r.workflow_step_id ORDER BY r.workflow_step_id)
            FILTER (WHERE r.current_state IN ('pending', 'error') AND NOT r.ready_for_execution),
            '[]'::jsonb) AS blocked_step_ids,
        coalesce(jsonb_agg(r.blocking_reason ORDER BY r.workflow_step_id)
            FILTER (WHERE r.current_state IN ('pending', 'error') AND NOT r.ready_for_execution),
            '[]'::jsonb) AS blocking_reasons,
        coalesce(max(x.dependency_level), 0) AS max_dependency_level
    FROM tasker_step_readiness_statuses r
    CROSS JOIN LATERAL (
        SELECT ws.in_process, ws.dependency_level
        FROM tasker_workflow_steps ws
        WHERE ws.workflow_step_id = r.workflow_step_id
        LIMIT 1
    ) x
    WHERE r.task_id = ec.task_id
) s;
