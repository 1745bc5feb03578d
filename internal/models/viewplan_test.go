package models_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/taskerhq/tasker/db"
	"github.com/taskerhq/tasker/internal/database"
	"github.com/taskerhq/tasker/internal/testkit/dbtest"
	"github.com/taskerhq/tasker/internal/testkit/plantest"
)

// planTasks is the number of tasks generated for the plan tests: enough that a scan of a whole
// table would touch far more rows than any one task owns.
const planTasks = 3000

// seedPlanData fills the database with planTasks tasks of 5 to 10 steps each, chained with a
// few extra edges, with the first steps complete or in error and most tasks in progress, all
// with set-based statements. It returns the database handle.
func seedPlanData(t *testing.T) *sql.DB {
	t.Helper()
	gdb := dbtest.New(t)
	sqlDB, err := gdb.DB()
	if err != nil {
		t.Fatalf("getting *sql.DB: %v", err)
	}
	stmts := []string{
		`INSERT INTO tasker_dependent_systems (name) VALUES ('plan_system')`,
		`INSERT INTO tasker_named_tasks (task_namespace_id, name)
		 SELECT task_namespace_id, 'plan_task' FROM tasker_task_namespaces WHERE name = 'default'`,
		`INSERT INTO tasker_named_steps (dependent_system_id, name)
		 SELECT d.dependent_system_id, 'plan_step_' || lpad(g::text, 2, '0')
		 FROM tasker_dependent_systems d, generate_series(1, 10) g WHERE d.name = 'plan_system'`,
		fmt.Sprintf(`INSERT INTO tasker_tasks (named_task_id)
		 SELECT nt.named_task_id FROM tasker_named_tasks nt, generate_series(1, %d)
		 WHERE nt.name = 'plan_task'`, planTasks),
		`INSERT INTO tasker_workflow_steps (task_id, named_step_id, attempts, last_attempted_at, backoff_request_seconds)
		 SELECT t.task_id, ns.named_step_id,
		        CASE WHEN ns.k <= 2 THEN 1 ELSE 0 END,
		        CASE WHEN ns.k <= 2 THEN now() END,
		        CASE WHEN ns.k = 2 AND t.task_id % 3 = 0 THEN 30 END
		 FROM tasker_tasks t
		 JOIN (SELECT named_step_id, row_number() OVER (ORDER BY name) AS k
		       FROM tasker_named_steps WHERE name LIKE 'plan_step_%') ns
		   ON ns.k <= 5 + t.task_id % 6`,
		`WITH s AS (
		     SELECT workflow_step_id, task_id,
		            row_number() OVER (PARTITION BY task_id ORDER BY workflow_step_id) AS k
		     FROM tasker_workflow_steps)
		 INSERT INTO tasker_workflow_step_edges (from_step_id, to_step_id)
		 SELECT p.workflow_step_id, c.workflow_step_id
		 FROM s c JOIN s p ON p.task_id = c.task_id
		  AND (p.k = c.k - 1 OR (c.k % 3 = 0 AND p.k = c.k - 2))`,
		`WITH s AS (
		     SELECT workflow_step_id, task_id,
		            row_number() OVER (PARTITION BY task_id ORDER BY workflow_step_id) AS k
		     FROM tasker_workflow_steps)
		 INSERT INTO tasker_workflow_step_transitions (workflow_step_id, to_state, from_state, sort_key, most_recent)
		 SELECT workflow_step_id, 'in_progress', NULL, 1, false FROM s WHERE k <= 2
		 UNION ALL
		 SELECT workflow_step_id, CASE WHEN k = 1 THEN 'complete' ELSE 'error' END, 'in_progress', 2, true
		 FROM s WHERE k <= 2`,
		`INSERT INTO tasker_task_transitions (task_id, to_state, from_state, sort_key, most_recent)
		 SELECT task_id, 'in_progress', NULL, 1, true FROM tasker_tasks WHERE task_id % 4 <> 0`,
		`ANALYZE`,
	}
	ctx := context.Background()
	for _, stmt := range stmts {
		if _, err := sqlDB.ExecContext(ctx, stmt); err != nil {
			t.Fatalf("seeding plan data: %v\n%s", err, stmt)
		}
	}
	var steps int
	if err := sqlDB.QueryRowContext(ctx, `SELECT count(*) FROM tasker_workflow_steps`).Scan(&steps); err != nil {
		t.Fatalf("counting steps: %v", err)
	}
	if steps < planTasks*5 {
		t.Fatalf("seeded %d steps, want at least %d", steps, planTasks*5)
	}
	return sqlDB
}

// explain prepares query with one parameter of type paramType, and returns the root node of
// EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE of it with literal arg, so that the plan is
// the one the connection's plan_cache_mode picks for a prepared statement.
func explain(t *testing.T, conn *sql.Conn, query, paramType, arg string) plantest.Node {
	t.Helper()
	ctx := context.Background()
	if _, err := conn.ExecContext(ctx, "PREPARE plan_probe ("+paramType+") AS "+query); err != nil {
		t.Fatalf("preparing %s: %v", query, err)
	}
	defer func() { _, _ = conn.ExecContext(ctx, "DEALLOCATE plan_probe") }()
	plan, err := plantest.Explain(ctx, conn, "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE plan_probe ('"+arg+"')")
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return plan
}

