package server_test

import (
	"strings"
	"testing"
	"time"

	"github.com/taskerhq/tasker/internal/models"
	"github.com/taskerhq/tasker/internal/testkit/fixture"
)

const createTask = `mutation($in: CreateTaskInput!) { createTask(input: $in) {
	id status context tags initiator reason namespace { name } namedTask { name version }
	steps { name status } } }`

type createdTask struct {
	CreateTask struct {
		ID, Status, Initiator, Reason string
		Context, Tags                 map[string]any
		Namespace                     struct{ Name string }
		NamedTask                     struct{ Name, Version string }
		Steps                         []struct{ Name, Status string }
	}
}

func (e *env) count(table string) int64 {
	e.t.Helper()
	var n int64
	if err := e.db.Raw("SELECT count(*) FROM " + table).Row().Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

func TestCreateTask(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	in := map[string]any{"namespace": "examples", "name": "linear_workflow", "context": map[string]any{"batch_size": 5},
		"initiator": "ops", "reason": "nightly", "tags": map[string]any{"team": "data"}, "idempotencyKey": "k1"}
	var out createdTask
	e.data(createTask, map[string]any{"in": in}, &out)
	got := out.CreateTask
	if got.Status != "PENDING" || got.NamedTask.Name != "linear_workflow" || got.Namespace.Name != "examples" ||
		got.Initiator != "ops" || got.Reason != "nightly" || got.Context["batch_size"] != 5.0 || got.Tags["team"] != "data" {
		t.Fatalf("created task = %+v", got)
	}
	if len(got.Steps) != 6 || got.Steps[0].Name != "initialize_data" || got.Steps[5].Status != "PENDING" {
		t.Fatalf("steps = %+v", got.Steps)
	}
	// Same key: the same task, nothing new.
	tasks := e.count("tasker_tasks")
	var again createdTask
	e.data(createTask, map[string]any{"in": in}, &again)
	if again.CreateTask.ID != got.ID || e.count("tasker_tasks") != tasks {
		t.Fatalf("idempotent create returned %s (first %s), tasks %d -> %d", again.CreateTask.ID, got.ID, tasks, e.count("tasker_tasks"))
	}

	cases := []struct {
		name string
		in   map[string]any
		code string
		says string
	}{
		{"context refused by the schema", map[string]any{"namespace": "examples", "name": "linear_workflow",
			"context": map[string]any{"batch_size": 0}}, "VALIDATION", "context"},
		{"unknown template", map[string]any{"namespace": "examples", "name": "no_such_workflow"}, "NOT_FOUND", "no_such_workflow"},
		{"key used for another template", map[string]any{"namespace": "examples", "name": "diamond_workflow",
			"idempotencyKey": "k1"}, "CONFLICT", "k1"},
		{"tags not an object", map[string]any{"namespace": "examples", "name": "linear_workflow", "tags": "x"}, "VALIDATION", "tags"},
	}
	for _, c := range cases {
		err := e.oneError(createTask, map[string]any{"in": c.in}, c.code)
		if !strings.Contains(err.Message, c.says) {
			t.Errorf("%s: message %q does not mention %q", c.name, err.Message, c.says)
		}
	}
	if e.count("tasker_tasks") != tasks {
		t.Errorf("refused creates wrote tasks: %d -> %d", tasks, e.count("tasker_tasks"))
	}
}

const stepResult = `{ id status attempts retryLimit readiness { readyForExecution blockingReason }
	transitions { fromState toState metadata } }`

type stepResultJSON struct {
	ID, Status string
	Attempts   int
	RetryLimit int
	Readiness  struct {
		ReadyForExecution bool
		BlockingReason    *string
	}
	Transitions []struct {
		FromState *string
		ToState   string
		Metadata  map[string]any
	}
}

func TestStepActions(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tk := e.fx.Task(fixture.FourStep)
	tk.TaskTransition(time.Minute, models.StateInProgress)
	tk.Fail("one", time.Minute)
	tk.Set("one", fixture.Attempts(3))

	// retry an exhausted step: pending with one more attempt.
	var retried struct{ RetryStep stepResultJSON }
	e.data(`mutation($id: ID!) { retryStep(id: $id) `+stepResult+` }`, map[string]any{"id": id(tk.Step("one"))}, &retried)
	r := retried.RetryStep
	if r.Status != "PENDING" || r.RetryLimit != 4 || !r.Readiness.ReadyForExecution {
		t.Fatalf("retried step = %+v", r)
	}
	if last := r.Transitions[len(r.Transitions)-1]; last.ToState != "PENDING" || last.Metadata["source"] != "graphql" {
		t.Fatalf("retry transition = %+v", last)
	}

	// Resolving two by hand lets three run.
	var resolved struct{ ResolveStepManually stepResultJSON }
	e.data(`mutation($id: ID!) { resolveStepManually(id: $id, reason: "done by hand") `+stepResult+` }`,
		map[string]any{"id": id(tk.Step("two"))}, &resolved)
	if resolved.ResolveStepManually.Status != "RESOLVED_MANUALLY" {
		t.Fatalf("resolved = %+v", resolved.ResolveStepManually)
	}
	var three struct{ Step stepResultJSON }
	e.data(`query($id: ID!) { step(id: $id) `+stepResult+` }`, map[string]any{"id": id(tk.Step("three"))}, &three)
	if !three.Step.Readiness.ReadyForExecution {
		t.Fatalf("three after its parent was resolved = %+v", three.Step)
	}

	var cancelled struct{ CancelStep stepResultJSON }
	e.data(`mutation($id: ID!) { cancelStep(id: $id) `+stepResult+` }`, map[string]any{"id": id(tk.Step("four"))}, &cancelled)
	if cancelled.CancelStep.Status != "CANCELLED" {
		t.Fatalf("cancelled = %+v", cancelled.CancelStep)
	}

	// Refusals: coded errors, nothing written.
	before := e.count("tasker_workflow_step_transitions")
	refusals := []struct {
		query string
		id    int64
		code  string
	}{
		{`mutation($id: ID!) { cancelStep(id: $id) { id } }`, tk.Step("four"), "INVALID_TRANSITION"},
		{`mutation($id: ID!) { retryStep(id: $id) { id } }`, tk.Step("three"), "INVALID_TRANSITION"},
		{`mutation($id: ID!) { resolveStepManually(id: $id, reason: "again") { id } }`, tk.Step("two"), "INVALID_TRANSITION"},
		{`mutation($id: ID!) { resolveStepManually(id: $id) { id } }`, tk.Step("three"), "VALIDATION"},
		{`mutation($id: ID!) { cancelStep(id: $id) { id } }`, 999999, "NOT_FOUND"},
		{`mutation($id: ID!) { retryStep(id: $id) { id } }`, 999999, "NOT_FOUND"},
		{`mutation($id: ID!) { cancelTask(id: $id) { id } }`, 999999, "NOT_FOUND"},
	}
	for _, c := range refusals {
		err := e.oneError(c.query, map[string]any{"id": id(c.id)}, c.code)
		if !strings.Contains(err.Message, id(c.id)) {
			t.Errorf("%s on %d: message %q does not name the id", c.code, c.id, err.Message)
		}
	}
	if after := e.count("tasker_workflow_step_transitions"); after != before {
		t.Errorf("refused actions wrote %d transitions", after-before)
	}
}

func TestCancelTask(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tk := e.fx.Task(fixture.Diamond)
	tk.TaskTransition(time.Minute, models.StateInProgress)
	tk.Complete("start_workflow")
	var out struct {
		CancelTask struct {
			Status string
			Steps  []struct{ Name, Status string }
		}
	}
	e.data(`mutation($id: ID!) { cancelTask(id: $id) { status steps { name status } } }`, map[string]any{"id": id(tk.ID)}, &out)
	if out.CancelTask.Status != "CANCELLED" {
		t.Fatalf("task status = %s", out.CancelTask.Status)
	}
	for _, s := range out.CancelTask.Steps {
		want := "CANCELLED"
		if s.Name == "start_workflow" {
			want = "COMPLETE"
		}
		if s.Status != want {
			t.Errorf("step %s = %s, want %s", s.Name, s.Status, want)
		}
	}
	e.oneError(`mutation($id: ID!) { cancelTask(id: $id) { id } }`, map[string]any{"id": id(tk.ID)}, "INVALID_TRANSITION")
}
