package models_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/taskerhq/tasker/internal/models"
	"github.com/taskerhq/tasker/internal/testkit/baseline"
	"github.com/taskerhq/tasker/internal/testkit/dbtest"
	"github.com/taskerhq/tasker/internal/testkit/fixture"
	"github.com/taskerhq/tasker/internal/testkit/plantest"
)

// TestReadinessPageMatchesBaseline checks Query.steps' reader against the naive evaluation of
// docs/SEMANTICS.md §3 (internal/testkit/baseline): on generated data of every scenario plus
// hand-built edge cases, every filter returns exactly the steps the baseline selects, newest
// first, and paging through it with a small page size loses or repeats none.
func TestReadinessPageMatchesBaseline(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := fixture.Generated(t, 5, 1500)
	b := fixture.New(t, db)
	d := b.Task(fixture.Diamond)
	d.Complete("start_workflow")
	d.Fail("branch_one_process", 0)
	d.Set("branch_one_process", fixture.Backoff(300), fixture.AttemptedAgo(0)) // in backoff for 5 min
	d.Transition("branch_two_process", 0, models.StateCancelled)
	p := b.Task(fixture.ParallelMerge)
	p.Set("fetch_user_data", fixture.Backoff(30), fixture.AttemptedAgo(0))
	p.Transition("fetch_inventory_data", 0, models.StateResolvedManually)
	p.Set("fetch_pricing_data", fixture.InProcess(true))
	m := b.Task(fixture.Mixed)
	m.Fail("init_auth", time.Minute)
	m.Set("init_auth", fixture.Retryable(false))
	m.Transition("init_config", 0, models.StateInProgress)
	l := b.Task(fixture.Linear)
	for range 3 {
		l.Fail("initialize_data", time.Hour)
	}
	b.Task(fixture.Tree).Fail("root_initialization", time.Hour) // ready again, in error
	if err := db.Exec(`INSERT INTO tasker_task_namespaces (name) VALUES ('other')`).Error; err != nil {
		t.Fatal(err)
	}
	if err := db.Exec(`UPDATE tasker_named_tasks SET task_namespace_id =
		(SELECT task_namespace_id FROM tasker_task_namespaces WHERE name = 'other')
		WHERE named_task_id = (SELECT min(named_task_id) FROM tasker_named_tasks)`).Error; err != nil {
		t.Fatal(err)
	}

	// The baseline's answer for every step, with each step's task namespace.
	type stepInfo struct {
		baseline.StepStatus
		namespace string
	}
	var tasks []struct {
		TaskID    int64
		Namespace string
	}
	if err := db.Raw(`SELECT t.task_id, ns.name AS namespace FROM tasker_tasks t
		JOIN tasker_named_tasks n ON n.named_task_id = t.named_task_id
		JOIN tasker_task_namespaces ns ON ns.task_namespace_id = n.task_namespace_id
		ORDER BY t.task_id`).Scan(&tasks).Error; err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	var all []stepInfo
	for _, tk := range tasks {
		steps, err := baseline.Steps(ctx, db, tk.TaskID, now)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range steps {
			all = append(all, stepInfo{StepStatus: s, namespace: tk.Namespace})
		}
	}
	slices.SortFunc(all, func(a, b stepInfo) int { return int(b.WorkflowStepID - a.WorkflowStepID) })

	yes, no := true, false
	taskOfInterest := d.ID
	cases := []struct {
		name string
		f    models.StepFilter
		keep func(s stepInfo) bool
	}{
		{"all", models.StepFilter{}, func(stepInfo) bool { return true }},
		{"ready", models.StepFilter{Ready: &yes}, func(s stepInfo) bool { return s.ReadyForExecution }},
		{"not ready", models.StepFilter{Ready: &no}, func(s stepInfo) bool { return !s.ReadyForExecution }},
		{"ready in namespace other", models.StepFilter{Ready: &yes, Namespace: "other"},
			func(s stepInfo) bool { return s.ReadyForExecution && s.namespace == "other" }},
		{"one task", models.StepFilter{TaskID: taskOfInterest},
			func(s stepInfo) bool { return s.TaskID == taskOfInterest }},
		{"pending or error", models.StepFilter{States: []models.State{models.StatePending, models.StateError}},
			func(s stepInfo) bool {
				return s.CurrentState == models.StatePending || s.CurrentState == models.StateError
			}},
		{"ready and in error", models.StepFilter{Ready: &yes, States: []models.State{models.StateError}},
			func(s stepInfo) bool { return s.ReadyForExecution && s.CurrentState == models.StateError }},
		{"ready with a reason (none)", models.StepFilter{Ready: &yes, BlockingReasons: []models.BlockingReason{models.ReasonBackoff}},
			func(stepInfo) bool { return false }},
		{"running or retrying", models.StepFilter{BlockingReasons: []models.BlockingReason{models.ReasonInProgress, models.ReasonBackoff}},
			func(s stepInfo) bool {
				return models.BlockingReason(s.BlockingReason) == models.ReasonInProgress || models.BlockingReason(s.BlockingReason) == models.ReasonBackoff
			}},
		{"waiting: dependencies or backoff", models.StepFilter{BlockingReasons: []models.BlockingReason{
			models.ReasonDependenciesNotSatisfied, models.ReasonBackoff}},
			func(s stepInfo) bool {
				return models.BlockingReason(s.BlockingReason) == models.ReasonDependenciesNotSatisfied || models.BlockingReason(s.BlockingReason) == models.ReasonBackoff
			}},
	}
	for _, r := range models.BlockingReasons {
		cases = append(cases, struct {
			name string
			f    models.StepFilter
			keep func(s stepInfo) bool
		}{"reason " + string(r), models.StepFilter{BlockingReasons: []models.BlockingReason{r}},
			func(s stepInfo) bool { return models.BlockingReason(s.BlockingReason) == r }})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var want []int64
			for _, s := range all {
				if c.keep(s) {
					want = append(want, s.WorkflowStepID)
				}
			}
			if c.name != "ready with a reason (none)" && len(want) == 0 {
				t.Fatalf("the data has no step for this filter: the case proves nothing")
			}
			var got []int64
			before := int64(0)
			for page := 0; ; page++ {
				rows, err := models.ReadinessPage(ctx, db, c.f, before, 97)
				if err != nil {
					t.Fatal(err)
				}
				for _, r := range rows {
					got = append(got, r.WorkflowStepID)
				}
				if len(rows) < 97 {
					break
				}
				before = rows[len(rows)-1].WorkflowStepID
				if page > 10000 {
					t.Fatal("paging does not end")
				}
			}
			if !slices.Equal(got, want) {
				t.Errorf("got %d steps, baseline selects %d\ngot  %v\nwant %v", len(got), len(want), head(got), head(want))
			}
		})
	}
}

