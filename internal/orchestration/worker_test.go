package orchestration_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/taskerhq/tasker/internal/database"
	"github.com/taskerhq/tasker/internal/handler"
	"github.com/taskerhq/tasker/internal/orchestration"
	sm "github.com/taskerhq/tasker/internal/statemachine"
	"github.com/taskerhq/tasker/internal/store"
)

const failuresYAML = `
namespace: tests
name: failures
version: 1.0.0
steps:
  - name: root
    handler: {kind: noop, config: {results: {root: 1}}}
  - name: doomed
    depends_on: root
    retry_limit: 2
    handler: {kind: fail, config: {times: 5, retry_after: 3s, error: always failing}}
  - name: after_doomed
    depends_on: doomed
    handler: {kind: noop}
  - name: independent
    depends_on: root
    handler: {kind: sleep, config: {duration: 300ms}}
  - name: after_independent
    depends_on: independent
    handler: {kind: noop}
`

const permanentYAML = `
namespace: tests
name: permanent
version: 1.0.0
steps:
  - name: broken
    handler: {kind: fail, config: {kind: permanent, times: 5, error: cannot ever work}}
  - name: child
    depends_on: broken
    handler: {kind: noop}
`

func TestExhaustedRetriesEndTheTaskInErrorAfterIndependentBranchesFinish(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil, failuresYAML)
	h.engine(orchestration.Config{})
	id := h.create("tests", "failures", "")
	h.waitTasks("error", 30*time.Second, id)

	steps := h.steps(id)
	d := steps["doomed"]
	if d.Attempts != 2 || d.Processed || d.InProcess || d.RetryLimit != 2 {
		t.Errorf("doomed: attempts %d processed %v in_process %v retry_limit %d", d.Attempts, d.Processed, d.InProcess, d.RetryLimit)
	}
	if want := []string{"in_progress", "error", "pending", "in_progress", "error"}; !slices.Equal(d.History, want) {
		t.Errorf("doomed history %v, want %v", d.History, want)
	}
	if d.BackoffRequestSeconds == nil || *d.BackoffRequestSeconds != 3 {
		t.Errorf("doomed backoff_request_seconds %v, want 3 (its Retry-After)", d.BackoffRequestSeconds)
	}
	var res map[string]any
	if err := json.Unmarshal([]byte(d.Results), &res); err != nil || !strings.Contains(fmt.Sprint(res["error"]), "always failing") {
		t.Errorf("doomed results %s do not carry the error", d.Results)
	}
	// The explicit Retry-After (3 s) is longer than the implicit backoff (2 s) and wins.
	if got := d.Times[2].Sub(d.Times[1]); got < 3*time.Second {
		t.Errorf("retry started %s after the failure, before the requested 3s", got)
	}
	for _, name := range []string{"root", "independent", "after_independent"} {
		if st := steps[name].History; !slices.Equal(st, simple) {
			t.Errorf("%s history %v, want %v", name, st, simple)
		}
	}
	if st := steps["after_doomed"].History; len(st) != 0 {
		t.Errorf("after_doomed ran: %v", st)
	}
	if got := h.taskHistory(id); !slices.Equal(got, []string{"in_progress", "error"}) {
		t.Errorf("task history %v", got)
	}
	// The task failed only after the independent branch had finished.
	var failedAt, lastDone time.Time
	h.db.Raw(`SELECT created_at FROM tasker_task_transitions WHERE task_id = ? AND to_state = 'error'`, id).Row().Scan(&failedAt)
	lastDone = steps["after_independent"].Times[1]
	if failedAt.Before(lastDone) {
		t.Errorf("task failed at %s, before the independent branch finished at %s", failedAt, lastDone)
	}
}

