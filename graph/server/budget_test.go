package server_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/taskerhq/tasker/graph/server"
	"github.com/taskerhq/tasker/internal/shape"
	"github.com/taskerhq/tasker/internal/testkit/fixture"
)

// budgetQuery is the dashboard-shaped query whose cost must not grow with the data: tasks,
// their steps with readiness, DAG, parents and transitions, and the task projections.
const budgetQuery = `query($first: Int) { tasks(first: $first) { nodes {
	id status
	steps {
		id name status
		readiness { stepId currentState readyForExecution blockingReason nextRetryAt totalParents completedParents }
		dag { parentStepIds childStepIds parentCount childCount isRootStep isLeafStep minDepthFromRoot dependencyLevel }
		parents { id status }
		transitions { id fromState toState createdAt }
	}
	executionContext { totalSteps readySteps executionStatus healthStatus completionPercentage }
	workflowSummary { readyStepIds blockedStepIds blockingReasons parallelismPotential maxDependencyLevel }
} } }`

// maxBudget is the statement budget of budgetQuery: one per field level (tasks, steps,
// readiness, dag, parents, transitions, contexts, summaries), whatever the number of tasks.
const maxBudget = 10

func seedWide(t testing.TB, fx *fixture.Builder, tasks int) {
	t.Helper()
	s, err := shape.Wide(10)
	if err != nil {
		t.Fatal(err)
	}
	for i := range tasks {
		tk := fx.Task(s)
		if i%2 == 0 {
			tk.Complete("root")
		}
	}
}

func TestStatementBudgetIsConstant(t *testing.T) {
	t.Parallel()
	constantBudget(t, func(e *env, n int) response {
		var out struct {
			Tasks struct {
				Nodes []struct {
					Steps []struct {
						Parents     []struct{ Status string }
						Transitions []json.RawMessage
					}
				}
			}
		}
		r := e.data(budgetQuery, map[string]any{"first": n}, &out)
		if len(out.Tasks.Nodes) != n || len(out.Tasks.Nodes[0].Steps) != 10 {
			t.Fatalf("%d tasks: got %d tasks", n, len(out.Tasks.Nodes))
		}
		// Spot check that the data is really there: a completed root's children see it.
		var completeParents int
		for _, tk := range out.Tasks.Nodes {
			for _, s := range tk.Steps {
				for _, p := range s.Parents {
					if p.Status == "COMPLETE" {
						completeParents++
					}
				}
			}
		}
		if want := (n + 1) / 2 * 8; completeParents != want {
			t.Errorf("%d tasks: %d complete parents, want %d", n, completeParents, want)
		}
		return r
	})
}

// constantBudget runs query over a fresh database of 10 and then 100 wide tasks (seedWide)
// and checks that each response ran at most maxBudget statements, and as many for 100 tasks
// as for 10.
func constantBudget(t *testing.T, query func(e *env, n int) response) {
	t.Helper()
	counts := map[int]int64{}
	for _, n := range []int{10, 100} {
		e := newEnv(t)
		seedWide(t, e.fx, n)
		stats := query(e, n).Extensions.QueryStats
		if stats == nil {
			t.Fatalf("%d tasks: no queryStats", n)
		}
		t.Logf("%d tasks x 10 steps: %d statements, %.2f ms in the database", n, stats.SQLStatements, stats.DBTimeMs)
		if stats.SQLStatements > maxBudget {
			t.Errorf("%d tasks: %d statements, budget %d", n, stats.SQLStatements, maxBudget)
		}
		counts[n] = stats.SQLStatements
	}
	if counts[10] != counts[100] {
		t.Errorf("statements grow with data: %d for 10 tasks, %d for 100", counts[10], counts[100])
	}
}

func TestLimitsRefuseBeforeAnySQL(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *server.Config) { c.MaxComplexity = 500; c.MaxDepth = 5 })
	seedWide(t, e.fx, 1)
	cases := []struct {
		name, query, code, message string
	}{
		{"complexity", budgetQuery, "COMPLEXITY_LIMIT_EXCEEDED", "exceeds the limit of 500"},
		{"depth", `{ tasks(first: 1) { nodes { steps { parents { children { task { id } } } } } } }`,
			"DEPTH_LIMIT_EXCEEDED", "operation has depth 7, which exceeds the limit of 5"},
		{"depth through fragments", `{ tasks(first: 1) { ...A } }
			fragment A on TaskConnection { nodes { steps { ...B } } }
			fragment B on Step { parents { children { id } } }`,
			"DEPTH_LIMIT_EXCEEDED", "operation has depth 6"},
	}
	for _, c := range cases {
		r := e.do(c.query, map[string]any{"first": 100})
		if len(r.Errors) != 1 || r.Errors[0].Extensions["code"] != c.code || !strings.Contains(r.Errors[0].Message, c.message) {
			t.Errorf("%s: errors %+v, want one %s containing %q", c.name, r.Errors, c.code, c.message)
		}
		if string(r.Data) != "" && string(r.Data) != "null" {
			t.Errorf("%s: data %s on a refused request", c.name, r.Data)
		}
		if r.Extensions.QueryStats == nil || r.Extensions.QueryStats.SQLStatements != 0 {
			t.Errorf("%s: queryStats %+v, want 0 statements", c.name, r.Extensions.QueryStats)
		}
	}
	// Within the limits the same server answers, and introspection depth does not count.
	var ok struct {
		Tasks struct{ Nodes []struct{ ID string } }
	}
	e.data(`{ tasks(first: 1) { nodes { id } } __schema { types { fields { type { ofType { ofType { name } } } } } } }`, nil, &ok)
	if len(ok.Tasks.Nodes) != 1 {
		t.Errorf("tasks within limits: %+v", ok)
	}
}

func TestQueryStatsOffByDefault(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *server.Config) { c.QueryStats = false })
	r := e.do(`{ namespaces { name } }`, nil)
	if len(r.Errors) != 0 || r.Extensions.QueryStats != nil {
		t.Fatalf("errors %+v, queryStats %+v: want none", r.Errors, r.Extensions.QueryStats)
	}
}
