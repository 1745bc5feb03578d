package statemachine_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"gorm.io/gorm"

	"github.com/taskerhq/tasker/internal/errs"
	"github.com/taskerhq/tasker/internal/models"
	sm "github.com/taskerhq/tasker/internal/statemachine"
	"github.com/taskerhq/tasker/internal/store"
	"github.com/taskerhq/tasker/internal/testkit/dbtest"
)

// world is a task with steps a, b, c where c depends on a and b, written with plain SQL.
type world struct {
	db      *gorm.DB
	task    int64
	a, b, c int64
}

func newWorld(t *testing.T) world {
	t.Helper()
	db := dbtest.New(t)
	w := world{db: db}
	mustScan(t, db, &w.task, `
		WITH sys AS (INSERT INTO tasker_dependent_systems (name) VALUES ('sys') RETURNING dependent_system_id),
		     nt AS (INSERT INTO tasker_named_tasks (task_namespace_id, name) VALUES (1, 'sm') RETURNING named_task_id)
		INSERT INTO tasker_tasks (named_task_id) SELECT named_task_id FROM nt RETURNING task_id`)
	var ids []int64
	mustScan(t, db, &ids, `
		WITH ns AS (INSERT INTO tasker_named_steps (dependent_system_id, name)
		            SELECT dependent_system_id, n FROM tasker_dependent_systems, unnest(ARRAY['a','b','c']) n
		            RETURNING named_step_id, name)
		INSERT INTO tasker_workflow_steps (task_id, named_step_id)
		SELECT ?, named_step_id FROM ns ORDER BY name RETURNING workflow_step_id`, w.task)
	if len(ids) != 3 {
		t.Fatalf("created %d steps, want 3", len(ids))
	}
	w.a, w.b, w.c = ids[0], ids[1], ids[2]
	if err := db.Exec(`INSERT INTO tasker_workflow_step_edges (from_step_id, to_step_id) VALUES (?, ?), (?, ?)`,
		w.a, w.c, w.b, w.c).Error; err != nil {
		t.Fatal(err)
	}
	return w
}

func mustScan(t *testing.T, db *gorm.DB, dst any, sql string, args ...any) {
	t.Helper()
	if err := db.Raw(sql, args...).Scan(dst).Error; err != nil {
		t.Fatalf("%s: %v", strings.TrimSpace(sql), err)
	}
}

// walkStep moves a step along a path of states, failing the test on any refusal.
func walkStep(t *testing.T, db *gorm.DB, id int64, path ...models.State) {
	t.Helper()
	for _, s := range path {
		if _, err := sm.TransitionStep(context.Background(), store.New(db), id, s, nil); err != nil {
			t.Fatalf("moving step %d to %s: %v", id, s, err)
		}
	}
}

func walkTask(t *testing.T, db *gorm.DB, id int64, path ...models.State) {
	t.Helper()
	for _, s := range path {
		if _, err := sm.TransitionTask(context.Background(), store.New(db), id, s, nil); err != nil {
			t.Fatalf("moving task %d to %s: %v", id, s, err)
		}
	}
}

// pathTo gives a route from pending to each state for steps (parents already satisfied).
var stepPathTo = map[models.State][]models.State{
	models.StatePending:          nil,
	models.StateInProgress:       {models.StateInProgress},
	models.StateComplete:         {models.StateInProgress, models.StateComplete},
	models.StateError:            {models.StateError},
	models.StateCancelled:        {models.StateCancelled},
	models.StateResolvedManually: {models.StateResolvedManually},
}

var taskPathTo = map[models.State][]models.State{
	models.StatePending:          nil,
	models.StateInProgress:       {models.StateInProgress},
	models.StateComplete:         nil, // needs complete steps: built separately
	models.StateError:            {models.StateError},
	models.StateCancelled:        {models.StateCancelled},
	models.StateResolvedManually: {models.StateError, models.StateResolvedManually},
}

