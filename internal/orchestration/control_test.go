package orchestration_test

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/taskerhq/tasker/internal/errs"
	"github.com/taskerhq/tasker/internal/handler"
	"github.com/taskerhq/tasker/internal/orchestration"
	sm "github.com/taskerhq/tasker/internal/statemachine"
)

// gate is a handler kind that fails (permanently with config {permanent: true}, else
// retryably) until it is opened.
type gate struct{ open atomic.Bool }

func (g *gate) factory(cfg map[string]any) (handler.Handler, error) {
	permanent := cfg["permanent"] == true
	return handler.HandlerFunc(func(ctx context.Context, in handler.Input) (handler.Output, error) {
		if g.open.Load() {
			return handler.Output{}, nil
		}
		if permanent {
			return handler.Output{}, handler.Permanent(errors.New("gate closed for good"))
		}
		return handler.Output{}, handler.Retryable(errors.New("gate closed"), 0)
	}), nil
}

const gatedYAML = `
namespace: tests
name: gated
version: 1.0.0
steps:
  - name: gated
    retry_limit: 1
    handler: {kind: gate}
  - name: after
    depends_on: gated
    handler: {kind: noop}
`

const gatedPermanentYAML = `
namespace: tests
name: gated_permanent
version: 1.0.0
steps:
  - name: gated
    handler: {kind: gate, config: {permanent: true}}
  - name: after
    depends_on: gated
    handler: {kind: noop}
`

func newGate(t *testing.T) (*gate, *handler.Registry) {
	g := &gate{}
	handlers := handler.NewBuiltinRegistry()
	if err := handlers.Register("gate", g.factory); err != nil {
		t.Fatal(err)
	}
	return g, handlers
}

func (h *harness) countTransitions() int {
	h.t.Helper()
	var n int
	if err := h.db.Raw(`SELECT (SELECT count(*) FROM tasker_workflow_step_transitions) +
		(SELECT count(*) FROM tasker_task_transitions)`).Row().Scan(&n); err != nil {
		h.t.Fatal(err)
	}
	return n
}

func TestRetryStepGrantsAnAttemptAndResumesTheTask(t *testing.T) {
	t.Parallel()
	g, handlers := newGate(t)
	h := newHarness(t, handlers, gatedYAML, gatedPermanentYAML)
	h.engine(orchestration.Config{})
	exhausted := h.create("tests", "gated", "")
	permanent := h.create("tests", "gated_permanent", "")
	h.waitTasks("error", 20*time.Second, exhausted, permanent)

	ctx := context.Background()
	g.open.Store(true)
	ex := h.steps(exhausted)["gated"]
	if ex.Attempts != 1 || ex.RetryLimit != 1 {
		t.Fatalf("before retry: attempts %d retry_limit %d", ex.Attempts, ex.RetryLimit)
	}
	if err := h.svc.RetryStep(ctx, ex.ID, map[string]any{"by": "operator"}); err != nil {
		t.Fatal(err)
	}
	pm := h.steps(permanent)["gated"]
	if pm.Retryable {
		t.Fatal("a permanently failed step is still retryable")
	}
	if err := h.svc.RetryStep(ctx, pm.ID, nil); err != nil {
		t.Fatal(err)
	}
	h.waitTasks("complete", 20*time.Second, exhausted, permanent)

	ex = h.steps(exhausted)["gated"]
	want := []string{"in_progress", "error", "pending", "in_progress", "complete"}
	if !slices.Equal(ex.History, want) || ex.Attempts != 2 || ex.RetryLimit != 2 {
		t.Errorf("retried step: history %v attempts %d retry_limit %d", ex.History, ex.Attempts, ex.RetryLimit)
	}
	if m := ex.Meta[2]; m["retry_limit_granted"] != float64(2) || m["previous_retry_limit"] != float64(1) || m["by"] != "operator" {
		t.Errorf("retry metadata %v", m)
	}
	if got := h.taskHistory(exhausted); !slices.Equal(got, []string{"in_progress", "error", "pending", "in_progress", "complete"}) {
		t.Errorf("task history %v", got)
	}
	pm = h.steps(permanent)["gated"]
	if !pm.Retryable || pm.Attempts != 2 || pm.Meta[2]["made_retryable"] != true || pm.Meta[2]["retry_limit_granted"] != nil {
		t.Errorf("permanent step after retry: retryable %v attempts %d metadata %v", pm.Retryable, pm.Attempts, pm.Meta[2])
	}
}

