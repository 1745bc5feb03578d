package seed_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/taskerhq/tasker/internal/seed"
	"github.com/taskerhq/tasker/internal/testkit/dbtest"
)

// TestGenerateWritesConsistentHistories generates every shape and scenario twice: as the
// test databases' owner, with every trigger and foreign-key check, and as the server's
// administrator, in bulk mode (no foreign-key checks; the notification and inactive-step
// triggers skip themselves, migration 00051). Both write consistent histories, and bulk mode
// sends one new-task wake-up per batch and no transition notification.
func TestGenerateWritesConsistentHistories(t *testing.T) {
	t.Parallel()
	for _, bulk := range []bool{false, true} {
		t.Run(map[bool]string{false: "checked", true: "bulk"}[bulk], func(t *testing.T) {
			t.Parallel()
			url := dbtest.NewURL(t)
			if bulk {
				url = dbtest.AsServerAdmin(t, url)
			}
			generateAndCheck(t, url, bulk)
		})
	}
}

func generateAndCheck(t *testing.T, url string, bulk bool) {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(ctx) })
	listen, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { listen.Close(ctx) })
	for _, ch := range []string{"tasker_tasks_created", "tasker_task_transitions", "tasker_workflow_step_transitions"} {
		if _, err := listen.Exec(ctx, "LISTEN "+ch); err != nil {
			t.Fatal(err)
		}
	}
	plan, err := seed.Plan(3000, append([]string{"parallel_merge"}, seed.DefaultShapes...), 1000)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := seed.Generate(ctx, dbtest.Open(t, url), 7, plan, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Steps < 2500 || rep.Steps > 3000 || rep.Tasks == 0 || rep.Edges == 0 {
		t.Fatalf("report %+v", rep)
	}
	for _, b := range rep.Batches {
		if b.Bulk != bulk {
			t.Fatalf("batch %s written in bulk mode %v, want %v", b.Shape, b.Bulk, bulk)
		}
	}
	if bulk {
		notes := map[string]int{}
		for {
			wctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
			n, err := listen.WaitForNotification(wctx)
			cancel()
			if err != nil {
				break
			}
			notes[n.Channel]++
		}
		if notes["tasker_tasks_created"] != len(rep.Batches) || len(notes) != 1 {
			t.Errorf("bulk mode sent %v, want one tasker_tasks_created per batch (%d)", notes, len(rep.Batches))
		}
	}
	checks := map[string]string{
		"step counts": `SELECT count(*) FROM tasker_workflow_steps`,
		// Every owner's history runs 1..n with from_state = the previous to_state, and only
		// the last row is current.
		"malformed step histories": `SELECT count(*) FROM tasker_workflow_step_transitions t
			LEFT JOIN tasker_workflow_step_transitions p ON p.workflow_step_id = t.workflow_step_id AND p.sort_key = t.sort_key - 1
			WHERE (t.sort_key > 1 AND (p.id IS NULL OR p.to_state IS DISTINCT FROM t.from_state))
			   OR (t.sort_key = 1 AND t.from_state IS NOT NULL)
			   OR t.most_recent <> (t.sort_key = (SELECT max(sort_key) FROM tasker_workflow_step_transitions x WHERE x.workflow_step_id = t.workflow_step_id))`,
		"malformed task histories": `SELECT count(*) FROM tasker_task_transitions t
			LEFT JOIN tasker_task_transitions p ON p.task_id = t.task_id AND p.sort_key = t.sort_key - 1
			WHERE (t.sort_key > 1 AND (p.id IS NULL OR p.to_state IS DISTINCT FROM t.from_state))
			   OR (t.sort_key = 1 AND t.from_state IS NOT NULL)
			   OR t.most_recent <> (t.sort_key = (SELECT max(sort_key) FROM tasker_task_transitions x WHERE x.task_id = t.task_id))`,
		"complete steps not processed or never attempted": `SELECT count(*) FROM tasker_step_readiness_statuses r
			JOIN tasker_workflow_steps s USING (workflow_step_id)
			WHERE r.current_state = 'complete' AND (NOT s.processed OR s.attempts < 1)`,
		"started steps with an unfinished parent": `SELECT count(*) FROM tasker_step_readiness_statuses
			WHERE current_state <> 'pending' AND NOT dependencies_satisfied`,
		"exhausted errors with attempts below the limit": `SELECT count(*) FROM tasker_step_readiness_statuses
			WHERE blocking_reason = 'retries_exhausted' AND attempts <> retry_limit`,
		"complete tasks with unfinished steps": `SELECT count(*) FROM tasker_task_execution_contexts
			WHERE status = 'complete' AND execution_status <> 'all_complete'`,
		"failed tasks that are not blocked": `SELECT count(*) FROM tasker_task_execution_contexts
			WHERE status = 'error' AND execution_status <> 'blocked_by_failures'`,
		// The claim's index leaves out the unprocessed steps of tasks that are not active
		// (migration 00050): the generator sets the flag as the trigger would.
		"unprocessed steps whose task_inactive is not their task's": `SELECT count(*) FROM tasker_workflow_steps s
			WHERE NOT s.processed AND s.task_inactive <> (coalesce((SELECT tt.to_state FROM tasker_task_transitions tt
			      WHERE tt.task_id = s.task_id AND tt.most_recent), 'pending') NOT IN ('pending', 'in_progress'))`,
	}
	for name, q := range checks {
		var n int
		if err := conn.QueryRow(ctx, q).Scan(&n); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if name == "step counts" {
			if n != rep.Steps {
				t.Errorf("%d steps in the table, report says %d", n, rep.Steps)
			}
		} else if n != 0 {
			t.Errorf("%s: %d", name, n)
		}
	}
	// Every scenario and every blocking reason the mix can produce is present.
	for _, q := range []string{
		`SELECT count(DISTINCT tags->>'scenario') FROM tasker_tasks`,
		`SELECT count(DISTINCT blocking_reason) FROM tasker_step_readiness_statuses WHERE blocking_reason IN
			('already_processed', 'in_progress', 'terminal_state', 'dependencies_not_satisfied', 'retries_exhausted', 'backoff')`,
	} {
		var n int
		if err := conn.QueryRow(ctx, q).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n < 5 {
			t.Errorf("%s = %d, want every kind present", q, n)
		}
	}
	// The stored depth written by the generator is what the DAG view reports for a deep chain.
	var deepest int
	if err := conn.QueryRow(ctx, `SELECT max(d.dependency_level) FROM tasker_step_dag_relationships d
		JOIN tasker_tasks t USING (task_id) JOIN tasker_named_tasks n USING (named_task_id) WHERE n.name = 'deep_100'`).Scan(&deepest); err != nil {
		t.Fatal(err)
	}
	if deepest != 99 {
		t.Errorf("deepest level of deep_100 = %d, want 99", deepest)
	}
}

func TestPlanRefusesBadInput(t *testing.T) {
	t.Parallel()
	if _, err := seed.Plan(1000, []string{"linear", "spiral"}, 0); err == nil {
		t.Error("unknown shape accepted")
	}
	if _, err := seed.Plan(5, nil, 0); err == nil {
		t.Error("5 steps accepted")
	}
	if _, err := seed.Plan(1000, []string{"linear", "linear"}, 0); err == nil {
		t.Error("a shape named twice accepted")
	}
	plan, err := seed.Plan(1000000, nil, 200000)
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, b := range plan {
		total += b.Tasks * len(b.Shape.Steps)
		if b.Tasks*len(b.Shape.Steps) > 200000+10000 {
			t.Errorf("batch of %s writes %d steps", b.Shape.Name, b.Tasks*len(b.Shape.Steps))
		}
	}
	if total < 990000 || total > 1000000 {
		t.Errorf("plan for 1M steps writes %d", total)
	}
}
