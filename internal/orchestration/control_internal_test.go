package orchestration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"gorm.io/gorm"

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
		statements := countStatements(t, url, func(svc *Service) {
			if err := svc.CancelTask(ctx, 1, map[string]any{"by": "test"}); err != nil {
				t.Fatal(err)
			}
		})
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
	sameStatementsAtBothSizes(t, "cancelling a task", "steps", cancel, 6, 60)
}

// TestRecoverExpiredTakesBackEveryExpiredClaim: one call recovers all 250 expired claims of a
// dead worker (it reads them recoveryBatch at a time), not the first batch only; each step ends
// in error with its lost attempt counted and its claim cleared, and a claim whose lease has not
// run out is left alone.
func TestRecoverExpiredTakesBackEveryExpiredClaim(t *testing.T) {
	t.Parallel()
	url, plain := seedDeadWorker(t, 250)
	n, err := openService(t, url).RecoverExpired(context.Background(), nil)
	if err != nil || n != 250 {
		t.Fatalf("RecoverExpired recovered %d (%v), want all 250 expired claims", n, err)
	}
	if out, want := readRecoveryOutcome(t, plain), (recoveryOutcome{Errors: 250, Attempts: 250, Claimed: 1, TasksInError: 50}); out != want {
		t.Errorf("after recovery %+v, want 250 steps in error with one attempt counted each, the 50 tasks of the steps without an attempt left in error, and the last task's claim held (%+v)", out, want)
	}
}

// openService opens a service over the database at url, closed when the test ends.
func openService(t testing.TB, url string) *Service {
	t.Helper()
	db, err := database.Open(context.Background(), url, database.Options{MaxOpenConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = database.Close(db) })
	return NewService(db, nil)
}

// countStatements runs fn with a service over the database at url and returns how many SQL
// statements it ran.
func countStatements(t testing.TB, url string, fn func(*Service)) int {
	t.Helper()
	log := &sqllog.Log{}
	db, err := database.Open(context.Background(), url, database.Options{MaxOpenConns: 2, Tracer: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = database.Close(db) })
	log.Take()
	fn(NewService(db, nil))
	return len(log.Take())
}

// sameStatementsAtBothSizes fails t unless run (which returns the statements an operation ran
// over n of its units) runs as many statements for small units as for big ones.
func sameStatementsAtBothSizes(t *testing.T, what, units string, run func(n int) int, small, big int) {
	t.Helper()
	a, b := run(small), run(big)
	if a != b {
		t.Errorf("%s ran %d statements for %d %s and %d for %d", what, a, small, units, b, big)
	}
	t.Logf("%s: %d statements either way", what, a)
}

// seedDeadWorker seeds n one-step tasks whose steps a dead worker left in_progress with
// expired leases, the step of every fifth task with a retry limit of 1 (its lost attempt is its
// last), and one more task whose step is claimed with a lease that holds. It returns the URL
// of the test's database and a connection to it.
func seedDeadWorker(t testing.TB, n int) (string, *gorm.DB) {
	t.Helper()
	url := dbtest.NewURL(t)
	plain := dbtest.Open(t, url)
	execSeed(t, plain, map[string]any{"n": n},
		`INSERT INTO tasker_dependent_systems (name) VALUES ('dead')`,
		`INSERT INTO tasker_named_tasks (task_namespace_id, name) VALUES (1, 'dead')`,
		`INSERT INTO tasker_named_steps (dependent_system_id, name) SELECT dependent_system_id, 'only' FROM tasker_dependent_systems`,
		`INSERT INTO tasker_tasks (named_task_id) SELECT named_task_id FROM tasker_named_tasks, generate_series(1, @n + 1)`,
		`INSERT INTO tasker_workflow_steps (task_id, named_step_id, retry_limit, in_process, claimed_by, claim_token, claim_expires_at)
		 SELECT t.task_id, ns.named_step_id, CASE WHEN t.task_id % 5 = 0 THEN 1 ELSE 3 END, true, 'dead-worker', gen_random_uuid(),
		        CASE WHEN t.task_id <= @n THEN now() - interval '1 minute' ELSE now() + interval '1 hour' END
		 FROM tasker_tasks t, tasker_named_steps ns ORDER BY t.task_id`,
		`INSERT INTO tasker_workflow_step_transitions (workflow_step_id, to_state, sort_key, most_recent)
		 SELECT workflow_step_id, 'in_progress', 1, true FROM tasker_workflow_steps`,
		`INSERT INTO tasker_task_transitions (task_id, to_state, sort_key, most_recent)
		 SELECT task_id, 'in_progress', 1, true FROM tasker_tasks`)
	return url, plain
}

