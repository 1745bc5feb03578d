package models

import (
	"context"
	"fmt"

	"gorm.io/gorm"
)

// readyStepsSQL counts ready steps the way workers find them: walking the claimable index and
// reading the readiness view per candidate, so its cost grows with unfinished steps only.
const readyStepsSQL = `
SELECT count(*)
FROM tasker_workflow_steps c
CROSS JOIN LATERAL (
    SELECT rs.ready_for_execution FROM tasker_step_readiness_statuses rs
    WHERE rs.workflow_step_id = c.workflow_step_id LIMIT 1
) r
WHERE NOT c.processed AND NOT c.in_process AND r.ready_for_execution
  AND coalesce((SELECT tt.to_state FROM tasker_task_transitions tt
                WHERE tt.task_id = c.task_id AND tt.most_recent), 'pending') IN ('pending', 'in_progress')`

const readModelsSQL = `
SELECT name,
       coalesce(extract(epoch FROM now() - last_data_as_of), -1)::float8,
       coalesce(extract(epoch FROM now() - stale_since), 0)::float8,
       coalesce(last_duration_ms, -1)::float8 / 1000
FROM tasker_read_model_state ORDER BY name`

// CountReadySteps counts the steps a worker could claim now (metrics' queue depth gauge).
func CountReadySteps(ctx context.Context, db *gorm.DB) (int64, error) {
	var n int64
	if err := db.WithContext(ctx).Raw(readyStepsSQL).Row().Scan(&n); err != nil {
		return 0, fmt.Errorf("counting ready steps: %w", err)
	}
	return n, nil
}

// ReadModelGauge is one dashboard read model's state for the freshness gauges. A negative
// AgeSeconds or RefreshSeconds means never refreshed.
type ReadModelGauge struct {
	Name           string
	AgeSeconds     float64 // since the data it holds was current
	StaleSeconds   float64 // since a write made it stale; 0 when fresh
	RefreshSeconds float64 // how long its last refresh took
}

// ReadModelFreshness returns every dashboard read model's freshness, by name.
func ReadModelFreshness(ctx context.Context, db *gorm.DB) ([]ReadModelGauge, error) {
	rows, err := db.WithContext(ctx).Raw(readModelsSQL).Rows()
	if err != nil {
		return nil, fmt.Errorf("reading read-model freshness: %w", err)
	}
	defer rows.Close()
	var out []ReadModelGauge
	for rows.Next() {
		var f ReadModelGauge
		if err := rows.Scan(&f.Name, &f.AgeSeconds, &f.StaleSeconds, &f.RefreshSeconds); err != nil {
			return nil, fmt.Errorf("reading read-model freshness: %w", err)
		}
		out = append(out, f)
	}
	return out, rows.Err()
}
