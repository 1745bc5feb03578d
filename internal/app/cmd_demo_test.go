package app

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/taskerhq/tasker/internal/testkit/dbtest"
	"github.com/taskerhq/tasker/internal/testkit/wait"
)

func TestDemoCreatesOneTaskPerDemoTemplateOnce(t *testing.T) {
	t.Parallel()
	db := dbtest.New(t)
	reg, err := loadTemplates("")
	if err != nil {
		t.Fatal(err)
	}
	// The demo starts one task of every shipped example template.
	var listed, shipped []string
	for _, d := range demoTasks {
		listed = append(listed, d.namespace+"/"+d.name)
	}
	for _, tpl := range reg.Templates() {
		shipped = append(shipped, tpl.Namespace+"/"+tpl.Name)
	}
	slices.Sort(listed)
	if !slices.Equal(listed, shipped) {
		t.Fatalf("demo templates %v, shipped templates %v: want one demo task of each", listed, shipped)
	}
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if err := reg.RegisterAll(ctx, db); err != nil {
		t.Fatal(err)
	}
	for round := 1; round <= 2; round++ {
		if err := createDemoTasks(ctx, db, reg, "http://127.0.0.1:1/demo", log); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		var n int64
		if err := db.Raw(`SELECT count(*) FROM tasker_tasks WHERE initiator = 'demo'`).Scan(&n).Error; err != nil {
			t.Fatal(err)
		}
		if n != int64(len(demoTasks)) {
			t.Fatalf("round %d: %d demo tasks, want %d", round, n, len(demoTasks))
		}
	}
	var steps int64
	if err := db.Raw(`SELECT count(*) FROM tasker_workflow_steps s JOIN tasker_tasks t USING (task_id)
		JOIN tasker_named_tasks nt USING (named_task_id) WHERE nt.name = 'payment_failures'`).Scan(&steps).Error; err != nil {
		t.Fatal(err)
	}
	if steps != 4 {
		t.Fatalf("payment_failures task has %d steps, want 4", steps)
	}
}

// TestDemoTasksEndAsTheReadmeSays runs `tasker demo`: every example template gets a task, all
// complete (the http example through the demo item service's 503 and Retry-After) except
// payment_failures, which ends in error.
func TestDemoTasksEndAsTheReadmeSays(t *testing.T) {
	t.Parallel()
	bin := buildTasker(t)
	url := dbtest.NewURL(t)
	db := dbtest.Open(t, url)
	startProcess(t, bin, "demo", []string{"-data-dir", t.TempDir()}, []string{"DATABASE_URL=" + url})
	var states []string
	ok := wait.Eventually(60*time.Second, func() bool {
		states = nil
		err := db.Raw(`SELECT nt.name || '=' || coalesce(tt.to_state, 'pending') FROM tasker_tasks t
			JOIN tasker_named_tasks nt USING (named_task_id)
			LEFT JOIN tasker_task_transitions tt ON tt.task_id = t.task_id AND tt.most_recent
			ORDER BY nt.name`).Scan(&states).Error
		if err != nil {
			t.Fatal(err)
		}
		return strings.Join(states, " ") == "diamond_workflow=complete http_fetch_and_post=complete linear_workflow=complete "+
			"mixed_workflow=complete parallel_merge_workflow=complete payment_failures=error tree_workflow=complete"
	})
	if !ok {
		t.Fatalf("demo tasks ended as %v, want every one complete except payment_failures in error", states)
	}
	var retried int64
	if err := db.Raw(`SELECT count(*) FROM tasker_workflow_step_transitions st
		JOIN tasker_workflow_steps s USING (workflow_step_id) JOIN tasker_named_steps ns USING (named_step_id)
		WHERE ns.name = 'post_summary' AND st.to_state = 'error'`).Scan(&retried).Error; err != nil {
		t.Fatal(err)
	}
	if retried != 1 {
		t.Fatalf("post_summary failed %d times, want once (the demo service's 503)", retried)
	}
}
