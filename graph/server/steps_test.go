package server_test

import (
	"slices"
	"testing"
	"time"

	"github.com/taskerhq/tasker/graph/server"
	"github.com/taskerhq/tasker/internal/models"
	"github.com/taskerhq/tasker/internal/testkit/fixture"
)

const stepsQuery = `query($filter: StepFilter, $first: Int, $after: String) {
	steps(filter: $filter, first: $first, after: $after) {
		nodes { id name status task { id } readiness { readyForExecution blockingReason } }
		edges { cursor node { id } }
		pageInfo { hasNextPage endCursor }
	}
}`

type stepsPage struct {
	Steps struct {
		Nodes []struct {
			ID        string
			Name      string
			Status    string
			Task      struct{ ID string }
			Readiness struct {
				ReadyForExecution bool
				BlockingReason    *string
			}
		}
		Edges []struct {
			Cursor string
			Node   struct{ ID string }
		}
		PageInfo struct {
			HasNextPage bool
			EndCursor   *string
		}
	}
}

// allSteps pages through Query.steps with filter, size at a time, and returns the ids in the
// order served, checking that each page's edges match its nodes.
func (e *env) allSteps(filter map[string]any, size int) []string {
	e.t.Helper()
	var ids []string
	vars := map[string]any{"filter": filter, "first": size}
	for range 100 {
		var out stepsPage
		e.data(stepsQuery, vars, &out)
		p := out.Steps
		if len(p.Edges) != len(p.Nodes) {
			e.t.Fatalf("%d edges for %d nodes", len(p.Edges), len(p.Nodes))
		}
		for i, n := range p.Nodes {
			if p.Edges[i].Node.ID != n.ID {
				e.t.Fatalf("edge %d is step %s, node is %s", i, p.Edges[i].Node.ID, n.ID)
			}
			ids = append(ids, n.ID)
		}
		if !p.PageInfo.HasNextPage {
			return ids
		}
		if len(p.Nodes) != size || p.PageInfo.EndCursor == nil || *p.PageInfo.EndCursor != p.Edges[size-1].Cursor {
			e.t.Fatalf("a page with more after it has %d nodes and end cursor %v", len(p.Nodes), p.PageInfo.EndCursor)
		}
		vars["after"] = *p.PageInfo.EndCursor
	}
	e.t.Fatal("paging does not end")
	return nil
}

