package app

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/taskerhq/tasker/internal/testkit/dbtest"
	"github.com/taskerhq/tasker/internal/testkit/wait"
)

// TestWorkerSharesItsWorkersAmongEngines runs `tasker worker` with TASKER_ENGINES=2: its
// workers, and the prefetch set for the process, are shared out between two engines, both of
// which run steps (their worker ids are told apart in the transitions), every task completes,
// and no step starts more often than its template says. The worker connects as the server's administrator, so its engines also run
// without foreign-key checks (migration 00051), as they do on a private cluster.
func TestWorkerSharesItsWorkersAmongEngines(t *testing.T) {
	t.Parallel()
	url := dbtest.NewURL(t)
	db := dbtest.Open(t, url)
	const tasks = 40
	lines := strings.Repeat(`{"template": "examples/diamond_workflow"}`+"\n", tasks)
	path := filepath.Join(t.TempDir(), "tasks.jsonl")
	if err := os.WriteFile(path, []byte(lines), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := runInProcess(t, runRunTask, url, "-jsonl", path, "-templates-dir", ""); err != nil ||
		len(strings.Fields(out)) != tasks {
		t.Fatalf("run-task -jsonl: %q, %v", out, err)
	}
	w := startProcess(t, buildTasker(t), "worker", []string{"-metrics-listen", "127.0.0.1:0"},
		[]string{"DATABASE_URL=" + dbtest.AsServerAdmin(t, url), "TASKER_WORKERS=4", "TASKER_ENGINES=2", "TASKER_PREFETCH=3"})
	complete := func() (n int) {
		db.Raw(`SELECT count(*) FROM tasker_task_transitions WHERE most_recent AND to_state = 'complete'`).Scan(&n)
		return n
	}
	if !wait.Eventually(60*time.Second, func() bool { return complete() == tasks }) {
		t.Fatalf("%d of %d tasks complete after 60s:\n%s", complete(), tasks, w.log.String())
	}
	if !strings.Contains(w.log.String(), `msg="worker: workers shared among engines" workers=4 engines="[2 2]"`) {
		t.Errorf("the worker did not say how it shared its workers:\n%s", w.log.String())
	}
	// The prefetch set for the process is shared out too: 3 as 2 and 1.
	if log := w.log.String(); !strings.Contains(log, " workers=2 prefetch=2 ") || !strings.Contains(log, " workers=2 prefetch=1 ") {
		t.Errorf("the engines did not share TASKER_PREFETCH=3 as 2 and 1:\n%s", log)
	}
	// Every step started once per attempt (diamond_workflow's two failing branches twice) and
	// completed once.
	var wrong []struct {
		Step                          int64
		Attempts, Starts, Completions int
	}
	db.Raw(`SELECT ws.workflow_step_id AS step, ws.attempts,
		       count(*) FILTER (WHERE tr.to_state = 'in_progress') AS starts,
		       count(*) FILTER (WHERE tr.to_state = 'complete') AS completions
		FROM tasker_workflow_steps ws JOIN tasker_workflow_step_transitions tr USING (workflow_step_id)
		GROUP BY ws.workflow_step_id, ws.attempts
		HAVING count(*) FILTER (WHERE tr.to_state = 'in_progress') <> ws.attempts
		    OR count(*) FILTER (WHERE tr.to_state = 'complete') <> 1`).Scan(&wrong)
	if len(wrong) > 0 {
		t.Errorf("steps not run exactly once per attempt: %+v", wrong)
	}
	var ids []string
	db.Raw(`SELECT DISTINCT metadata->>'worker_id' FROM tasker_workflow_step_transitions
		WHERE to_state = 'in_progress' ORDER BY 1`).Scan(&ids)
	if len(ids) != 2 {
		t.Fatalf("steps were started by %d engines %v, want the worker's 2", len(ids), ids)
	}
}