func TestPermanentFailureIsNotRetried(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil, permanentYAML)
	h.engine(orchestration.Config{})
	id := h.create("tests", "permanent", "")
	h.waitTasks("error", 20*time.Second, id)
	b := h.steps(id)["broken"]
	if b.Attempts != 1 || b.Retryable || !slices.Equal(b.History, []string{"in_progress", "error"}) {
		t.Errorf("broken: attempts %d retryable %v history %v", b.Attempts, b.Retryable, b.History)
	}
	if b.Meta[1]["permanent"] != true {
		t.Errorf("error transition metadata %v lacks permanent=true", b.Meta[1])
	}
	// The task's settling (the engine's recording call) wrote what FinalizeTask writes: the
	// move to error with the counts of its execution context, which no longer change.
	var got, want string
	if err := h.db.Raw(`SELECT tt.from_state || '>' || tt.to_state || ' ' || tt.metadata::text,
		       'in_progress>error ' || jsonb_build_object('event', 'failed', 'reason', 'blocked_by_failures',
		           'permanently_blocked_steps', ec.permanently_blocked_steps, 'failed_steps', ec.failed_steps)::text
		FROM tasker_task_transitions tt JOIN tasker_task_execution_contexts ec USING (task_id)
		WHERE tt.task_id = ? AND tt.most_recent`, id).Row().Scan(&got, &want); err != nil {
		t.Fatal(err)
	}
	if got != want || !strings.Contains(got, `"failed_steps": 1`) {
		t.Errorf("the task's settling move: %s, want %s with the broken step failed", got, want)
	}
	var reason *string
	h.db.Raw(`SELECT blocking_reason FROM tasker_step_readiness_statuses WHERE workflow_step_id = ?`, b.ID).Row().Scan(&reason)
	if reason == nil || *reason != "not_retryable" {
		t.Errorf("blocking_reason %v, want not_retryable", reason)
	}
}

// invocations is a handler kind that records every invocation by (step, attempt) and the parent
// results it was given. Steps named "flaky" fail their first attempt.
type invocations struct {
	mu      sync.Mutex
	calls   map[[2]int64]int
	parents map[int64][]string
}

func newInvocations() *invocations {
	return &invocations{calls: map[[2]int64]int{}, parents: map[int64][]string{}}
}

func (c *invocations) factory(map[string]any) (handler.Handler, error) {
	return handler.HandlerFunc(func(ctx context.Context, in handler.Input) (handler.Output, error) {
		c.mu.Lock()
		c.calls[[2]int64{in.StepID, int64(in.Attempt)}]++
		names := make([]string, 0, len(in.Parents))
		for n := range in.Parents {
			names = append(names, n)
		}
		slices.Sort(names)
		c.parents[in.StepID] = names
		c.mu.Unlock()
		if in.StepName == "flaky" && in.Attempt == 1 {
			return handler.Output{}, handler.Retryable(errors.New("flaky first attempt"), 0)
		}
		return handler.Output{Results: json.RawMessage(fmt.Sprintf(`{"step": %q}`, in.StepName))}, nil
	}), nil
}

const countedYAML = `
namespace: tests
name: counted
version: 1.0.0
steps:
  - name: a
    handler: {kind: count}
  - name: b
    depends_on: a
    handler: {kind: count}
  - name: flaky
    depends_on: a
    handler: {kind: count}
  - name: d
    depends_on: [b, flaky]
    handler: {kind: count}
  - name: e
    depends_on: d
    handler: {kind: count}
`

// runOnTwoEngines creates n tasks of template tests/name and starts two engines of four
// workers each, polling every poll, on them; it returns the tasks.
func (h *harness) runOnTwoEngines(name string, n int, poll time.Duration) []int64 {
	h.t.Helper()
	ids := make([]int64, n)
	for i := range ids {
		ids[i] = h.create("tests", name, "")
	}
	cfg := orchestration.Config{Workers: 4, PollInterval: poll}
	cfg.WorkerID = "engine-one"
	h.engine(cfg)
	cfg.WorkerID = "engine-two"
	h.engine(cfg)
	return ids
}

