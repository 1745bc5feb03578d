package refresh

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/taskerhq/tasker/internal/models"
	"github.com/taskerhq/tasker/internal/store"
	"github.com/taskerhq/tasker/internal/testkit/dbtest"
	"github.com/taskerhq/tasker/internal/testkit/fixture"
)

// requireEqualToExact compares every incremental read model with its exact definition (the
// *_exact views): counts, sums, averages, maxima and times exactly, percentiles within
// PercentileBound.
func requireEqualToExact(t *testing.T, db *gorm.DB) {
	t.Helper()
	var exactS, gotS []models.TaskStatusSummary
	mustScan(t, db, &exactS, `SELECT * FROM tasker_task_status_summaries_exact ORDER BY named_task_id`)
	mustScan(t, db, &gotS, `SELECT * FROM tasker_task_status_summaries ORDER BY named_task_id`)
	if len(gotS) != len(exactS) {
		t.Fatalf("%d status summaries, exact %d", len(gotS), len(exactS))
	}
	for i := range exactS {
		checkStatusRow(t, i, "incremental", gotS[i], "exact", exactS[i])
	}
	var exactP, gotP []models.StepPerformance
	mustScan(t, db, &exactP, `SELECT * FROM tasker_step_performance_exact ORDER BY task_namespace_id, named_step_id`)
	mustScan(t, db, &gotP, `SELECT * FROM tasker_step_performance ORDER BY task_namespace_id, named_step_id`)
	if len(gotP) != len(exactP) {
		t.Fatalf("%d step performance rows, exact %d", len(gotP), len(exactP))
	}
	for i := range exactP {
		e, g := exactP[i], gotP[i]
		same := e.TaskNamespaceID == g.TaskNamespaceID && e.NamedStepID == g.NamedStepID &&
			e.NamespaceName == g.NamespaceName && e.StepName == g.StepName &&
			e.DependentSystemName == g.DependentSystemName && e.Executions == g.Executions &&
			e.Successes == g.Successes && e.Failures == g.Failures && e.Retries == g.Retries &&
			e.ErrorRate == g.ErrorRate && floatsEqual(e.AvgDurationMs, g.AvgDurationMs) &&
			floatsEqual(e.MaxDurationMs, g.MaxDurationMs) &&
			withinBound(g.P50DurationMs, e.P50DurationMs) && withinBound(g.P95DurationMs, e.P95DurationMs)
		if !same {
			t.Errorf("step performance row %d:\n incremental %s\n exact       %s", i, fmtPerf(g), fmtPerf(e))
		}
	}
	var exactH, gotH []models.HourlyThroughput
	mustScan(t, db, &exactH, `SELECT * FROM tasker_hourly_throughput_exact ORDER BY hour`)
	mustScan(t, db, &gotH, `SELECT * FROM tasker_hourly_throughput ORDER BY hour`)
	if len(gotH) != len(exactH) {
		t.Fatalf("%d throughput hours, exact %d", len(gotH), len(exactH))
	}
	for i := range exactH {
		checkThroughputRow(t, i, "incremental", gotH[i], "exact", exactH[i])
	}
}

func refreshAll(t *testing.T, r *Refresher) {
	t.Helper()
	for _, name := range ViewNames() {
		if out, err := r.Refresh(context.Background(), name); err != nil || out.Status != StatusRefreshed {
			t.Fatalf("Refresh(%s) = %+v, %v", name, out, err)
		}
	}
}

// Random workloads written between refreshes of random read models: after a last refresh,
// every incremental aggregate equals the exact one.
func TestIncrementalEqualsExactAfterRandomWorkloads(t *testing.T) {
	t.Parallel()
	db := dbtest.New(t)
	r := newRefresher(t, db, nil, Config{Schedules: offSchedules()})
	b := fixture.New(t, db)
	rng := rand.New(rand.NewPCG(7, 11))
	taskPaths := [][]models.State{nil, {IP}, {IP, C}, {IP, E}, {IP, E, P, IP}, {X}, {IP, E, R}, {IP, C, X}}
	stepPaths := [][]models.State{nil, {IP}, {IP, C}, {IP, E}, {IP, E, P, IP, C}, {IP, E, P, IP, E, P, IP, C}, {E, R}, {IP, X}}
	shapes := []fixture.Shape{fixture.FourStep, fixture.Linear, fixture.Diamond, fixture.ParallelMerge, fixture.Tree, fixture.Mixed}
	var folded int
	for round := range 6 {
		for range 6 {
			shape := shapes[rng.IntN(len(shapes))]
			tk := b.Task(shape)
			if path := taskPaths[rng.IntN(len(taskPaths))]; len(path) > 0 {
				tk.TaskTransition(time.Duration(rng.IntN(72*3600))*time.Second, path...)
			}
			for _, name := range stepNames(shape) {
				path := stepPaths[rng.IntN(len(stepPaths))]
				ago := time.Duration(1+rng.IntN(48*3600_000)) * time.Millisecond
				for _, s := range path {
					tk.Transition(name, ago, s)
					ago -= time.Duration(rng.IntN(20_000_000)) * time.Microsecond
				}
			}
		}
		for _, name := range ViewNames() {
			if round == 5 || rng.IntN(2) == 0 {
				if _, err := r.Refresh(context.Background(), name); err != nil {
					t.Fatal(err)
				}
				folded++
			}
		}
	}
	if folded < 8 {
		t.Fatalf("only %d refreshes ran between the rounds: the workload proves little", folded)
	}
	requireEqualToExact(t, db)
	var runs int64
	mustScan(t, db, &runs, `SELECT coalesce(sum(finished_runs), 0) FROM tasker_rm_step_performance`)
	if runs < 50 {
		t.Fatalf("the workload finished %d runs: too few to compare percentiles", runs)
	}
}