// recoveryOutcome is what recovery left: steps in error (with the recovery's metadata) and
// with their lost attempt counted, claims still held, and tasks in error.
type recoveryOutcome struct{ Errors, Attempts, Claimed, TasksInError int }

func readRecoveryOutcome(t testing.TB, db *gorm.DB) recoveryOutcome {
	t.Helper()
	var got recoveryOutcome
	if err := db.Raw(`
		SELECT count(*) FILTER (WHERE st.to_state = 'error' AND st.from_state = 'in_progress' AND st.sort_key = 2
		                          AND st.metadata->>'reason' = 'lease_expired'
		                          AND st.metadata->>'claimed_by' = 'dead-worker') AS errors,
		       coalesce(sum(ws.attempts), 0) AS attempts,
		       count(*) FILTER (WHERE ws.in_process OR ws.claim_token IS NOT NULL) AS claimed,
		       (SELECT count(*) FROM tasker_task_transitions tt WHERE tt.most_recent AND tt.to_state = 'error') AS tasks_in_error
		FROM tasker_workflow_steps ws
		JOIN tasker_workflow_step_transitions st ON st.workflow_step_id = ws.workflow_step_id AND st.most_recent`).
		Scan(&got).Error; err != nil {
		t.Fatal(err)
	}
	return got
}

// TestRecoverExpiredRunsTheSameStatementsForAnyNumberOfClaims: a batch of expired claims is
// taken back in one transaction whose statements do not depend on how many claims it holds, so
// a dead worker's 90 claims cost the statements of its 5. Each step ends in error with the
// recovery's metadata and its lost attempt counted, its claim cleared; the tasks whose step
// has no attempt left are settled in error in the same transaction; the claim whose lease
// holds is left alone.
func TestRecoverExpiredRunsTheSameStatementsForAnyNumberOfClaims(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	recoverAll := func(n int) int {
		url, plain := seedDeadWorker(t, n)
		statements := countStatements(t, url, func(svc *Service) {
			if got, err := svc.RecoverExpired(ctx, nil); err != nil || got != n {
				t.Fatalf("%d expired claims: RecoverExpired recovered %d (%v)", n, got, err)
			}
		})
		want := recoveryOutcome{Errors: n, Attempts: n, Claimed: 1, TasksInError: n / 5}
		if out := readRecoveryOutcome(t, plain); out != want {
			t.Errorf("%d expired claims: after recovery %+v, want %+v", n, out, want)
		}
		return statements
	}
	sameStatementsAtBothSizes(t, "recovering expired claims", "claims", recoverAll, 5, 90)
}