// hotRows returns the rows each growing table's plan nodes touched (returned, filtered out or
// rechecked, over all loops), and fails t for a sequential scan of any of them.
func hotRows(t *testing.T, query string, plan plantest.Node) map[string]float64 {
	t.Helper()
	for _, table := range plan.SeqScans() {
		t.Errorf("%s: sequential scan of %s", query, table)
	}
	return plan.RowsRead()
}

func idLiteral(ids []int64) string {
	parts := make([]string, len(ids))
	for i, id := range ids {
		parts[i] = fmt.Sprint(id)
	}
	return "{" + strings.Join(parts, ",") + "}"
}

// viewRead is one filtered read of a view, as the batch readers and resolvers issue it.
type viewRead struct {
	view   string
	filter string // a WHERE clause with one parameter
	byStep bool   // the parameter holds step ids rather than task ids
	many   bool   // the parameter is a bigint[] of several ids
}

func viewReads() []viewRead {
	var reads []viewRead
	for _, p := range db.Projections {
		if p.Kind != db.LiveView {
			continue
		}
		reads = append(reads,
			viewRead{view: p.Name, filter: "task_id = $1"},
			viewRead{view: p.Name, filter: "task_id = ANY($1::bigint[])", many: true},
		)
		if slices.Equal(p.Key, []string{"workflow_step_id"}) {
			reads = append(reads,
				viewRead{view: p.Name, filter: "workflow_step_id = $1", byStep: true},
				viewRead{view: p.Name, filter: "workflow_step_id = ANY($1::bigint[])", byStep: true, many: true},
			)
		}
	}
	return reads
}

// TestViewReadsUseIndexesAndTouchOnlyTheirTasks checks the design rule that a per-task read costs
// what the task costs: for every view and filter form, under both custom and generic plans, no
// plan node scans a whole hot table, and the rows actually touched in each hot table stay within
// a small multiple of the steps of the tasks read (a table scan would touch tens of thousands).
func TestViewReadsUseIndexesAndTouchOnlyTheirTasks(t *testing.T) {
	t.Parallel()
	sqlDB := seedPlanData(t)
	ctx := context.Background()

	// Pick tasks from the middle of the id range, and their steps.
	taskIDs := []int64{planTasks / 2, planTasks/2 + 1, planTasks/2 + 2, planTasks/2 + 3, planTasks/2 + 5}
	var stepIDs []int64
	var stepsOfTasks int
	rows, err := sqlDB.QueryContext(ctx,
		`SELECT workflow_step_id FROM tasker_workflow_steps WHERE task_id = ANY($1::bigint[]) ORDER BY 1`,
		database.Array[int64](taskIDs))
	if err != nil {
		t.Fatalf("listing steps: %v", err)
	}
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			t.Fatalf("scanning step id: %v", err)
		}
		stepIDs = append(stepIDs, id)
		stepsOfTasks++
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("listing steps: %v", err)
	}
	rows.Close()
	if stepsOfTasks < 25 {
		t.Fatalf("tasks %v have %d steps, want at least 25", taskIDs, stepsOfTasks)
	}
	var oneTaskSteps int
	if err := sqlDB.QueryRowContext(ctx, `SELECT count(*) FROM tasker_workflow_steps WHERE task_id = $1`, taskIDs[0]).Scan(&oneTaskSteps); err != nil {
		t.Fatalf("counting steps of task %d: %v", taskIDs[0], err)
	}

	for _, mode := range []string{"force_custom_plan", "force_generic_plan"} {
		for _, r := range viewReads() {
			r := r
			t.Run(fmt.Sprintf("%s/%s/%s", mode, r.view, r.filter), func(t *testing.T) {
				conn, err := sqlDB.Conn(ctx)
				if err != nil {
					t.Fatalf("taking a connection: %v", err)
				}
				defer conn.Close()
				if _, err := conn.ExecContext(ctx, "SET plan_cache_mode = "+mode); err != nil {
					t.Fatalf("setting plan_cache_mode: %v", err)
				}
				defer func() { _, _ = conn.ExecContext(ctx, "RESET plan_cache_mode") }()

				var arg string
				var budgetSteps int
				switch {
				case r.byStep && r.many:
					arg, budgetSteps = idLiteral(stepIDs[:5]), 5
				case r.byStep:
					arg, budgetSteps = fmt.Sprint(stepIDs[0]), 1
				case r.many:
					arg, budgetSteps = idLiteral(taskIDs), stepsOfTasks
				default:
					arg, budgetSteps = fmt.Sprint(taskIDs[0]), oneTaskSteps
				}
				paramType := "bigint"
				if r.many {
					paramType = "bigint[]"
				}
				query := "SELECT * FROM " + r.view + " WHERE " + r.filter

				plan := explain(t, conn, query, paramType, arg)
				touched := hotRows(t, query, plan)
				// Each step is read a bounded number of times per view (itself, its parents'
				// states, a few probes); 20 rows per step is far below any table scan here.
				limit := float64(20*budgetSteps + 10)
				for table, n := range touched {
					if n > limit {
						t.Errorf("%s touched %.0f rows of %s for %d steps (limit %.0f)", query, n, table, budgetSteps, limit)
					}
				}
				if t.Failed() {
					plainPlan, _ := json.MarshalIndent(plan, "", " ")
					t.Logf("plan:\n%s", strings.TrimSpace(string(plainPlan)))
				}
			})
		}
	}
}