func head(ids []int64) []int64 {
	if len(ids) > 20 {
		return ids[:20]
	}
	return ids
}

func TestReadinessPageRefusesUnknownValues(t *testing.T) {
	t.Parallel()
	db := dbtest.New(t)
	ctx := context.Background()
	for _, f := range []models.StepFilter{
		{States: []models.State{"paused"}},
		{BlockingReasons: []models.BlockingReason{"because"}},
		{TaskID: -1},
	} {
		if _, err := models.ReadinessPage(ctx, db, f, 0, 10); err == nil {
			t.Errorf("filter %+v: no error", f)
		}
	}
	if _, err := models.ReadinessPage(ctx, db, models.StepFilter{}, 0, 0); err == nil {
		t.Error("limit 0: no error")
	}
}

// TestReadinessPageWalksUnfinishedSteps checks that "what is ready" and "what is blocked" read
// only the unfinished steps, never the history: the unfinished steps are made the oldest of a
// large database, so a walk of the primary key (newest first) would read every finished step
// before reaching them. Under custom and generic plans, no hot table is scanned whole and the
// steps touched stay within a small multiple of the unfinished ones.
func TestReadinessPageWalksUnfinishedSteps(t *testing.T) {
	t.Parallel()
	sqlDB := seedPlanData(t)
	ctx := context.Background()
	// Tasks 1..100 keep their unfinished steps; every other step is finished history, and
	// 20,000 more tasks of 10 finished steps each make the history ten times larger.
	for _, stmt := range []string{
		`UPDATE tasker_workflow_steps SET processed = true WHERE task_id > 100`,
		`INSERT INTO tasker_tasks (named_task_id)
		 SELECT nt.named_task_id FROM tasker_named_tasks nt, generate_series(1, 20000) WHERE nt.name = 'plan_task'`,
		`INSERT INTO tasker_workflow_steps (task_id, named_step_id, attempts, processed, processed_at)
		 SELECT t.task_id, ns.named_step_id, 1, true, now()
		 FROM tasker_tasks t CROSS JOIN tasker_named_steps ns
		 WHERE t.task_id > ` + fmt.Sprint(planTasks) + ` AND ns.name LIKE 'plan_step_%'`,
	} {
		if _, err := sqlDB.ExecContext(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	if _, err := sqlDB.ExecContext(ctx, `UPDATE tasker_workflow_steps SET in_process = true
		WHERE task_id <= 100 AND task_id % 10 = 0`); err != nil {
		t.Fatal(err)
	}
	if _, err := sqlDB.ExecContext(ctx, `VACUUM ANALYZE tasker_workflow_steps`); err != nil {
		t.Fatal(err)
	}
	var unfinished, total int
	if err := sqlDB.QueryRowContext(ctx, `SELECT count(*) FILTER (WHERE NOT processed), count(*)
		FROM tasker_workflow_steps`).Scan(&unfinished, &total); err != nil {
		t.Fatal(err)
	}
	if unfinished*100 > total {
		t.Fatalf("%d unfinished of %d steps: too many for the test to tell a walk of the history", unfinished, total)
	}

	yes := true
	filters := map[string]models.StepFilter{
		"ready":               {Ready: &yes},
		"in progress":         {BlockingReasons: []models.BlockingReason{models.ReasonInProgress}},
		"running or retrying": {BlockingReasons: []models.BlockingReason{models.ReasonInProgress, models.ReasonBackoff}},
		"waiting":             {BlockingReasons: []models.BlockingReason{models.ReasonDependenciesNotSatisfied, models.ReasonBackoff}},
		"terminal":            {BlockingReasons: []models.BlockingReason{models.ReasonTerminalState}},
		"ready in a task":     {Ready: &yes, TaskID: 50},
	}
	for _, mode := range []string{"force_custom_plan", "force_generic_plan"} {
		for name, f := range filters {
			t.Run(mode+"/"+name, func(t *testing.T) {
				conn, err := sqlDB.Conn(ctx)
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close()
				if _, err := conn.ExecContext(ctx, "SET plan_cache_mode = "+mode); err != nil {
					t.Fatal(err)
				}
				defer func() { _, _ = conn.ExecContext(ctx, "RESET plan_cache_mode") }()
				query, args := models.ReadinessPageSQL(f, 0, 21)
				plan := explainArgs(t, conn, query, args)
				touched := hotRows(t, query, plan)
				if limit := float64(3*unfinished + 50); touched["tasker_workflow_steps"] > limit {
					t.Errorf("touched %.0f step rows for %d unfinished steps of %d (limit %.0f): the walk reads finished history",
						touched["tasker_workflow_steps"], unfinished, total, limit)
				}
				if t.Failed() {
					var nodes []string
					plan.Walk(func(n plantest.Node) { nodes = append(nodes, n.NodeType+" "+n.RelationName+" "+n.IndexName) })
					t.Logf("%v", nodes)
					raw, _ := json.MarshalIndent(plan, "", " ")
					t.Logf("%s\nplan:\n%s", query, raw)
				}
			})
		}
	}
}

// explainArgs prepares query (with ? placeholders; PostgreSQL infers the parameter types)
// and returns the root node of EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE of it with args, so that
// the plan is the one the connection's plan_cache_mode picks for a prepared statement.
func explainArgs(t *testing.T, conn *sql.Conn, query string, args []any) plantest.Node {
	t.Helper()
	ctx := context.Background()
	var numbered strings.Builder
	n := 0
	for _, r := range query {
		if r == '?' {
			n++
			fmt.Fprintf(&numbered, "$%d", n)
			continue
		}
		numbered.WriteRune(r)
	}
	literals := make([]string, len(args))
	for i, a := range args {
		lit, err := plantest.Literal(a)
		if err != nil {
			t.Fatal(err)
		}
		literals[i] = lit
	}
	if _, err := conn.ExecContext(ctx, "PREPARE page_probe AS "+numbered.String()); err != nil {
		t.Fatalf("preparing %s: %v", numbered.String(), err)
	}
	defer func() { _, _ = conn.ExecContext(ctx, "DEALLOCATE page_probe") }()
	plan, err := plantest.Explain(ctx, conn, "EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE page_probe ("+strings.Join(literals, ", ")+")")
	if err != nil {
		t.Fatalf("%s: %v", numbered.String(), err)
	}
	return plan
}