// TestRecoverExpiredPassesOverTasksOthersHold: recovery takes the tasks' locks with SKIP
// LOCKED, so a task that another transaction holds (a recording, an operator) keeps its
// expired claim for a later round while the others are recovered; once released, the next
// round recovers it.
func TestRecoverExpiredPassesOverTasksOthersHold(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url, plain := seedDeadWorker(t, 4)
	svc := openService(t, url)
	holder := plain.Begin()
	if err := holder.Exec(`SELECT 1 FROM tasker_tasks WHERE task_id = 2 FOR NO KEY UPDATE`).Error; err != nil {
		t.Fatal(err)
	}
	n, err := svc.RecoverExpired(ctx, nil)
	if err != nil || n != 3 {
		holder.Rollback()
		t.Fatalf("with task 2 held, RecoverExpired recovered %d (%v), want the other 3", n, err)
	}
	if err := holder.Rollback().Error; err != nil {
		t.Fatal(err)
	}
	var held []int64
	if err := plain.Raw(`SELECT task_id FROM tasker_workflow_steps WHERE in_process ORDER BY task_id`).Scan(&held).Error; err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(held) != "[2 5]" {
		t.Errorf("claims still held after the first round: tasks %v, want [2 5] (the held task, the live lease)", held)
	}
	if n, err := svc.RecoverExpired(ctx, nil); err != nil || n != 1 {
		t.Fatalf("once task 2 is released, RecoverExpired recovered %d (%v), want 1", n, err)
	}
	if out, want := readRecoveryOutcome(t, plain), (recoveryOutcome{Errors: 4, Attempts: 4, Claimed: 1}); out != want {
		t.Errorf("after both rounds %+v, want %+v", out, want)
	}
}

// BenchmarkRecoverExpired measures how fast a dead worker's 1,000 expired claims come back:
// each iteration seeds them in a fresh database (not timed), then one RecoverExpired call takes
// them all back. It reports claims recovered per second.
func BenchmarkRecoverExpired(b *testing.B) {
	const n = 1000
	ctx := context.Background()
	var elapsed time.Duration
	for range b.N {
		b.StopTimer()
		url, plain := seedDeadWorker(b, n)
		db, err := database.Open(ctx, url, database.Options{MaxOpenConns: 2})
		if err != nil {
			b.Fatal(err)
		}
		svc := NewService(db, nil)
		b.StartTimer()
		began := time.Now()
		got, err := svc.RecoverExpired(ctx, nil)
		elapsed += time.Since(began)
		b.StopTimer()
		if err != nil || got != n {
			b.Fatalf("RecoverExpired recovered %d (%v), want %d", got, err, n)
		}
		if out := readRecoveryOutcome(b, plain); out.Errors != n {
			b.Fatalf("after recovery %+v, want %d steps in error", out, n)
		}
		_ = database.Close(db)
		b.StartTimer()
	}
	b.ReportMetric(float64(n*b.N)/elapsed.Seconds(), "claims/s")
}

// TestRecoverExpiredIsNotHeldUpByAClaimTheDatabaseRefuses: when the database refuses to take
// back one expired claim (here a trigger refuses any change to its step), the batch is
// recovered claim by claim: the others come back, and the refused one stays claimed and is
// reported in the error.
func TestRecoverExpiredIsNotHeldUpByAClaimTheDatabaseRefuses(t *testing.T) {
	t.Parallel()
	url, plain := seedDeadWorker(t, 6)
	execSeed(t, plain, nil,
		`CREATE FUNCTION test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
		 BEGIN RAISE EXCEPTION 'step % is poisoned', OLD.workflow_step_id; END $$`,
		`CREATE TRIGGER test_refuse BEFORE UPDATE ON tasker_workflow_steps
		 FOR EACH ROW WHEN (OLD.task_id = 3) EXECUTE FUNCTION test_refuse()`)
	n, err := openService(t, url).RecoverExpired(context.Background(), nil)
	if n != 5 || err == nil || !strings.Contains(err.Error(), "is poisoned") {
		t.Fatalf("RecoverExpired recovered %d (%v), want the 5 claims the database gives back and the refusal of the sixth", n, err)
	}
	if out, want := readRecoveryOutcome(t, plain), (recoveryOutcome{Errors: 5, Attempts: 5, Claimed: 2, TasksInError: 1}); out != want {
		t.Errorf("after recovery %+v, want %+v (task 3's claim and the live lease still held)", out, want)
	}
}
