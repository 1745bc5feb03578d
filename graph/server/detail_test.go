package server_test

import (
	"context"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/taskerhq/tasker/internal/seed"
)

// oneTaskDetail is the task detail of the peers benchmark (internal/testkit/bench/cmd/peers)
// with the fields of the tasks page that read other projections: parents (steps by id) and
// the execution context (derived from the steps' readiness rows).
const oneTaskDetail = `id status
	transitions { id toState fromState createdAt }
	steps { id name status attempts
		readiness { readyForExecution blockingReason nextRetryAt currentState totalParents completedParents }
		dag { parentStepIds childStepIds dependencyLevel }
		parents { id status }
		transitions { id toState fromState createdAt } }
	executionContext { totalSteps readySteps executionStatus healthStatus completionPercentage }`

// One task's detail is one statement whatever the number of its steps and transitions, and it
// answers exactly what the same fields answer through a page of tasks (which reads every
// level with its own statement), for every task of a generated database of every scenario.
func TestOneTaskDetailIsOneStatement(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	plan, err := seed.Plan(3000, append([]string{"parallel_merge"}, seed.DefaultShapes...), 1000)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := seed.Generate(context.Background(), e.db, 5, plan, nil); err != nil {
		t.Fatal(err)
	}
	if err := e.db.Exec("ANALYZE").Error; err != nil {
		t.Fatal(err)
	}

	// Every task through pages of tasks.
	pages := map[string]json.RawMessage{}
	var after any
	for {
		var page struct {
			Tasks struct {
				PageInfo struct {
					HasNextPage bool
					EndCursor   string
				}
				Nodes []json.RawMessage
			}
		}
		e.data(`query($after: String) { tasks(first: 20, after: $after) { pageInfo { hasNextPage endCursor }
			nodes { `+oneTaskDetail+` } } }`, map[string]any{"after": after}, &page)
		for _, n := range page.Tasks.Nodes {
			var node struct{ ID string }
			if err := json.Unmarshal(n, &node); err != nil {
				t.Fatal(err)
			}
			pages[node.ID] = n
		}
		if !page.Tasks.PageInfo.HasNextPage {
			break
		}
		after = page.Tasks.PageInfo.EndCursor
	}
	if len(pages) < 50 {
		t.Fatalf("%d tasks generated", len(pages))
	}

	// Each task through Query.task: one statement, the same answer.
	fewest, most := -1, 0
	for taskID, want := range pages {
		var out struct{ Task json.RawMessage }
		r := e.data(`query($id: ID!) { task(id: $id) { `+oneTaskDetail+` } }`, map[string]any{"id": taskID}, &out)
		if n := r.Extensions.QueryStats.SQLStatements; n != 1 {
			t.Errorf("task %s: %d statements, want 1", taskID, n)
		}
		if !sameJSON(t, out.Task, want) {
			t.Errorf("task %s: Query.task answers\n%s\nthe page of tasks answers\n%s", taskID, out.Task, want)
		}
		var steps struct{ Steps []json.RawMessage }
		if err := json.Unmarshal(out.Task, &steps); err != nil {
			t.Fatal(err)
		}
		if fewest < 0 || len(steps.Steps) < fewest {
			fewest = len(steps.Steps)
		}
		most = max(most, len(steps.Steps))
	}
	t.Logf("%d tasks of %d to %d steps: one statement each", len(pages), fewest, most)
	if most < 10*fewest {
		t.Errorf("the tasks have %d to %d steps: too alike to show the count does not grow", fewest, most)
	}

	// Fewer fields, fewer parts: still one statement; a missing task is NOT_FOUND.
	for _, q := range []string{
		`query($id: ID!) { task(id: $id) { id steps { id } } }`,
		`query($id: ID!) { task(id: $id) { id transitions { id } } }`,
		`query($id: ID!) { task(id: $id) { id steps { transitions { id } } } }`,
	} {
		for taskID := range pages {
			r := e.do(q, map[string]any{"id": taskID})
			if len(r.Errors) > 0 || r.Extensions.QueryStats.SQLStatements != 1 {
				t.Errorf("%s: errors %+v, %d statements, want none and 1", q, r.Errors, r.Extensions.QueryStats.SQLStatements)
			}
			break
		}
	}
	e.oneError(`query($id: ID!) { task(id: $id) { `+oneTaskDetail+` } }`, map[string]any{"id": "999999999"}, "NOT_FOUND")
}

// sameJSON reports whether two JSON documents hold the same value.
func sameJSON(t *testing.T, a, b json.RawMessage) bool {
	t.Helper()
	var va, vb any
	if err := json.Unmarshal(a, &va); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &vb); err != nil {
		t.Fatal(err)
	}
	return reflect.DeepEqual(va, vb)
}
