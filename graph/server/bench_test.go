package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"gorm.io/gorm"

	"github.com/taskerhq/tasker/internal/models"
	"github.com/taskerhq/tasker/internal/querystats"
	"github.com/taskerhq/tasker/internal/testkit/fixture"
)

// BenchmarkDashboardQuery runs budgetQuery over 10, 100 and 1,000 tasks of 10 steps through
// the real HTTP handler (dataloaders), against a naive path that loads every object with its
// own statement (the N+1 walk the API avoids). It reports statements per request.
//
//	go test ./graph/server -run '^$' -bench DashboardQuery -benchtime 5x
func BenchmarkDashboardQuery(b *testing.B) {
	for _, n := range []int{10, 100, 1000} {
		e := newEnv(b)
		seedWide(b, e.fx, n)
		// Fresh tables have no statistics until autovacuum gets to them; measure the plans a
		// running server gets.
		if err := e.db.Exec("ANALYZE").Error; err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("tasks=%d/dataloaders", n), func(b *testing.B) {
			var stmts int64
			for b.Loop() {
				stmts = pagedDashboard(b, e, n)
			}
			b.ReportMetric(float64(stmts), "stmts/op")
		})
		b.Run(fmt.Sprintf("tasks=%d/naive", n), func(b *testing.B) {
			var stmts int64
			for b.Loop() {
				ctx, c := querystats.WithCounter(context.Background())
				if err := naiveDashboard(ctx, e.db, n); err != nil {
					b.Fatal(err)
				}
				stmts = c.Statements()
			}
			b.ReportMetric(float64(stmts), "stmts/op")
		})
	}
}

// pagedQuery is budgetQuery with a cursor, for more tasks than one page holds.
var pagedQuery = strings.NewReplacer(
	"query($first: Int)", "query($first: Int, $after: String)",
	"tasks(first: $first) { nodes {", "tasks(first: $first, after: $after) { pageInfo { hasNextPage endCursor } nodes {",
).Replace(budgetQuery)

// dashboardPage is the page size of pagedDashboard: budgetQuery costs about 835 per task
// under the complexity limit (DefaultMaxComplexity, 100,000), so a page of 100 tasks is
// admitted and one of 500 is not.
const dashboardPage = 100

// pagedDashboard reads n tasks through the API in pages of at most dashboardPage and
// returns the statements run.
func pagedDashboard(b *testing.B, e *env, n int) int64 {
	var stmts int64
	var after any
	for read := 0; read < n; {
		size := min(dashboardPage, n-read)
		r := e.do(pagedQuery, map[string]any{"first": size, "after": after})
		if len(r.Errors) > 0 || r.Extensions.QueryStats == nil {
			b.Fatalf("errors %+v", r.Errors)
		}
		stmts += r.Extensions.QueryStats.SQLStatements
		var page struct {
			Tasks struct {
				PageInfo struct{ EndCursor string }
			}
		}
		if err := json.Unmarshal(r.Data, &page); err != nil {
			b.Fatal(err)
		}
		after = page.Tasks.PageInfo.EndCursor
		read += size
	}
	return stmts
}

// naiveDashboard reads what budgetQuery reads, one object at a time.
func naiveDashboard(ctx context.Context, db *gorm.DB, first int) error {
	tasks, err := models.TasksPage(ctx, db, models.TaskFilter{}, 0, first)
	if err != nil {
		return err
	}
	for _, t := range tasks {
		one := []int64{t.TaskID}
		if _, err := models.ExecutionContextsByTaskIDs(ctx, db, one); err != nil {
			return err
		}
		if _, err := models.WorkflowSummariesByTaskIDs(ctx, db, one); err != nil {
			return err
		}
		steps, err := models.StepsByTaskIDs(ctx, db, one)
		if err != nil {
			return err
		}
		for _, s := range steps {
			id := []int64{s.WorkflowStepID}
			if _, err := models.ReadinessByStepIDs(ctx, db, id); err != nil {
				return err
			}
			if _, err := models.StepTransitionsByStepIDs(ctx, db, id); err != nil {
				return err
			}
			dag, err := models.DagByStepIDs(ctx, db, id)
			if err != nil {
				return err
			}
			for _, d := range dag {
				for _, p := range d.ParentStepIDs {
					if _, err := models.StepsByIDs(ctx, db, []int64{p}); err != nil {
						return err
					}
				}
			}
		}
	}
	return nil
}

// BenchmarkOneTaskDetail runs detailQuery (one task: transitions, steps with readiness, DAG,
// parents and transitions) through the real HTTP handler, one request at a time: the latency
// of the one-object read that clients compare with PostGraphile (make bench-peers).
//
//	go test ./graph/server -run '^$' -bench OneTaskDetail -benchtime 500x -cpuprofile cpu.out
func BenchmarkOneTaskDetail(b *testing.B) {
	e := newEnv(b)
	tk := e.fx.Task(fixture.Mixed)
	tk.Complete("init_auth")
	vars := map[string]any{"id": id(tk.ID)}
	var stmts int64
	for b.Loop() {
		r := e.do(detailQuery, vars)
		if len(r.Errors) > 0 {
			b.Fatalf("errors: %+v", r.Errors)
		}
		stmts = r.Extensions.QueryStats.SQLStatements
	}
	b.ReportMetric(float64(stmts), "stmts/op")
}
