package store

import (
	"maps"
	"slices"
	"testing"
)

// TestStepRowsWriteOnlyTheIndexesTheirReadersNeed: a step's row is written three times in its
// life at least (its creation, its claim, its outcome), and neither update can be HOT (the
// claim flags are in the predicates of the partial indexes below), so every version writes an
// entry in every index whose predicate it meets. Each index of tasker_workflow_steps must
// therefore have a reader; the set is pinned here with them, and an index added without one
// fails this test. (tasker_workflow_steps_named_step_idx had none: migration 00065.)
func TestStepRowsWriteOnlyTheIndexesTheirReadersNeed(t *testing.T) {
	s, _ := open(t)
	readers := map[string]string{
		"tasker_workflow_steps_pkey":                "the primary key: every lookup of a step",
		"tasker_workflow_steps_task_named_step_key": "a name is unique within a task; a task's steps",
		"tasker_workflow_steps_runnable_idx":        "the claim's walk (claimBaseSQL)",
		"tasker_workflow_steps_retry_waiting_idx":   "the next due retry (nextRetrySQL)",
		"tasker_workflow_steps_claimed_idx":         "recovery's walk of the running steps (ExpiredClaims)",
		"tasker_workflow_steps_claimable_idx":       "the pages of ready and blocked steps (models.StepFilter)",
	}
	var got []string
	if err := s.db.Raw(`SELECT indexname FROM pg_indexes WHERE tablename = 'tasker_workflow_steps' ORDER BY indexname`).
		Scan(&got).Error; err != nil {
		t.Fatal(err)
	}
	want := slices.Sorted(maps.Keys(readers))
	if !slices.Equal(got, want) {
		t.Errorf("indexes of tasker_workflow_steps: %v, want %v (each with its reader)", got, want)
	}
}
