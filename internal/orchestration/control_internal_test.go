package orchestration

import (
	"context"
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
		execSeed(t, plain, map[string]any{"n": n},
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
			`INSERT INTO tasker_task_transitions (task_id, to_state, sort_key, most_recent) VALUES (1, 'in_progress', 1, true)`)
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

// TestRecoverExpiredTakesBackEveryExpiredClaim: one call recovers all 250 expired claims of a
// dead worker (it reads them recoveryBatch at a time), not the first batch only; each step ends
// in error with its lost attempt counted and its claim cleared, and a claim whose lease has not
// run out is left alone.
func TestRecoverExpiredTakesBackEveryExpiredClaim(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := dbtest.NewURL(t)
	plain := dbtest.Open(t, url)
	execSeed(t, plain, nil,
		`INSERT INTO tasker_dependent_systems (name) VALUES ('dead')`,
		`INSERT INTO tasker_named_tasks (task_namespace_id, name) VALUES (1, 'dead')`,
		`INSERT INTO tasker_named_steps (dependent_system_id, name) SELECT dependent_system_id, 'only' FROM tasker_dependent_systems`,
		`INSERT INTO tasker_tasks (named_task_id) SELECT named_task_id FROM tasker_named_tasks, generate_series(1, 251)`,
		// Tasks 1-250 were running on a worker whose leases ran out; task 251's lease holds.
		`INSERT INTO tasker_workflow_steps (task_id, named_step_id, in_process, claimed_by, claim_token, claim_expires_at)
		 SELECT t.task_id, ns.named_step_id, true, 'dead-worker', gen_random_uuid(),
		        CASE WHEN t.task_id <= 250 THEN now() - interval '1 minute' ELSE now() + interval '1 hour' END
		 FROM tasker_tasks t, tasker_named_steps ns ORDER BY t.task_id`,
		`INSERT INTO tasker_workflow_step_transitions (workflow_step_id, to_state, sort_key, most_recent)
		 SELECT workflow_step_id, 'in_progress', 1, true FROM tasker_workflow_steps`,
		`INSERT INTO tasker_task_transitions (task_id, to_state, sort_key, most_recent)
		 SELECT task_id, 'in_progress', 1, true FROM tasker_tasks`)
	db, err := database.Open(ctx, url, database.Options{MaxOpenConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = database.Close(db) })
	n, err := NewService(db, nil).RecoverExpired(ctx, nil)
	if err != nil || n != 250 {
		t.Fatalf("RecoverExpired recovered %d (%v), want all 250 expired claims", n, err)
	}
	var got struct{ Errors, Claimed, Attempts int }
	if err := plain.Raw(`
		SELECT count(*) FILTER (WHERE st.to_state = 'error') AS errors,
		       count(*) FILTER (WHERE ws.in_process) AS claimed,
		       sum(coalesce(ws.attempts, 0)) AS attempts
		FROM tasker_workflow_steps ws
		JOIN tasker_workflow_step_transitions st ON st.workflow_step_id = ws.workflow_step_id AND st.most_recent`).
		Scan(&got).Error; err != nil {
		t.Fatal(err)
	}
	if got.Errors != 250 || got.Claimed != 1 || got.Attempts != 250 {
		t.Errorf("after recovery %+v, want 250 steps in error with one attempt counted each, and task 251's claim held", got)
	}
}
