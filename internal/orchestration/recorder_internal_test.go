package orchestration

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/taskerhq/tasker/internal/handler"
	"github.com/taskerhq/tasker/internal/store"
	"github.com/taskerhq/tasker/internal/testkit/dbtest"
)

type noHandlers struct{}

func (noHandlers) StepHandler(context.Context, *store.Store, int64, string) (handler.Handler, time.Duration, error) {
	return nil, 0, ErrNoHandler
}

type outcomes struct {
	mu  sync.Mutex
	got map[string]string
}

func (o *outcomes) StepClaimed(string, time.Duration) {}
func (o *outcomes) StepFinished(step, outcome string, _ time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.got[step] = outcome
}

// TestFlushRecordsEachAttemptAloneWhenTheBatchFails puts a result the database refuses (valid
// JSON, but jsonb cannot hold a NUL character) in one batch with a good one: the batch fails,
// and the good result is then recorded on its own.
func TestFlushRecordsEachAttemptAloneWhenTheBatchFails(t *testing.T) {
	t.Parallel()
	db := dbtest.New(t)
	seedChains(t, db, 2, 0)
	obs := &outcomes{got: map[string]string{}}
	e, err := New(NewService(db, nil), nil, noHandlers{}, Config{Observer: obs}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	steps, err := e.claim(ctx, 2)
	if err != nil || len(steps) != 2 {
		t.Fatalf("claimed %d steps (%v), want 2", len(steps), err)
	}
	e.rec.flush([]result{
		{step: steps[0].s, name: "bad", out: handler.Output{Results: json.RawMessage(`{"text": "\u0000"}`)}, log: e.log},
		{step: steps[1].s, name: "good", out: handler.Output{Results: json.RawMessage(`{"ok": true}`)}, log: e.log},
	}, 0)
	if obs.got["bad"] != OutcomeRecordFailed || obs.got["good"] != OutcomeComplete {
		t.Fatalf("outcomes %v, want bad %s and good %s", obs.got, OutcomeRecordFailed, OutcomeComplete)
	}
	var rows []struct {
		WorkflowStepID int64
		Processed      bool
		InProcess      bool
		State          string
	}
	if err := db.Raw(`SELECT s.workflow_step_id, s.processed, s.in_process, t.to_state AS state
		FROM tasker_workflow_steps s JOIN tasker_workflow_step_transitions t
		  ON t.workflow_step_id = s.workflow_step_id AND t.most_recent
		WHERE s.workflow_step_id IN (?, ?) ORDER BY s.workflow_step_id = ? DESC`,
		steps[0].s.StepID, steps[1].s.StepID, steps[0].s.StepID).Scan(&rows).Error; err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || rows[0].Processed || !rows[0].InProcess || rows[0].State != "in_progress" ||
		!rows[1].Processed || rows[1].InProcess || rows[1].State != "complete" {
		t.Fatalf("steps after the flush %+v: want the bad one still claimed in_progress, the good one complete", rows)
	}
}