func TestTwoEnginesRunEveryAttemptExactlyOnce(t *testing.T) {
	t.Parallel()
	c := newInvocations()
	handlers := handler.NewBuiltinRegistry()
	if err := handlers.Register("count", c.factory); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, handlers, countedYAML)
	const tasks = 200
	ids := h.runOnTwoEngines("counted", tasks, 500*time.Millisecond)
	h.waitTasks("complete", 90*time.Second, ids...)

	var rows []struct {
		WorkflowStepID int64
		Name           string
		Attempts       int
		Processed      bool
		InProcess      bool
	}
	if err := h.db.Raw(`SELECT s.workflow_step_id, ns.name, s.attempts, s.processed, s.in_process
		FROM tasker_workflow_steps s JOIN tasker_named_steps ns USING (named_step_id)
		WHERE s.task_id = ANY(?::bigint[])`, database.Array[int64](ids)).Scan(&rows).Error; err != nil {
		t.Fatal(err)
	}
	if len(rows) != tasks*5 {
		t.Fatalf("%d steps, want %d", len(rows), tasks*5)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	total := 0
	for _, r := range rows {
		want := 1
		if r.Name == "flaky" {
			want = 2
		}
		if r.Attempts != want || !r.Processed || r.InProcess {
			t.Errorf("step %d (%s): attempts %d processed %v in_process %v", r.WorkflowStepID, r.Name, r.Attempts, r.Processed, r.InProcess)
		}
		for a := 1; a <= r.Attempts; a++ {
			if n := c.calls[[2]int64{r.WorkflowStepID, int64(a)}]; n != 1 {
				t.Errorf("step %d (%s) attempt %d ran %d times, want once", r.WorkflowStepID, r.Name, a, n)
			}
		}
		total += r.Attempts
		if r.Name == "d" && !slices.Equal(c.parents[r.WorkflowStepID], []string{"b", "flaky"}) {
			t.Errorf("step d got parents %v, want [b flaky]", c.parents[r.WorkflowStepID])
		}
	}
	if len(c.calls) != total {
		t.Errorf("%d distinct invocations, want %d", len(c.calls), total)
	}
	var workers []string
	h.db.Raw(`SELECT DISTINCT metadata->>'worker_id' FROM tasker_workflow_step_transitions
		WHERE to_state = 'in_progress' ORDER BY 1`).Scan(&workers)
	t.Logf("steps were started by %v", workers)
}

// TestStepWithExpiredLeaseIsRecovered: a step left in_progress by a dead worker is taken back
// once its lease has run out (a lost attempt, then retried and completed), and the observer
// is told of the recovery.
func TestStepWithExpiredLeaseIsRecovered(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	id := h.create("examples", "linear_workflow", "")
	first := h.steps(id)["initialize_data"].ID
	ctx := context.Background()
	// A worker that died mid-step: claimed, in_progress, lease already run out.
	if _, err := sm.TransitionStep(ctx, store.New(h.db), first, "in_progress", map[string]any{"worker_id": "dead"}); err != nil {
		t.Fatal(err)
	}
	if _, err := sm.TransitionTask(ctx, store.New(h.db), id, "in_progress", nil); err != nil {
		t.Fatal(err)
	}
	if err := h.db.Exec(`UPDATE tasker_workflow_steps SET in_process = true, claimed_by = 'dead',
		claim_token = gen_random_uuid(), claim_expires_at = now() - interval '1 second'
		WHERE workflow_step_id = ?`, first).Error; err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	h.engine(orchestration.Config{RecoveryInterval: 50 * time.Millisecond, Observer: rec})
	h.waitTasks("complete", 30*time.Second, id)
	rec.mu.Lock()
	if rec.recovered != 1 {
		t.Errorf("the observer was told of %d recovered steps, want 1", rec.recovered)
	}
	rec.mu.Unlock()
	si := h.steps(id)["initialize_data"]
	if !slices.Equal(si.History, once) || si.Attempts != 2 {
		t.Fatalf("recovered step: history %v attempts %d, want %v and 2", si.History, si.Attempts, once)
	}
	if si.Meta[1]["reason"] != "lease_expired" || si.Meta[1]["claimed_by"] != "dead" {
		t.Errorf("recovery metadata %v", si.Meta[1])
	}
	checkBackoff(t, si)
}

