-- tasker_task_status_summaries: one row per named task (namespace, name, version) with the
-- number of its tasks in each current state (SEMANTICS §2: the most_recent transition's
-- to_state, no transition = pending), the total, and the times from which the dashboard
-- computes the age of the oldest pending and the oldest in-progress task.
--
-- Ages are deliberately not stored: a materialized age would be frozen at refresh time and
-- grow wrong until the next refresh. Readers compute age = now - timestamp at read time.
--   oldest_pending_requested_at: the smallest requested_at among tasks pending now.
--   oldest_in_progress_since:    the earliest time a task currently in progress entered
--                                in_progress (the created_at of its current transition).
-- A named task without tasks has a row with zero counts and null times.
CREATE MATERIALIZED VIEW tasker_task_status_summaries AS
WITH task_states AS (
    SELECT t.task_id,
           t.named_task_id,
           t.requested_at,
           coalesce(cur.to_state, 'pending') AS state,
           cur.created_at                    AS state_since
    FROM tasker_tasks t
    LEFT JOIN tasker_task_transitions cur ON cur.task_id = t.task_id AND cur.most_recent
)
SELECT
    nt.named_task_id,
    nt.task_namespace_id,
    ns.name::varchar(64)  AS namespace_name,
    nt.name::varchar(64)  AS task_name,
    nt.version::varchar(32) AS version,
    count(ts.task_id) FILTER (WHERE ts.state = 'pending')           AS pending_count,
    count(ts.task_id) FILTER (WHERE ts.state = 'in_progress')       AS in_progress_count,
    count(ts.task_id) FILTER (WHERE ts.state = 'complete')          AS complete_count,
    count(ts.task_id) FILTER (WHERE ts.state = 'error')             AS error_count,
    count(ts.task_id) FILTER (WHERE ts.state = 'cancelled')         AS cancelled_count,
    count(ts.task_id) FILTER (WHERE ts.state = 'resolved_manually') AS resolved_manually_count,
    count(ts.task_id)                                               AS total_count,
    min(ts.requested_at) FILTER (WHERE ts.state = 'pending')        AS oldest_pending_requested_at,
    min(ts.state_since) FILTER (WHERE ts.state = 'in_progress')     AS oldest_in_progress_since
FROM tasker_named_tasks nt
JOIN tasker_task_namespaces ns ON ns.task_namespace_id = nt.task_namespace_id
LEFT JOIN task_states ts ON ts.named_task_id = nt.named_task_id
GROUP BY nt.named_task_id, nt.task_namespace_id, ns.name, nt.name, nt.version
WITH DATA;

CREATE UNIQUE INDEX tasker_task_status_summaries_named_task_idx
    ON tasker_task_status_summaries (named_task_id);
CREATE INDEX tasker_task_status_summaries_namespace_idx
    ON tasker_task_status_summaries (namespace_name, task_name, version);
