package orchestration

import (
	"context"
	"strings"
	"testing"

	"github.com/taskerhq/tasker/internal/database"
	"github.com/taskerhq/tasker/internal/testkit/dbtest"
	"github.com/taskerhq/tasker/internal/testkit/sqllog"
)

// TestCancelTaskRunsTheSameStatementsForAnySize: cancelling a task moves its unfinished steps
// in one batch of the state machine and clears their claims in one statement, so a task of 60
// steps costs the statements of a task of 6. Its complete steps keep their state; the pending
// and running ones end cancelled, their claims cleared.
func TestCancelTaskRunsTheSameStatementsForAnySize(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	cancel := func(n int) int {
		url := dbtest.NewURL(t)
		plain := dbtest.Open(t, url)
		// Steps 1, 4, 7, ... are complete; 2, 5, 8, ... running, claimed; the others pending.
		for _, q := range []string{
			`INSERT INTO tasker_dependent_systems (name) VALUES ('cancel')`,
			`INSERT INTO tasker_named_tasks (task_namespace_id, name) VALUES (1, 'cancel')`,
			`INSERT INTO tasker_named_steps (dependent_system_id, name)
			 SELECT dependent_system_id, 'c' || i FROM tasker_dependent_systems, generate_series(1, @n) i`,
			`INSERT INTO tasker_tasks (named_task_id) SELECT named_task_id FROM tasker_named_tasks`,
			`INSERT INTO tasker_workflow_steps (task_id, named_step_id, processed, in_process, claimed_by, claim_token)
			 SELECT 1, named_step_id, named_step_id % 3 = 1, named_step_id % 3 = 2,
			        CASE WHEN named_step_id % 3 = 2 THEN 'worker' END,
			        CASE WHEN named_step_id % 3 = 2 THEN gen_random_uuid() END
			 FROM tasker_named_steps ORDER BY named_step_id`,
			`INSERT INTO tasker_workflow_step_transitions (workflow_step_id, to_state, sort_key, most_recent)
			 SELECT workflow_step_id, CASE WHEN processed THEN 'complete' ELSE 'in_progress' END, 1, true
			 FROM tasker_workflow_steps WHERE processed OR in_process`,
			`INSERT INTO tasker_task_transitions (task_id, to_state, sort_key, most_recent) VALUES (1, 'in_progress', 1, true)`,
		} {
			var args []any
			if strings.Contains(q, "@n") {
				args = append(args, map[string]any{"n": n})
			}
			if err := plain.Exec(q, args...).Error; err != nil {
				t.Fatalf("seeding: %v\n%s", err, q)
			}
		}
		log := &sqllog.Log{}
		db, err := database.Open(ctx, url, database.Options{MaxOpenConns: 2, Tracer: log})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = database.Close(db) })
		log.Take()
		if err := NewService(db, nil).CancelTask(ctx, 1, map[string]any{"by": "test"}); err != nil {
			t.Fatal(err)
		}
		statements := len(log.Take())
		var got struct {
			Complete, Cancelled, Claimed int
			Task                         string
		}
		if err := plain.Raw(`
			SELECT count(*) FILTER (WHERE st.to_state = 'complete') AS complete,
			       count(*) FILTER (WHERE st.to_state = 'cancelled' AND st.sort_key = CASE WHEN ws.in_process OR ws.workflow_step_id % 3 = 2 THEN 2 ELSE 1 END) AS cancelled,
			       count(*) FILTER (WHERE ws.in_process OR ws.claim_token IS NOT NULL) AS claimed,
			       (SELECT to_state FROM tasker_task_transitions WHERE task_id = 1 AND most_recent) AS task
			FROM tasker_workflow_steps ws
			JOIN tasker_workflow_step_transitions st ON st.workflow_step_id = ws.workflow_step_id AND st.most_recent`).
			Scan(&got).Error; err != nil {
			t.Fatal(err)
		}
		if want := (n + 2) / 3; got.Complete != want || got.Cancelled != n-want || got.Claimed != 0 || got.Task != "cancelled" {
			t.Errorf("%d steps: after the cancel %+v, want %d complete, %d cancelled, none claimed, the task cancelled",
				n, got, want, n-want)
		}
		return statements
	}
	small, big := cancel(6), cancel(60)
	if small != big {
		t.Errorf("cancelling a task ran %d statements with 6 steps and %d with 60", small, big)
	}
	t.Logf("%d statements either way", small)
}