// Transactions that commit out of the order of their ids and xids around a refresh: what
// ended above the horizon waits for the next refresh (the read model stays stale meanwhile),
// and nothing is counted twice or missed.
func TestWorkCommittedOutOfOrderIsFoldedInOnce(t *testing.T) {
	t.Parallel()
	url := dbtest.NewURL(t)
	db := dbtest.Open(t, url)
	r := newRefresher(t, db, nil, Config{Schedules: offSchedules()})
	b := fixture.New(t, db)
	tk1, tk2 := b.Task(fixture.Linear), b.Task(fixture.Linear)
	steps := stepNames(fixture.Linear)
	refreshAll(t, r)
	requireEqualToExact(t, db)

	// early has the oldest xid and writes a transition before and after the others.
	early := db.Begin()
	t.Cleanup(func() { early.Rollback() })
	writeStepTransition(t, early, tk1.Step(steps[0]), models.StateInProgress)
	writeTaskTransition(t, early, tk1.ID, models.StateInProgress)

	// late (a younger xid) writes a task, transitions of an older task and a run, and commits.
	late := db.Begin()
	var lateTask int64
	mustScan(t, late, &lateTask, `INSERT INTO tasker_tasks (named_task_id) SELECT named_task_id FROM tasker_tasks
		WHERE task_id = ? RETURNING task_id`, tk2.ID)
	writeTaskTransition(t, late, tk2.ID, models.StateInProgress)
	writeStepTransition(t, late, tk2.Step(steps[0]), models.StateInProgress)
	writeStepTransition(t, late, tk2.Step(steps[0]), models.StateComplete)
	if err := late.Commit().Error; err != nil {
		t.Fatal(err)
	}

	// early is still running: the refresh folds in nothing of late or straddle, and says so.
	for _, name := range ViewNames() {
		out, err := r.Refresh(context.Background(), name)
		if err != nil || out.Status != StatusRefreshed || !out.Pending {
			t.Fatalf("refresh of %s while an older transaction runs: %+v, %v; want refreshed with pending changes", name, out, err)
		}
	}
	statuses, err := models.ReadModelStatuses(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range statuses {
		if !s.Stale {
			t.Errorf("%s is not stale with committed changes above its horizon", s.Name)
		}
	}
	var total int64
	mustScan(t, db, &total, `SELECT sum(total_count) FROM tasker_task_status_summaries`)
	if total != 2 {
		t.Fatalf("status summaries count %d tasks while the older transaction runs, want the 2 below the horizon", total)
	}

	writeStepTransition(t, early, tk1.Step(steps[0]), models.StateError)
	if err := early.Commit().Error; err != nil {
		t.Fatal(err)
	}
	for _, name := range ViewNames() {
		out, err := r.Refresh(context.Background(), name)
		if err != nil || out.Status != StatusRefreshed || out.Pending {
			t.Fatalf("refresh of %s after every transaction ended: %+v, %v", name, out, err)
		}
	}
	requireEqualToExact(t, db)

	// A transition below the horizon of a task created above it: straddle (older xid)
	// writes the first transition of a task that a younger transaction created, while holder
	// (between the two) runs. The task enters the summaries with its transition, once.
	straddle := db.Begin()
	t.Cleanup(func() { straddle.Rollback() })
	writeStepTransition(t, straddle, tk2.Step(steps[1]), models.StateInProgress)
	holder := db.Begin()
	t.Cleanup(func() { holder.Rollback() })
	writeStepTransition(t, holder, tk1.Step(steps[2]), models.StateInProgress)
	var created int64
	mustScan(t, db, &created, `INSERT INTO tasker_tasks (named_task_id) SELECT named_task_id FROM tasker_tasks
		WHERE task_id = ? RETURNING task_id`, tk2.ID)
	writeTaskTransition(t, straddle, created, models.StateInProgress)
	if err := straddle.Commit().Error; err != nil {
		t.Fatal(err)
	}
	for _, name := range ViewNames() {
		out, err := r.Refresh(context.Background(), name)
		if err != nil || !out.Pending {
			t.Fatalf("refresh of %s while holder runs: %+v, %v; want pending changes", name, out, err)
		}
	}
	var inProgress int64
	mustScan(t, db, &inProgress, `SELECT in_progress_count FROM tasker_rm_task_counts WHERE named_task_id = ?`, tk2.NamedTaskID)
	mustScan(t, db, &total, `SELECT sum(total_count) FROM tasker_task_status_summaries`)
	if total != 4 || inProgress != 3 {
		t.Fatalf("with the task's transition folded in before the task: %d tasks, %d in progress; want 4 and 3", total, inProgress)
	}
	if err := holder.Commit().Error; err != nil {
		t.Fatal(err)
	}
	// Refreshing twice changes nothing the second time: every row was folded in once.
	refreshAll(t, r)
	requireEqualToExact(t, db)
	refreshAll(t, r)
	requireEqualToExact(t, db)
}

// writeTaskTransition appends one transition to a task's history, like writeStepTransition.
func writeTaskTransition(t *testing.T, db *gorm.DB, taskID int64, to models.State) {
	t.Helper()
	mustExec(t, db, `
		WITH prev AS (
			UPDATE tasker_task_transitions SET most_recent = false
			WHERE task_id = ? AND most_recent RETURNING to_state
		)
		INSERT INTO tasker_task_transitions (task_id, to_state, from_state, sort_key, most_recent)
		SELECT ?, ?, (SELECT to_state FROM prev),
		       coalesce((SELECT max(sort_key) FROM tasker_task_transitions WHERE task_id = ?), 0) + 1, true`,
		taskID, taskID, string(to), taskID)
}

// A refresh costs the change, not the history: every statement that folds changes in reaches
// the history tables and the aggregate tables through indexes (no sequential scan, no hash
// or merge join that reads a whole table), planned as a refresh plans them, in a database of
// 10,000 steps with statistics.
func TestFoldingInNeverScansTheHistory(t *testing.T) {
	t.Parallel()
	db := dbtest.New(t)
	loadBenchData(t, db, 10_000)
	r := newRefresher(t, db, nil, Config{Schedules: offSchedules()})
	refreshAll(t, r)
	tk := fixture.New(t, db).Task(fixture.Linear)
	tk.Transition(stepNames(fixture.Linear)[0], time.Second, models.StateInProgress, models.StateComplete)
	tk.TaskTransition(time.Second, models.StateInProgress)
	mustExec(t, db, `ANALYZE`)
	history := map[string]bool{
		"tasker_tasks": true, "tasker_workflow_steps": true, "tasker_task_transitions": true,
		"tasker_workflow_step_transitions": true, "tasker_rm_task_states": true, "tasker_rm_step_durations": true,
	}
	ctx := context.Background()
	for _, name := range ViewNames() {
		tx := db.WithContext(ctx).Begin()
		if tx.Error != nil {
			t.Fatal(tx.Error)
		}
		st := store.New(tx)
		horizon, err := st.ReadHorizon(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.PlanForIndexLookups(ctx); err != nil {
			t.Fatal(err)
		}
		var prev string
		if err := tx.Raw(`SELECT processed_xid::text FROM tasker_read_model_state WHERE name = $1`, name).Row().Scan(&prev); err != nil {
			t.Fatal(err)
		}
		stmts := store.FoldStatements(name)
		if len(stmts) == 0 {
			t.Fatalf("%s: no statements fold changes in", name)
		}
		for _, q := range stmts {
			if !strings.Contains(q, "$2") {
				if err := tx.Exec(q).Error; err != nil {
					t.Fatal(err)
				}
				continue
			}
			var plan string
			if err := tx.Raw(`EXPLAIN (FORMAT JSON) `+q, prev, horizon).Row().Scan(&plan); err != nil {
				t.Fatalf("%s: explaining %s: %v", name, q, err)
			}
			for _, rel := range seqScans(t, plan) {
				if history[rel] {
					t.Errorf("%s: a sequential scan of %s in\n%s\nplan: %s", name, rel, q, plan)
				}
			}
		}
		tx.Rollback()
	}
}

// seqScans lists the relations a JSON plan scans sequentially.
func seqScans(t *testing.T, plan string) []string {
	t.Helper()
	var root []map[string]any
	if err := json.Unmarshal([]byte(plan), &root); err != nil {
		t.Fatal(err)
	}
	var out []string
	var walk func(n map[string]any)
	walk = func(n map[string]any) {
		if n["Node Type"] == "Seq Scan" {
			rel, _ := n["Relation Name"].(string)
			out = append(out, rel)
		}
		kids, _ := n["Plans"].([]any)
		for _, k := range kids {
			if m, ok := k.(map[string]any); ok {
				walk(m)
			}
		}
	}
	for _, r := range root {
		if p, ok := r["Plan"].(map[string]any); ok {
			walk(p)
		}
	}
	return out
}
