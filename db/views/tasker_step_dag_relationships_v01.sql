-- tasker_step_dag_relationships: one row per workflow step with its place in the task's DAG
-- (SEMANTICS §4). Depths are the stored columns kept exact by the edge triggers of migration
-- 00002; parents and children are read per step through the edges indexes on to_step_id and
-- from_step_id, so a filter on task_id or workflow_step_id never scans the edges table.
CREATE OR REPLACE VIEW tasker_step_dag_relationships AS
SELECT
    ws.workflow_step_id,
    ws.task_id,
    ws.named_step_id,
    p.step_ids AS parent_step_ids,
    c.step_ids AS child_step_ids,
    p.step_count AS parent_count,
    c.step_count AS child_count,
    p.step_count = 0 AS is_root_step,
    c.step_count = 0 AS is_leaf_step,
    ws.min_depth_from_root,
    ws.dependency_level
FROM tasker_workflow_steps ws
CROSS JOIN LATERAL (
    SELECT
        coalesce(jsonb_agg(e.from_step_id ORDER BY e.from_step_id), '[]'::jsonb) AS step_ids,
        count(*)::integer AS step_count
    FROM tasker_workflow_step_edges e
    WHERE e.to_step_id = ws.workflow_step_id
) p
CROSS JOIN LATERAL (
    SELECT
        coalesce(jsonb_agg(e.to_step_id ORDER BY e.to_step_id), '[]'::jsonb) AS step_ids,
        count(*)::integer AS step_count
    FROM tasker_workflow_step_edges e
    WHERE e.from_step_id = ws.workflow_step_id
) c;
