package store

import (
	"maps"
	"slices"
	"testing"
)

// TestHotTablesWriteOnlyTheIndexesTheirReadersNeed: every version of a row writes an entry in
// each index of its table whose predicate it meets, unless the update is HOT. A step's row is
// written three times in its life at least (its creation, its claim, its outcome) and neither
// update can be HOT (the claim flags are in the predicates of the partial indexes below); a
// task's row is created once, then updated in place. So each of their indexes must have a
// reader: the sets are pinned here with them, and an index added without one fails this test
// (migration 00065 dropped two that had none).
func TestHotTablesWriteOnlyTheIndexesTheirReadersNeed(t *testing.T) {
	s, _ := open(t)
	readers := map[string]map[string]string{
		"tasker_workflow_steps": {
			"tasker_workflow_steps_pkey":                "the primary key: every lookup of a step",
			"tasker_workflow_steps_task_named_step_key": "a name is unique within a task; a task's steps",
			"tasker_workflow_steps_runnable_idx":        "the claim's walk (claimBaseSQL)",
			"tasker_workflow_steps_retry_waiting_idx":   "the next due retry (nextRetrySQL)",
			"tasker_workflow_steps_claimed_idx":         "recovery's walk of the running steps (ExpiredClaims)",
			"tasker_workflow_steps_claimable_idx":       "the pages of ready and blocked steps (models.StepFilter)",
		},
		"tasker_tasks": {
			"tasker_tasks_pkey":              "the primary key; the pages of tasks, newest first",
			"tasker_tasks_identity_hash_key": "idempotent creation (one task per identity)",
			"tasker_tasks_named_task_idx":    "the pages of tasks of one template (models.TaskFilter)",
			"tasker_tasks_created_at_idx":    "the pages of tasks created in a time range (models.TaskFilter)",
			"tasker_tasks_created_xid_idx":   "the read models' incremental refresh (refresh.go)",
		},
	}
	for table, want := range readers {
		var got []string
		if err := s.db.Raw(`SELECT indexname FROM pg_indexes WHERE tablename = ? ORDER BY indexname`, table).
			Scan(&got).Error; err != nil {
			t.Fatal(err)
		}
		if w := slices.Sorted(maps.Keys(want)); !slices.Equal(got, w) {
			t.Errorf("indexes of %s: %v, want %v (each with its reader)", table, got, w)
		}
	}
}
