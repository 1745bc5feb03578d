-- +goose Up
-- Statements that must keep their index plans whatever the planner's statistics say (tables
-- analysed while empty, then grown: a fresh database, or autovacuum at the wrong moment).

-- The engine's next-retry query (internal/orchestration, nextRetrySQL) looks for the earliest
-- due retry among unclaimed, unfinished steps that were attempted or asked for a delay. The
-- claim's partial index holds every unfinished step, so on that index the query read every
-- waiting step of every open task. This partial index holds exactly the steps it wants.
CREATE INDEX tasker_workflow_steps_retrying_idx
    ON tasker_workflow_steps (workflow_step_id) INCLUDE (task_id)
    WHERE NOT processed AND NOT in_process AND (coalesce(attempts, 0) > 0 OR backoff_request_seconds IS NOT NULL);

-- The transition streams' re-reads (graph/feed, through internal/models): up to lim
-- transitions with id > after, not in exclude, by id, of one task (step transitions) or one
-- namespace (task transitions) when given. Each is a function whose statement is planned at
-- every call with sequential and bitmap scans weighed out, so it walks the primary key from
-- after, in order, and stops at lim: on a table the planner believes small it would otherwise
-- read and sort the whole table. The settings are local to the call.
CREATE FUNCTION tasker_step_transitions_after(after bigint, exclude bigint[], task bigint, lim integer)
RETURNS TABLE (id bigint, workflow_step_id bigint, to_state varchar, from_state varchar, metadata jsonb,
               sort_key integer, most_recent boolean, created_at timestamptz, updated_at timestamptz,
               task_id bigint)
LANGUAGE sql STABLE
SET enable_seqscan = off SET enable_bitmapscan = off SET jit = off
AS $$
    SELECT tr.id, tr.workflow_step_id, tr.to_state, tr.from_state, tr.metadata, tr.sort_key,
           tr.most_recent, tr.created_at, tr.updated_at, s.task_id
    FROM tasker_workflow_step_transitions tr
    JOIN tasker_workflow_steps s ON s.workflow_step_id = tr.workflow_step_id
    WHERE tr.id > after AND NOT (tr.id = ANY(exclude))
      AND (task <= 0 OR s.task_id = task)
    ORDER BY tr.id LIMIT lim
$$;

CREATE FUNCTION tasker_task_transitions_after(after bigint, exclude bigint[], namespace text, lim integer)
RETURNS SETOF tasker_task_transitions
LANGUAGE sql STABLE
SET enable_seqscan = off SET enable_bitmapscan = off SET jit = off
AS $$
    SELECT tr.* FROM tasker_task_transitions tr
    WHERE tr.id > after AND NOT (tr.id = ANY(exclude))
      AND (namespace = '' OR (
            SELECT ns.name FROM tasker_tasks t
            JOIN tasker_named_tasks n ON n.named_task_id = t.named_task_id
            JOIN tasker_task_namespaces ns ON ns.task_namespace_id = n.task_namespace_id
            WHERE t.task_id = tr.task_id) = namespace)
    ORDER BY tr.id LIMIT lim
$$;

-- +goose Down
DROP FUNCTION tasker_task_transitions_after(bigint, bigint[], text, integer);
DROP FUNCTION tasker_step_transitions_after(bigint, bigint[], bigint, integer);
DROP INDEX tasker_workflow_steps_retrying_idx;