func TestResolveAndCancelStepOfAFailedTask(t *testing.T) {
	t.Parallel()
	_, handlers := newGate(t)
	h := newHarness(t, handlers, gatedPermanentYAML)
	h.engine(orchestration.Config{})
	resolved := h.create("tests", "gated_permanent", "")
	cancelled := h.create("tests", "gated_permanent", "")
	h.waitTasks("error", 20*time.Second, resolved, cancelled)
	ctx := context.Background()

	before := h.countTransitions()
	if err := h.svc.ResolveStep(ctx, h.steps(resolved)["gated"].ID, " ", nil); err == nil {
		t.Error("resolving without a reason was accepted")
	}
	if h.countTransitions() != before {
		t.Error("a refused resolve wrote transitions")
	}
	if err := h.svc.ResolveStep(ctx, h.steps(resolved)["gated"].ID, "fixed by hand", nil); err != nil {
		t.Fatal(err)
	}
	h.waitTasks("complete", 20*time.Second, resolved)
	steps := h.steps(resolved)
	if got := steps["gated"]; !slices.Equal(got.History, []string{"in_progress", "error", "resolved_manually"}) ||
		got.Meta[2]["reason"] != "fixed by hand" || got.Attempts != 1 {
		t.Errorf("resolved step: %v %v attempts %d", got.History, got.Meta[2], got.Attempts)
	}
	if got := steps["after"].History; !slices.Equal(got, simple) {
		t.Errorf("child of the resolved step: %v", got)
	}

	if err := h.svc.CancelStep(ctx, h.steps(cancelled)["gated"].ID, map[string]any{"by": "operator"}); err != nil {
		t.Fatal(err)
	}
	// The task went back to pending for the action, then was settled again: still blocked.
	if got := h.taskHistory(cancelled); !slices.Equal(got, []string{"in_progress", "error", "pending", "error"}) {
		t.Errorf("task history after cancelling its failed step: %v", got)
	}
	if got := h.steps(cancelled)["after"].History; len(got) != 0 {
		t.Errorf("child of a cancelled step ran: %v", got)
	}
}

func TestControlRefusalsWriteNothing(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	h.engine(orchestration.Config{})
	id := h.create("examples", "linear_workflow", "")
	h.waitTasks("complete", 30*time.Second, id)
	ctx := context.Background()
	step := h.steps(id)["initialize_data"]
	before := h.countTransitions()

	for name, err := range map[string]error{
		"retry":   h.svc.RetryStep(ctx, step.ID, nil),
		"cancel":  h.svc.CancelStep(ctx, step.ID, nil),
		"resolve": h.svc.ResolveStep(ctx, step.ID, "why", nil),
	} {
		var te *sm.TransitionError
		if !errors.As(err, &te) || te.From != "complete" || te.ID != step.ID {
			t.Errorf("%s of a complete step: %v, want a TransitionError from complete", name, err)
		}
	}
	for name, err := range map[string]error{
		"retry":       h.svc.RetryStep(ctx, 987654, nil),
		"cancel step": h.svc.CancelStep(ctx, 987654, nil),
		"resolve":     h.svc.ResolveStep(ctx, 987654, "why", nil),
		"cancel task": h.svc.CancelTask(ctx, 987654, nil),
	} {
		if !errs.Is(err, errs.NotFound) {
			t.Errorf("%s of an unknown id: %v, want not found", name, err)
		}
	}
	if after := h.countTransitions(); after != before {
		t.Errorf("refused actions wrote %d transitions", after-before)
	}
	if got := h.steps(id)["initialize_data"]; got.RetryLimit != 3 || !got.Retryable {
		t.Errorf("a refused retry changed the step: %+v", got)
	}
	// Cancelling a complete task is the operator override; its steps are all terminal.
	if err := h.svc.CancelTask(ctx, id, nil); err != nil {
		t.Fatal(err)
	}
	if got := h.taskHistory(id); !slices.Equal(got, []string{"in_progress", "complete", "cancelled"}) {
		t.Errorf("task history %v", got)
	}
}

func TestCancelStepCancelsItsRunningHandler(t *testing.T) {
	t.Parallel()
	h, b, id, stepID := startBlocking(t)
	if err := h.svc.CancelStep(context.Background(), stepID, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, b.ended, "the handler's context to be cancelled")
	// A cancelled step can never let its task complete: with nothing else runnable, error.
	h.waitTasks("error", 10*time.Second, id)
	blk := h.steps(id)["block"]
	if !slices.Equal(blk.History, []string{"in_progress", "cancelled"}) || blk.InProcess || blk.Attempts != 0 {
		t.Errorf("cancelled step: %v in_process %v attempts %d", blk.History, blk.InProcess, blk.Attempts)
	}
}
