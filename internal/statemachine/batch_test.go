package statemachine_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"

	"github.com/taskerhq/tasker/internal/errs"
	"github.com/taskerhq/tasker/internal/models"
	sm "github.com/taskerhq/tasker/internal/statemachine"
	"github.com/taskerhq/tasker/internal/store"
)

// transitions reads a step's transitions in history order.
func transitions(t *testing.T, w world, stepID int64) []models.WorkflowStepTransition {
	t.Helper()
	var rows []models.WorkflowStepTransition
	if err := w.db.Where("workflow_step_id = ?", stepID).Order("sort_key").Find(&rows).Error; err != nil {
		t.Fatal(err)
	}
	return rows
}

func history(t *testing.T, w world, stepID int64) (states []string, current int) {
	t.Helper()
	for i, r := range transitions(t, w, stepID) {
		if r.SortKey != i+1 {
			t.Fatalf("step %d: gap in history at row %d (sort_key %d)", stepID, i, r.SortKey)
		}
		states = append(states, string(r.ToState))
		if r.MostRecent {
			current++
		}
	}
	return states, current
}

func TestBatchAppliesSeveralMovesPerOwnerInOrder(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	walkStep(t, w.db, w.b, models.StateError)
	trs, err := sm.TransitionSteps(ctx, store.New(w.db), []sm.Move{
		{ID: w.b, To: models.StatePending}, {ID: w.a, To: models.StateInProgress, Metadata: map[string]any{"k": 1}},
		{ID: w.b, To: models.StateInProgress},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(trs) != 3 || trs[0].OwnerID != w.b || trs[0].Event != "retry_requested" || trs[1].OwnerID != w.a ||
		trs[1].SortKey != 1 || trs[1].From != nil || trs[2].SortKey != 3 || *trs[2].From != models.StatePending {
		t.Fatalf("unexpected transitions %+v", trs)
	}
	if got, cur := history(t, w, w.b); !slices.Equal(got, []string{"error", "pending", "in_progress"}) || cur != 1 {
		t.Fatalf("step b history %v with %d current rows", got, cur)
	}
}

func TestBatchRefusalWritesNothingOrOnlyTheAllowedOwners(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	moves := []sm.Move{{ID: w.a, To: models.StateInProgress}, {ID: w.c, To: models.StateInProgress}, {ID: w.b, To: models.StateCancelled}}
	before := countTransitions(t, w.db, "tasker_workflow_step_transitions")
	_, err := sm.TransitionSteps(ctx, store.New(w.db), moves)
	var te *sm.TransitionError
	if !errors.As(err, &te) || te.ID != w.c || te.From != "pending" {
		t.Fatalf("want step c's parent guard refusal, got %v", err)
	}
	if after := countTransitions(t, w.db, "tasker_workflow_step_transitions"); after != before {
		t.Fatalf("a refused batch wrote %d rows", after-before)
	}
	trs, refused, err := sm.TransitionStepsWhereAllowed(ctx, store.New(w.db), moves)
	if err != nil {
		t.Fatal(err)
	}
	if len(trs) != 2 || len(refused) != 1 || refused[0].ID != w.c {
		t.Fatalf("written %+v refused %+v", trs, refused)
	}
	if st, _ := sm.StepState(ctx, store.New(w.db), w.c); st != models.StatePending {
		t.Fatalf("refused step c moved to %s", st)
	}
	if _, err := sm.TransitionSteps(ctx, store.New(w.db), []sm.Move{{ID: 999999, To: models.StateCancelled}}); !errs.Is(err, errs.NotFound) {
		t.Fatalf("unknown step in a batch: %v", err)
	}
}

// TestRacingBatchesNeverDeadlockAndKeepHistoriesGapFree has batches over the same three
// owners, listed in different orders, race each other.
func TestRacingBatchesNeverDeadlockAndKeepHistoriesGapFree(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	next := map[models.State]models.State{models.StatePending: models.StateError, models.StateError: models.StatePending}
	orders := [][]int64{{w.a, w.b, w.c}, {w.c, w.b, w.a}, {w.b, w.c, w.a}}
	var wg sync.WaitGroup
	for g := 0; g < 9; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 8; i++ {
				var moves []sm.Move
				for _, id := range orders[g%3] {
					cur, err := sm.StepState(ctx, store.New(w.db), id)
					if err != nil {
						t.Error(err)
						return
					}
					moves = append(moves, sm.Move{ID: id, To: next[cur]})
				}
				if _, _, err := sm.TransitionStepsWhereAllowed(ctx, store.New(w.db), moves); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	for _, id := range []int64{w.a, w.b, w.c} {
		states, cur := history(t, w, id)
		if len(states) == 0 || cur != 1 {
			t.Fatalf("step %d: %d transitions, %d current rows", id, len(states), cur)
		}
		for i := 1; i < len(states); i++ {
			if states[i] == states[i-1] {
				t.Fatalf("step %d: history repeats %s at %d", id, states[i], i)
			}
		}
	}
}

// TestHeldBatchesUseWhatTheWriterKnows: a held batch takes the current transitions its writer
// knows instead of reading them, and skips the guards it has proven; what it knew going stale
// (another writer moved the owner since) makes the batch fail and write nothing.
func TestHeldBatchesUseWhatTheWriterKnows(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	st := store.New(w.db)
	refused, err := sm.TransitionHeldStepsWhereAllowed(ctx, st, []sm.Move{
		{ID: w.a, To: models.StateInProgress}, {ID: w.b, To: models.StateInProgress}}, sm.Known{})
	if err != nil || len(refused) > 0 {
		t.Fatal(err, refused)
	}
	// What the writer knows after that batch: both steps in_progress at sort key 1.
	inProgress := "in_progress"
	after := map[int64]store.OwnerState{}
	for _, id := range []int64{w.a, w.b} {
		if got, cur := history(t, w, id); !slices.Equal(got, []string{inProgress}) || cur != 1 {
			t.Fatalf("step %d history after the batch %v with %d current rows, want in_progress", id, got, cur)
		}
		after[id] = store.OwnerState{ID: id, State: &inProgress, SortKey: 1}
	}
	// Known and true: a completes on what the first batch wrote.
	if refused, err := sm.TransitionHeldStepsWhereAllowed(ctx, st, []sm.Move{{ID: w.a, To: models.StateComplete}},
		sm.Known{Current: after}); err != nil || len(refused) > 0 {
		t.Fatal(err, refused)
	}
	if got, cur := history(t, w, w.a); !slices.Equal(got, []string{"in_progress", "complete"}) || cur != 1 {
		t.Fatalf("step a history %v with %d current rows", got, cur)
	}
	// Known and stale: another writer failed b meanwhile.
	if _, err := sm.TransitionSteps(ctx, st, []sm.Move{{ID: w.b, To: models.StateError}}); err != nil {
		t.Fatal(err)
	}
	if _, err := sm.TransitionHeldStepsWhereAllowed(ctx, st, []sm.Move{{ID: w.b, To: models.StateComplete}},
		sm.Known{Current: after}); err == nil {
		t.Fatal("a batch on a stale current transition succeeded")
	}
	none := map[int64]store.OwnerState{w.b: {ID: w.b}} // "no transition yet": b has three
	if _, err := sm.TransitionHeldStepsWhereAllowed(ctx, st, []sm.Move{{ID: w.b, To: models.StateCancelled}},
		sm.Known{Current: none}); err == nil {
		t.Fatal("a batch that took a step with history for one without succeeded")
	}
	if got, cur := history(t, w, w.b); !slices.Equal(got, []string{"in_progress", "error"}) || cur != 1 {
		t.Fatalf("step b history %v with %d current rows after the stale batches", got, cur)
	}
	// Guards: c's parent b is in error, so its start is refused unless the writer proved it.
	if refused, err := sm.TransitionHeldStepsWhereAllowed(ctx, st, []sm.Move{{ID: w.c, To: models.StateInProgress}},
		sm.Known{}); err != nil || len(refused) != 1 {
		t.Fatalf("start of c with a parent in error: refused %v (%v), want one refusal", refused, err)
	}
	if refused, err := sm.TransitionHeldStepsWhereAllowed(ctx, st, []sm.Move{{ID: w.c, To: models.StateInProgress}},
		sm.Known{Proven: map[int64]bool{w.c: true}}); err != nil || len(refused) > 0 {
		t.Fatalf("start of c with its guard proven: refused %v (%v)", refused, err)
	}
}
