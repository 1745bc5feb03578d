package orchestration_test

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/taskerhq/tasker/internal/handler"
	"github.com/taskerhq/tasker/internal/orchestration"
)

const unrecordableYAML = `
namespace: tests
name: unrecordable
version: 1.0.0
steps:
  - name: bad
    handler: {kind: nul}
  - name: good
    handler: {kind: noop}
  - name: after_good
    depends_on: good
    handler: {kind: noop}
`

// TestResultTheDatabaseRefusesDoesNotSinkTheOthers has one handler return results that are
// valid JSON but not valid jsonb (a NUL character): its recording fails, and the lease will
// recover it; the other steps' results, whether or not they shared its batch, are recorded.
func TestResultTheDatabaseRefusesDoesNotSinkTheOthers(t *testing.T) {
	t.Parallel()
	handlers := handler.NewBuiltinRegistry()
	if err := handlers.Register("nul", func(map[string]any) (handler.Handler, error) {
		return handler.HandlerFunc(func(context.Context, handler.Input) (handler.Output, error) {
			return handler.Output{Results: json.RawMessage(`{"text": "\u0000"}`)}, nil
		}), nil
	}); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, handlers, unrecordableYAML)
	obs := newRecorder()
	h.engine(orchestration.Config{Observer: obs})
	id := h.create("tests", "unrecordable", "")

	deadline := time.Now().Add(30 * time.Second)
	for {
		steps := h.steps(id)
		obs.mu.Lock()
		badOutcomes := slices.Clone(obs.finished["bad"])
		obs.mu.Unlock()
		if slices.Equal(steps["after_good"].History, simple) && len(badOutcomes) > 0 {
			bad := steps["bad"]
			if !slices.Equal(badOutcomes, []string{orchestration.OutcomeRecordFailed}) {
				t.Errorf("outcomes of bad %v, want [%s]", badOutcomes, orchestration.OutcomeRecordFailed)
			}
			if !slices.Equal(bad.History, []string{"in_progress"}) || !bad.InProcess || bad.Attempts != 0 {
				t.Errorf("bad: history %v in_process %v attempts %d, want its claim left to the lease",
					bad.History, bad.InProcess, bad.Attempts)
			}
			if g := steps["good"]; !slices.Equal(g.History, simple) || !g.Processed {
				t.Errorf("good: history %v processed %v", g.History, g.Processed)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after_good history %v, outcomes of bad %v", steps["after_good"].History, badOutcomes)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