func TestEveryStepMoveIsAllowedOrRefusedPerTheTable(t *testing.T) {
	t.Parallel()
	allowed := map[[2]models.State]bool{
		{"pending", "in_progress"}: true, {"pending", "error"}: true, {"pending", "cancelled"}: true,
		{"pending", "resolved_manually"}: true, {"in_progress", "complete"}: true,
		{"in_progress", "error"}: true, {"in_progress", "cancelled"}: true, {"error", "pending"}: true,
		{"error", "resolved_manually"}: true, {"error", "cancelled"}: true,
	}
	w := newWorld(t)
	ctx := context.Background()
	for _, from := range models.AllStates {
		for _, to := range models.AllStates {
			// A fresh step per pair: use step a (a root) reset by deleting its history.
			if err := w.db.Exec(`DELETE FROM tasker_workflow_step_transitions WHERE workflow_step_id = ?`, w.a).Error; err != nil {
				t.Fatal(err)
			}
			walkStep(t, w.db, w.a, stepPathTo[from]...)
			before := countTransitions(t, w.db, "tasker_workflow_step_transitions")
			tr, err := sm.TransitionStep(ctx, store.New(w.db), w.a, to, map[string]any{"by": "test"})
			after := countTransitions(t, w.db, "tasker_workflow_step_transitions")
			if allowed[[2]models.State{from, to}] {
				if err != nil {
					t.Errorf("%s → %s refused: %v", from, to, err)
					continue
				}
				if after != before+1 || tr.To != to {
					t.Errorf("%s → %s: wrote %d rows, transition %+v", from, to, after-before, tr)
				}
				continue
			}
			var te *sm.TransitionError
			if !errors.As(err, &te) || !errs.Is(err, errs.IllegalTransition) {
				t.Errorf("%s → %s: want a TransitionError, got %v", from, to, err)
				continue
			}
			if te.ID != w.a || te.From != string(from) || te.To != string(to) || te.Kind != sm.KindStep {
				t.Errorf("%s → %s: error names the wrong owner or states: %+v", from, to, te)
			}
			if !strings.Contains(err.Error(), fmt.Sprintf("step %d", w.a)) || !strings.Contains(err.Error(), string(from)) {
				t.Errorf("error message does not name owner and state: %q", err)
			}
			if after != before {
				t.Errorf("%s → %s refused but wrote %d rows", from, to, after-before)
			}
		}
	}
}

func TestEveryTaskMoveIsAllowedOrRefusedPerTheTable(t *testing.T) {
	t.Parallel()
	allowed := map[[2]models.State]bool{
		{"pending", "in_progress"}: true, {"pending", "cancelled"}: true, {"pending", "error"}: true,
		{"in_progress", "complete"}: true, {"in_progress", "error"}: true, {"in_progress", "cancelled"}: true,
		{"in_progress", "pending"}: true, {"error", "pending"}: true, {"error", "resolved_manually"}: true,
		{"error", "cancelled"}: true, {"complete", "cancelled"}: true, {"resolved_manually", "cancelled"}: true,
	}
	w := newWorld(t)
	// Complete every step so that in_progress → complete passes its guard.
	walkStep(t, w.db, w.a, models.StateInProgress, models.StateComplete)
	walkStep(t, w.db, w.b, models.StateInProgress, models.StateComplete)
	walkStep(t, w.db, w.c, models.StateInProgress, models.StateComplete)
	ctx := context.Background()
	for _, from := range models.AllStates {
		for _, to := range models.AllStates {
			if err := w.db.Exec(`DELETE FROM tasker_task_transitions WHERE task_id = ?`, w.task).Error; err != nil {
				t.Fatal(err)
			}
			path := taskPathTo[from]
			if from == models.StateComplete {
				path = []models.State{models.StateInProgress, models.StateComplete}
			}
			walkTask(t, w.db, w.task, path...)
			before := countTransitions(t, w.db, "tasker_task_transitions")
			_, err := sm.TransitionTask(ctx, store.New(w.db), w.task, to, nil)
			after := countTransitions(t, w.db, "tasker_task_transitions")
			if allowed[[2]models.State{from, to}] {
				if err != nil || after != before+1 {
					t.Errorf("%s → %s: err %v, wrote %d rows", from, to, err, after-before)
				}
				continue
			}
			if !errs.Is(err, errs.IllegalTransition) || after != before {
				t.Errorf("%s → %s: want refusal writing nothing, got %v and %d rows", from, to, err, after-before)
			}
		}
	}
}

func countTransitions(t *testing.T, db *gorm.DB, table string) int64 {
	t.Helper()
	var n int64
	mustScan(t, db, &n, "SELECT count(*) FROM "+table)
	return n
}

func TestStepCannotStartBeforeItsParentsAreDone(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	_, err := sm.TransitionStep(ctx, store.New(w.db), w.c, models.StateInProgress, nil)
	if !errs.Is(err, errs.IllegalTransition) || !strings.Contains(err.Error(), "parent") {
		t.Fatalf("child started with pending parents: %v", err)
	}
	walkStep(t, w.db, w.a, models.StateInProgress, models.StateComplete)
	if _, err := sm.TransitionStep(ctx, store.New(w.db), w.c, models.StateInProgress, nil); !errs.Is(err, errs.IllegalTransition) {
		t.Fatalf("child started with one parent pending: %v", err)
	}
	walkStep(t, w.db, w.b, models.StateResolvedManually)
	walkStep(t, w.db, w.c, models.StateInProgress) // complete + resolved_manually satisfy it
}

func TestCancelledParentKeepsChildBlocked(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	walkStep(t, w.db, w.a, models.StateInProgress, models.StateComplete)
	walkStep(t, w.db, w.b, models.StateCancelled)
	if _, err := sm.TransitionStep(context.Background(), store.New(w.db), w.c, models.StateInProgress, nil); !errs.Is(err, errs.IllegalTransition) {
		t.Fatalf("child started under a cancelled parent: %v", err)
	}
}

