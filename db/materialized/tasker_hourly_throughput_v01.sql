-- tasker_hourly_throughput: one row per UTC hour in which anything happened:
--   tasks_created:   tasks whose created_at falls in the hour
--   tasks_completed: task transitions into complete created in the hour
--   tasks_failed:    task transitions into error created in the hour
--   steps_completed: step transitions into complete created in the hour
--   steps_failed:    step transitions into error created in the hour
-- Hours are truncated in UTC (date_trunc with an explicit zone) so the buckets do not depend
-- on the TimeZone of the session that refreshes. Hours without activity have no row; readers
-- fill them with zeros.
CREATE MATERIALIZED VIEW tasker_hourly_throughput AS
WITH events AS (
    SELECT date_trunc('hour', created_at, 'UTC') AS hour, 1 AS created, 0 AS t_done, 0 AS t_failed, 0 AS s_done, 0 AS s_failed
    FROM tasker_tasks
    UNION ALL
    SELECT date_trunc('hour', created_at, 'UTC'), 0,
           (to_state = 'complete')::int, (to_state = 'error')::int, 0, 0
    FROM tasker_task_transitions
    WHERE to_state IN ('complete', 'error')
    UNION ALL
    SELECT date_trunc('hour', created_at, 'UTC'), 0, 0, 0,
           (to_state = 'complete')::int, (to_state = 'error')::int
    FROM tasker_workflow_step_transitions
    WHERE to_state IN ('complete', 'error')
)
SELECT
    hour,
    sum(created)::bigint  AS tasks_created,
    sum(t_done)::bigint   AS tasks_completed,
    sum(t_failed)::bigint AS tasks_failed,
    sum(s_done)::bigint   AS steps_completed,
    sum(s_failed)::bigint AS steps_failed
FROM events
GROUP BY hour
WITH DATA;

CREATE UNIQUE INDEX tasker_hourly_throughput_hour_idx ON tasker_hourly_throughput (hour);
