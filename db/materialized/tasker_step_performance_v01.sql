-- tasker_step_performance: one row per (namespace, named step) that has at least one workflow
-- step, aggregated over the whole transition history of those steps.
--   executions: transitions into in_progress
--   successes:  transitions into complete
--   failures:   transitions into error
--   retries:    transitions error -> pending
--   error_rate: failures / executions, rounded to 4 decimals; 0 without executions
--   durations:  for each transition into in_progress whose next transition of the same step
--               (by sort_key) goes to complete or error, the time between the two, in
--               milliseconds: avg, p50 and p95 (percentile_cont) and max; null when no
--               execution has finished.
-- The namespace is that of the step's task's named task, so a step type shared by several
-- namespaces has one row in each.
CREATE MATERIALIZED VIEW tasker_step_performance AS
WITH history AS (
    SELECT st.workflow_step_id,
           st.to_state,
           st.from_state,
           CASE WHEN st.to_state = 'in_progress'
                 AND lead(st.to_state) OVER w IN ('complete', 'error')
                THEN extract(epoch FROM lead(st.created_at) OVER w - st.created_at) * 1000
           END AS duration_ms
    FROM tasker_workflow_step_transitions st
    WINDOW w AS (PARTITION BY st.workflow_step_id ORDER BY st.sort_key)
), agg AS (
    SELECT nt.task_namespace_id,
           ws.named_step_id,
           count(h.workflow_step_id) FILTER (WHERE h.to_state = 'in_progress') AS executions,
           count(h.workflow_step_id) FILTER (WHERE h.to_state = 'complete')    AS successes,
           count(h.workflow_step_id) FILTER (WHERE h.to_state = 'error')       AS failures,
           count(h.workflow_step_id) FILTER (WHERE h.from_state = 'error' AND h.to_state = 'pending') AS retries,
           avg(h.duration_ms)                                           AS avg_duration_ms,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY h.duration_ms)   AS p50_duration_ms,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY h.duration_ms)  AS p95_duration_ms,
           max(h.duration_ms)                                           AS max_duration_ms
    FROM tasker_workflow_steps ws
    JOIN tasker_tasks t ON t.task_id = ws.task_id
    JOIN tasker_named_tasks nt ON nt.named_task_id = t.named_task_id
    LEFT JOIN history h ON h.workflow_step_id = ws.workflow_step_id
    GROUP BY nt.task_namespace_id, ws.named_step_id
)
SELECT
    agg.task_namespace_id,
    agg.named_step_id,
    ns.name::varchar(64)     AS namespace_name,
    nstep.name::varchar(128) AS step_name,
    ds.name::varchar(64)     AS dependent_system_name,
    agg.executions,
    agg.successes,
    agg.failures,
    agg.retries,
    CASE WHEN agg.executions = 0 THEN 0
         ELSE round(agg.failures::numeric / agg.executions, 4)::double precision
    END AS error_rate,
    agg.avg_duration_ms::double precision AS avg_duration_ms,
    agg.p50_duration_ms,
    agg.p95_duration_ms,
    agg.max_duration_ms::double precision AS max_duration_ms
FROM agg
JOIN tasker_task_namespaces ns ON ns.task_namespace_id = agg.task_namespace_id
JOIN tasker_named_steps nstep ON nstep.named_step_id = agg.named_step_id
JOIN tasker_dependent_systems ds ON ds.dependent_system_id = nstep.dependent_system_id
WITH DATA;

CREATE UNIQUE INDEX tasker_step_performance_namespace_step_idx
    ON tasker_step_performance (task_namespace_id, named_step_id);
CREATE INDEX tasker_step_performance_namespace_name_idx
    ON tasker_step_performance (namespace_name, executions DESC);