func TestTaskCompletesOnlyWhenEveryStepIsDone(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	walkTask(t, w.db, w.task, models.StateInProgress)
	walkStep(t, w.db, w.a, models.StateInProgress, models.StateComplete)
	walkStep(t, w.db, w.b, models.StateError, models.StateResolvedManually)
	_, err := sm.TransitionTask(context.Background(), store.New(w.db), w.task, models.StateComplete, nil)
	if !errs.Is(err, errs.IllegalTransition) || !strings.Contains(err.Error(), fmt.Sprint(w.c)) {
		t.Fatalf("task completed with step c pending, or the error does not name it: %v", err)
	}
	walkStep(t, w.db, w.c, models.StateInProgress, models.StateComplete)
	walkTask(t, w.db, w.task, models.StateComplete)
}

func TestUnknownOwnerIsNotFound(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	if _, err := sm.TransitionStep(ctx, store.New(w.db), 999999, models.StateInProgress, nil); !errs.Is(err, errs.NotFound) {
		t.Fatalf("unknown step: %v", err)
	}
	if _, err := sm.TransitionTask(ctx, store.New(w.db), 999999, models.StateInProgress, nil); !errs.Is(err, errs.NotFound) {
		t.Fatalf("unknown task: %v", err)
	}
	if _, err := sm.StepState(ctx, store.New(w.db), 999999); !errs.Is(err, errs.NotFound) {
		t.Fatalf("state of unknown step: %v", err)
	}
	if _, err := sm.TransitionStep(ctx, store.New(w.db), w.a, models.State("bogus"), nil); !errs.Is(err, errs.IllegalTransition) {
		t.Fatalf("unknown target state: %v", err)
	}
}

func TestTransitionsRecordEventAndHistory(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	walkStep(t, w.db, w.a, models.StateInProgress, models.StateError, models.StatePending)
	tr, err := sm.TransitionStep(ctx, store.New(w.db), w.a, models.StateInProgress, map[string]any{"worker": "w1"})
	if err != nil {
		t.Fatal(err)
	}
	if tr.Event != "execution_requested" || tr.SortKey != 4 || tr.From == nil || *tr.From != models.StatePending {
		t.Fatalf("unexpected transition %+v", tr)
	}
	rows := transitions(t, w, w.a)
	wantEvents := []string{"execution_requested", "failed", "retry_requested", "execution_requested"}
	for i, r := range rows {
		var meta map[string]any
		if err := jsonUnmarshal(r.Metadata, &meta); err != nil {
			t.Fatal(err)
		}
		if meta["event"] != wantEvents[i] {
			t.Errorf("row %d event %v, want %s", i, meta["event"], wantEvents[i])
		}
		if r.MostRecent != (i == len(rows)-1) {
			t.Errorf("row %d most_recent = %v", i, r.MostRecent)
		}
	}
	if state, _ := sm.StepState(ctx, store.New(w.db), w.a); state != models.StateInProgress {
		t.Fatalf("state %s, want in_progress", state)
	}
}

// TestRacingWritersLeaveOneCurrentRowAndAGapFreeHistory has 20 goroutines drive one step
// around the cycle pending → error → pending at once. Each reads the state and asks for the
// next one; losers of a race are refused. Whatever interleaving happens, the history must be
// a chain: sort keys 1..n without gaps, each from_state equal to the previous to_state, and
// exactly one current row.
func TestRacingWritersLeaveOneCurrentRowAndAGapFreeHistory(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := context.Background()
	next := map[models.State]models.State{models.StatePending: models.StateError, models.StateError: models.StatePending}
	var wg sync.WaitGroup
	var mu sync.Mutex
	succeeded := 0
	for g := 0; g < 20; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 10; i++ {
				cur, err := sm.StepState(ctx, store.New(w.db), w.a)
				if err != nil {
					t.Error(err)
					return
				}
				_, err = sm.TransitionStep(ctx, store.New(w.db), w.a, next[cur], nil)
				if err == nil {
					mu.Lock()
					succeeded++
					mu.Unlock()
				} else if !errs.Is(err, errs.IllegalTransition) {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	rows := transitions(t, w, w.a)
	if len(rows) != succeeded || succeeded == 0 {
		t.Fatalf("%d successful moves but %d rows", succeeded, len(rows))
	}
	current := 0
	prev := models.StatePending
	for i, r := range rows {
		if r.SortKey != i+1 {
			t.Fatalf("gap in history: row %d has sort_key %d", i, r.SortKey)
		}
		if (i == 0 && r.FromState != nil) || (i > 0 && (r.FromState == nil || *r.FromState != prev)) {
			t.Fatalf("row %d from_state %v does not follow %s", i, r.FromState, prev)
		}
		prev = r.ToState
		if r.MostRecent {
			current++
		}
	}
	if current != 1 || !rows[len(rows)-1].MostRecent {
		t.Fatalf("%d current rows; the last must be the only one", current)
	}
}