// blocker is a handler kind that reports when it starts and how its context ended.
type blocker struct {
	started chan int64
	ended   chan error
}

func (b *blocker) factory(map[string]any) (handler.Handler, error) {
	return handler.HandlerFunc(func(ctx context.Context, in handler.Input) (handler.Output, error) {
		b.started <- in.StepID
		<-ctx.Done()
		b.ended <- context.Cause(ctx)
		return handler.Output{}, ctx.Err()
	}), nil
}

const blockingYAML = `
namespace: tests
name: blocking
version: 1.0.0
steps:
  - name: first
    handler: {kind: noop}
  - name: block
    depends_on: first
    timeout: 1m
    handler: {kind: block}
  - name: last
    depends_on: block
    handler: {kind: noop}
`

func newBlocker(t *testing.T) (*blocker, *handler.Registry) {
	b := &blocker{started: make(chan int64, 4), ended: make(chan error, 4)}
	handlers := handler.NewBuiltinRegistry()
	if err := handlers.Register("block", b.factory); err != nil {
		t.Fatal(err)
	}
	return b, handlers
}

func waitFor[T any](t *testing.T, c <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-c:
		return v
	case <-time.After(20 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
	panic("unreachable")
}

// startBlocking starts an engine on a task of the blocking template and returns once its step's
// handler runs, with the task's and the step's ids.
func startBlocking(t *testing.T) (h *harness, b *blocker, taskID, stepID int64) {
	t.Helper()
	b, handlers := newBlocker(t)
	h = newHarness(t, handlers, blockingYAML)
	h.engine(orchestration.Config{})
	taskID = h.create("tests", "blocking", "")
	return h, b, taskID, waitFor(t, b.started, "the handler to start")
}

func TestCancelTaskCancelsTheRunningHandler(t *testing.T) {
	t.Parallel()
	h, b, id, stepID := startBlocking(t)
	// Cancel through another connection pool, as the API process would.
	if err := orchestration.NewService(openDB(t, h.url), nil).CancelTask(context.Background(), id, map[string]any{"by": "operator"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, b.ended, "the handler's context to be cancelled")
	h.waitTasks("cancelled", 10*time.Second, id)
	steps := h.steps(id)
	blk := steps["block"]
	if blk.ID != stepID || !slices.Equal(blk.History, []string{"in_progress", "cancelled"}) || blk.InProcess || blk.Attempts != 0 {
		t.Errorf("cancelled step: history %v in_process %v attempts %d", blk.History, blk.InProcess, blk.Attempts)
	}
	if blk.Meta[1]["by"] != "operator" || blk.Meta[1]["reason"] != "task_cancelled" {
		t.Errorf("cancel metadata %v", blk.Meta[1])
	}
	if got := steps["last"].History; !slices.Equal(got, []string{"cancelled"}) {
		t.Errorf("last: %v", got)
	}
	if got := steps["first"].History; !slices.Equal(got, simple) {
		t.Errorf("first: %v (a complete step stays complete)", got)
	}
	// Cancelling again is refused and writes nothing.
	err := h.svc.CancelTask(context.Background(), id, nil)
	var te *sm.TransitionError
	if !errors.As(err, &te) || te.From != "cancelled" {
		t.Errorf("second cancel: %v", err)
	}
}

func TestStopDrainsThenReleasesRunningSteps(t *testing.T) {
	t.Parallel()
	b, handlers := newBlocker(t)
	h := newHarness(t, handlers, blockingYAML)
	eng := h.engine(orchestration.Config{DrainTimeout: 200 * time.Millisecond})
	id := h.create("tests", "blocking", "")
	waitFor(t, b.started, "the handler to start")
	begin := time.Now()
	if err := eng.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := eng.Stop(context.Background()); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if took := time.Since(begin); took < 200*time.Millisecond || took > 5*time.Second {
		t.Errorf("Stop took %s, want the 200ms drain deadline then a prompt stop", took)
	}
	waitFor(t, b.ended, "the handler's context to be cancelled")
	blk := h.steps(id)["block"]
	if !slices.Equal(blk.History, []string{"in_progress", "error"}) || blk.Attempts != 1 || blk.InProcess {
		t.Errorf("stopped step: history %v attempts %d in_process %v", blk.History, blk.Attempts, blk.InProcess)
	}
	if blk.Meta[1]["reason"] != "worker_stopped" {
		t.Errorf("metadata %v", blk.Meta[1])
	}
	if err := eng.Start(context.Background()); err == nil {
		t.Error("a stopped engine started again")
	}
}

const sleepingYAML = `
namespace: tests
name: sleeping
version: 1.0.0
steps:
  - name: a
    timeout: 1m
    handler: {kind: slow}
  - name: b
    timeout: 1m
    handler: {kind: slow}
`

// Steps that run for several leases keep their claims: the engine renews every running step's
// lease every third of it, so the recovery of expired leases (every 50ms here) never takes a
// step from a live worker.
func TestLeasesAreRenewedWhileStepsRun(t *testing.T) {
	t.Parallel()
	handlers := handler.NewBuiltinRegistry()
	if err := handlers.Register("slow", func(map[string]any) (handler.Handler, error) {
		return handler.HandlerFunc(func(ctx context.Context, _ handler.Input) (handler.Output, error) {
			select {
			case <-time.After(1500 * time.Millisecond):
				return handler.Output{}, nil
			case <-ctx.Done():
				return handler.Output{}, context.Cause(ctx)
			}
		}), nil
	}); err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, handlers, sleepingYAML)
	h.engine(orchestration.Config{LeaseDuration: 300 * time.Millisecond, RecoveryInterval: 50 * time.Millisecond})
	ids := []int64{h.create("tests", "sleeping", ""), h.create("tests", "sleeping", "")}
	h.waitTasks("complete", 30*time.Second, ids...)
	for _, id := range ids {
		for name, s := range h.steps(id) {
			if !slices.Equal(s.History, simple) || s.Attempts != 1 {
				t.Errorf("task %d step %s: history %v attempts %d, want %v and 1", id, name, s.History, s.Attempts, simple)
			}
		}
	}
}

// A running step whose claim is taken away without a transition (its token changed, as by
// another engine's recovery) is cancelled with a lost claim when its lease is next renewed,
// and its result is discarded.
func TestLostClaimFoundByRenewalCancelsTheHandler(t *testing.T) {
	t.Parallel()
	b, handlers := newBlocker(t)
	h := newHarness(t, handlers, blockingYAML)
	h.engine(orchestration.Config{LeaseDuration: 600 * time.Millisecond, RecoveryInterval: time.Hour})
	id := h.create("tests", "blocking", "")
	stepID := waitFor(t, b.started, "the handler to start")
	if err := h.db.Exec(`UPDATE tasker_workflow_steps SET claim_token = gen_random_uuid() WHERE workflow_step_id = ?`,
		stepID).Error; err != nil {
		t.Fatal(err)
	}
	if cause := waitFor(t, b.ended, "the handler's context to be cancelled"); cause == nil ||
		!strings.Contains(cause.Error(), "claim lost") {
		t.Fatalf("handler ended with %v, want a lost claim", cause)
	}
	if got := h.steps(id)["block"]; !slices.Equal(got.History, []string{"in_progress"}) || got.Attempts != 0 {
		t.Errorf("step with a lost claim: history %v attempts %d, want [in_progress] and 0 (nothing recorded)", got.History, got.Attempts)
	}
}

// An operator's cancellation reaches the running handler as a lost claim, through the step's
// transition event.
func TestCancelledStepsHandlerEndsWithALostClaim(t *testing.T) {
	t.Parallel()
	h, b, id, _ := startBlocking(t)
	if err := orchestration.NewService(openDB(t, h.url), nil).CancelTask(context.Background(), id, nil); err != nil {
		t.Fatal(err)
	}
	if cause := waitFor(t, b.ended, "the handler's context to be cancelled"); cause == nil ||
		!strings.Contains(cause.Error(), "claim lost") {
		t.Fatalf("handler ended with %v, want a lost claim", cause)
	}
}