// TestStepsAnswersWhatIsReadyAndWhatIsBlocked runs Query.steps through the real server: the
// ready steps and the blocked ones by reason, across tasks, newest first, page by page, and
// within a task or a namespace.
func TestStepsAnswersWhatIsReadyAndWhatIsBlocked(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	d := e.fx.Task(fixture.Diamond) // ready: start_workflow
	l := e.fx.Task(fixture.Linear)
	l.Complete("initialize_data") // ready: validate_input
	l.Fail("validate_input", 0)   // ... now in backoff instead
	m := e.fx.Task(fixture.Mixed) // ready: init_auth, init_config
	m.Set("init_auth", fixture.InProcess(true))
	m.Transition("init_config", 0, models.StateCancelled)
	p := e.fx.Task(fixture.ParallelMerge) // ready: the four fetch steps
	p.Complete("fetch_user_data")

	want := map[string]bool{
		id(d.Step("start_workflow")):       true,
		id(p.Step("fetch_order_data")):     true,
		id(p.Step("fetch_inventory_data")): true,
		id(p.Step("fetch_pricing_data")):   true,
		id(p.Step("process_user_data")):    true,
	}
	ready := e.allSteps(map[string]any{"ready": true}, 2)
	if len(ready) != len(want) {
		t.Fatalf("ready steps %v, want the %d of %v", ready, len(want), want)
	}
	for _, s := range ready {
		if !want[s] {
			t.Errorf("step %s listed as ready", s)
		}
	}
	if !slices.IsSortedFunc(ready, func(a, b string) int { return cmpIDs(b, a) }) {
		t.Errorf("ready steps %v are not newest first", ready)
	}

	blocked := map[string][]string{
		"BACKOFF":           {id(l.Step("validate_input"))},
		"IN_PROGRESS":       {id(m.Step("init_auth"))},
		"TERMINAL_STATE":    {id(m.Step("init_config"))},
		"ALREADY_PROCESSED": {id(p.Step("fetch_user_data")), id(l.Step("initialize_data"))},
	}
	for reason, ids := range blocked {
		slices.SortFunc(ids, func(a, b string) int { return cmpIDs(b, a) })
		got := e.allSteps(map[string]any{"blockingReason": []string{reason}}, 20)
		if !slices.Equal(got, ids) {
			t.Errorf("blocked by %s: %v, want %v", reason, got, ids)
		}
	}
	var out stepsPage
	e.data(stepsQuery, map[string]any{"filter": map[string]any{"blockingReason": []string{"BACKOFF"}}}, &out)
	if n := out.Steps.Nodes; len(n) != 1 || n[0].Status != "ERROR" || n[0].Name != "validate_input" ||
		n[0].Task.ID != id(l.ID) || n[0].Readiness.BlockingReason == nil || *n[0].Readiness.BlockingReason != "BACKOFF" {
		t.Errorf("the step in backoff reads %+v", n)
	}

	inTask := e.allSteps(map[string]any{"taskId": id(p.ID), "ready": true}, 50)
	if len(inTask) != 4 {
		t.Errorf("ready steps of task %d: %v, want 4", p.ID, inTask)
	}
	if got := e.allSteps(map[string]any{"namespace": "no_such_namespace"}, 50); len(got) != 0 {
		t.Errorf("steps of an unknown namespace: %v", got)
	}
	every := e.allSteps(map[string]any{"namespace": fixture.Namespace}, 500)
	if len(every) != 7+6+9+7 {
		t.Errorf("steps of the fixture namespace: %d, want %d", len(every), 7+6+9+7)
	}
	errored := e.allSteps(map[string]any{"state": []string{"ERROR", "CANCELLED"}}, 50)
	if len(errored) != 2 {
		t.Errorf("steps in error or cancelled: %v, want 2", errored)
	}
}

// cmpIDs orders decimal ids numerically.
func cmpIDs(a, b string) int {
	if len(a) != len(b) {
		return len(a) - len(b)
	}
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func TestStepsRefusesBadArguments(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.fx.Task(fixture.Diamond)
	e.oneError(stepsQuery, map[string]any{"first": 0}, "VALIDATION")
	e.oneError(stepsQuery, map[string]any{"first": 501}, "VALIDATION")
	e.oneError(stepsQuery, map[string]any{"after": "nonsense"}, "VALIDATION")
	e.oneError(stepsQuery, map[string]any{"filter": map[string]any{"taskId": "0"}}, "VALIDATION")
	e.oneError(stepsQuery, map[string]any{"filter": map[string]any{"blockingReason": []string{"LAZY"}}}, "GRAPHQL_VALIDATION_FAILED")
	// A cursor of Query.tasks is not a cursor of Query.steps.
	var tasks struct {
		Tasks struct{ PageInfo struct{ EndCursor string } }
	}
	e.data(`{ tasks(first: 1) { pageInfo { endCursor } } }`, nil, &tasks)
	bad := e.oneError(stepsQuery, map[string]any{"after": tasks.Tasks.PageInfo.EndCursor}, "VALIDATION")
	if bad.Message == "" {
		t.Error("no message")
	}
}

// stepsBudgetQuery is the "what is ready" screen: a page of steps with their readiness, DAG,
// parents, transitions and task.
const stepsBudgetQuery = `query($first: Int) { steps(filter: {ready: true}, first: $first) { nodes {
	id name status
	readiness { currentState readyForExecution blockingReason nextRetryAt totalParents completedParents }
	dag { parentStepIds childStepIds dependencyLevel }
	parents { id status }
	transitions { id toState createdAt }
	task { id status }
} } }`

func TestStepsStatementBudgetIsConstant(t *testing.T) {
	t.Parallel()
	// Even tasks: 8 ready children of a complete root; odd tasks: a ready root.
	constantBudget(t, func(e *env, n int) response {
		var out struct {
			Steps struct {
				Nodes []struct {
					Parents []struct{ Status string }
				}
			}
		}
		r := e.data(stepsBudgetQuery, map[string]any{"first": 500}, &out)
		if want := (n+1)/2*8 + n/2; len(out.Steps.Nodes) != want {
			t.Fatalf("%d tasks: %d ready steps, want %d", n, len(out.Steps.Nodes), want)
		}
		withParent := 0
		for _, s := range out.Steps.Nodes {
			if len(s.Parents) == 1 && s.Parents[0].Status == "COMPLETE" {
				withParent++
			}
		}
		if want := (n + 1) / 2 * 8; withParent != want {
			t.Errorf("%d tasks: %d ready steps with a complete parent, want %d", n, withParent, want)
		}
		return r
	})
}

// detailQuery is one task's detail: its transitions, its steps with readiness, DAG, parents
// and transitions.
const detailQuery = `query($id: ID!) { task(id: $id) { id status
	transitions { id toState }
	steps { id name status
		readiness { readyForExecution blockingReason }
		dag { parentStepIds dependencyLevel }
		parents { id status }
		transitions { id toState } } } }`

// TestOneObjectWaitsForNoBatchWindow gives the dataloaders a batch window of 10 s: a query of
// one task or one step with fields below it must still answer at once, with one statement per
// level, because the root object is read directly and every level below it is prefetched
// rather than batched by time.
func TestOneObjectWaitsForNoBatchWindow(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *server.Config) { c.Loaders.Wait = 10 * time.Second })
	d := e.fx.Task(fixture.Diamond)
	d.Complete("start_workflow")
	begin := time.Now()
	var out struct {
		Task struct {
			Steps []struct {
				Name    string
				Parents []struct{ Status string }
			}
		}
	}
	r := e.data(detailQuery, map[string]any{"id": id(d.ID)}, &out)
	if took := time.Since(begin); took > 5*time.Second {
		t.Fatalf("one task's detail took %s: a level waited for a batch window", took)
	}
	if len(out.Task.Steps) != 7 {
		t.Fatalf("task has %d steps, want 7", len(out.Task.Steps))
	}
	for _, s := range out.Task.Steps {
		if s.Name == "branch_one_process" && (len(s.Parents) != 1 || s.Parents[0].Status != "COMPLETE") {
			t.Errorf("branch_one_process parents: %+v", s.Parents)
		}
	}
	// task, its transitions, steps with their readiness and DAG rows, and the steps'
	// transitions: one statement (models.TaskDetailByID).
	if n := r.Extensions.QueryStats.SQLStatements; n != 1 {
		t.Errorf("one task's detail ran %d statements, want 1", n)
	}

	begin = time.Now()
	var step struct {
		Step struct {
			Readiness struct{ ReadyForExecution bool }
			Parents   []struct{ ID string }
			Task      struct{ ID string }
		}
	}
	e.data(`query($id: ID!) { step(id: $id) { readiness { readyForExecution } parents { id } task { id } } }`,
		map[string]any{"id": id(d.Step("branch_one_process"))}, &step)
	if took := time.Since(begin); took > 5*time.Second {
		t.Fatalf("one step took %s: a level waited for a batch window", took)
	}
	if !step.Step.Readiness.ReadyForExecution || len(step.Step.Parents) != 1 || step.Step.Task.ID != id(d.ID) {
		t.Errorf("step reads %+v", step.Step)
	}
	e.oneError(detailQuery, map[string]any{"id": "999999"}, "NOT_FOUND")
}
