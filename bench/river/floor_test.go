package main

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// testServerURL is the PostgreSQL server of the tests (TASKER_TEST_DATABASE_URL, as for the
// main module's tests).
func testServerURL() string {
	if u := os.Getenv("TASKER_TEST_DATABASE_URL"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
}

// buildTasker builds the tasker binary of this repository into a temporary directory.
func buildTasker(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "tasker")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Dir = filepath.Join("..", "..")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building tasker: %v\n%s", err, out)
	}
	return bin
}

// drained is what a drain left in a database, in a form two drains can be compared in: every
// row the drain wrote, without what differs between any two drains (ids of transitions,
// times, claim tokens, workers' names and handlers' durations), and the rows of the
// notifications it sent.
type drained struct {
	rows          []string
	notifications []string
}

// drainedState reads what a drain of dbURL left (see drained).
func drainedState(t *testing.T, ctx context.Context, pool *pgxpool.Pool) []string {
	t.Helper()
	queries := []string{
		`SELECT format('step %s task %s attempts %s processed %s in_process %s claimed %s results %s backoff %s inactive %s timed %s',
		        workflow_step_id, task_id, attempts, processed, in_process,
		        claimed_by IS NOT NULL OR claim_token IS NOT NULL OR claim_expires_at IS NOT NULL,
		        results, backoff_request_seconds, task_inactive, processed_at = last_attempted_at)
		 FROM tasker_workflow_steps ORDER BY workflow_step_id`,
		`SELECT format('step %s %s -> %s sort %s recent %s %s', workflow_step_id, from_state, to_state, sort_key, most_recent,
		        metadata - 'worker_id' - 'duration_ms')
		 FROM tasker_workflow_step_transitions ORDER BY workflow_step_id, sort_key`,
		`SELECT format('task %s %s -> %s sort %s recent %s %s', task_id, from_state, to_state, sort_key, most_recent,
		        metadata - 'worker_id')
		 FROM tasker_task_transitions ORDER BY task_id, sort_key`,
		`SELECT format('task %s complete %s', task_id, complete) FROM tasker_tasks ORDER BY task_id`,
		`SELECT format('context %s %s %s %s %s %s', task_id, status, execution_status, total_steps, completed_steps, health_status)
		 FROM tasker_task_execution_contexts ORDER BY task_id`,
		`SELECT format('readiness %s %s %s %s', workflow_step_id, current_state, ready_for_execution, blocking_reason)
		 FROM tasker_step_readiness_statuses ORDER BY workflow_step_id`,
	}
	var out []string
	for _, q := range queries {
		rows, err := pool.Query(ctx, q)
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		got, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		out = append(out, got...)
	}
	return out
}

// listen collects the rows of the transition notifications of dbURL, each as "channel task
// step from -> to". stop waits until want rows have come (for at most 30 s), then a moment
// for any row beyond them, and returns the rows, sorted.
func listen(t *testing.T, ctx context.Context, dbURL string) (stop func(want int) []string) {
	t.Helper()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	for _, ch := range []string{"tasker_step_transitions", "tasker_task_transitions"} {
		if _, err := conn.Exec(ctx, "LISTEN "+ch); err != nil {
			t.Fatal(err)
		}
	}
	lctx, cancel := context.WithCancel(ctx)
	var mu sync.Mutex
	var got []string
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer conn.Close(context.Background())
		for {
			n, err := conn.WaitForNotification(lctx)
			if err != nil {
				return
			}
			mu.Lock()
			var payload struct {
				Rows []struct {
					ID     int64   `json:"id"`
					TaskID int64   `json:"task_id"`
					StepID *int64  `json:"step_id"`
					From   *string `json:"from"`
					To     string  `json:"to"`
				} `json:"rows"`
			}
			if err := json.Unmarshal([]byte(n.Payload), &payload); err != nil || len(payload.Rows) == 0 || len(payload.Rows) > 50 {
				got = append(got, "malformed: "+n.Payload)
				mu.Unlock()
				continue
			}
			for _, r := range payload.Rows {
				step, from := "-", "-"
				if r.StepID != nil {
					step = strconv.FormatInt(*r.StepID, 10)
				}
				if r.From != nil {
					from = *r.From
				}
				if r.ID == 0 {
					got = append(got, "no id: "+n.Payload)
				}
				got = append(got, strings.Join([]string{n.Channel, strconv.FormatInt(r.TaskID, 10), step, from, "->", r.To}, " "))
			}
			mu.Unlock()
		}
	}()
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(got)
	}
	return func(want int) []string {
		for deadline := time.Now().Add(30 * time.Second); count() < want && time.Now().Before(deadline); {
			time.Sleep(20 * time.Millisecond)
		}
		time.Sleep(200 * time.Millisecond) // rows beyond want, if any, are caught too
		cancel()
		<-done
		slices.Sort(got)
		return got
	}
}

// drainWith creates tasks one-step tasks in a fresh database, drains them with drain (given
// the database and a pool on it) and returns what the drain left, with the notifications of
// its four transitions a task.
func drainWith(t *testing.T, tasker string, tasks int, drain func(ctx context.Context, dbURL string, pool *pgxpool.Pool) error) drained {
	t.Helper()
	ctx := context.Background()
	var d drained
	_, err := fresh(ctx, testServerURL(), func(dbURL string) (result, error) {
		sc := scenario{template: "bench/noop_one", steps: 1, workers: 8}
		_, pool, err := createTasks(ctx, dbURL, tasker, "templates", sc, tasks)
		if err != nil {
			return result{}, err
		}
		defer pool.Close()
		stop := listen(t, ctx, dbURL)
		if err := drain(ctx, dbURL, pool); err != nil {
			stop(0)
			return result{}, err
		}
		d.notifications = stop(4 * tasks)
		d.rows = drainedState(t, ctx, pool)
		return result{}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestWriteFloorWritesWhatTheEngineWrites: the write floor is a floor under the engine's
// drain only if it writes the same rows. The same one-step tasks are drained by a `tasker
// worker` and by bench_write_floor (two backends at once, small batches); every row the drains
// leave, the views over them and the notifications they send are the same, but for what
// differs between any two drains (times, claim tokens, transition ids, workers' names).
func TestWriteFloorWritesWhatTheEngineWrites(t *testing.T) {
	tasker := buildTasker(t)
	const tasks = 60
	engine := drainWith(t, tasker, tasks, func(ctx context.Context, dbURL string, pool *pgxpool.Pool) error {
		w := exec.Command(tasker, "worker", "-database-url", dbURL, "-workers", "8")
		var logs strings.Builder
		w.Stdout, w.Stderr = &logs, &logs
		if err := w.Start(); err != nil {
			return err
		}
		defer func() { _ = w.Process.Signal(syscall.SIGTERM); _ = w.Wait() }()
		wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		if err := waitFor(wctx, pool, tasks, `SELECT count(*) FROM tasker_task_transitions WHERE most_recent AND to_state = 'complete'`); err != nil {
			return errors.Join(err, errors.New(logs.String()))
		}
		return nil
	})
	floor := drainWith(t, tasker, tasks, func(ctx context.Context, dbURL string, pool *pgxpool.Pool) error {
		// runFloor creates the tasks itself: drain those of this database instead.
		_, err := drainFloor(ctx, pool, dbURL, 8, 2)
		return err
	})
	if len(engine.rows) != len(floor.rows) {
		t.Fatalf("the engine's drain left %d rows, the floor's %d", len(engine.rows), len(floor.rows))
	}
	for i := range engine.rows {
		if engine.rows[i] != floor.rows[i] {
			t.Errorf("row %d: engine %q, floor %q", i, engine.rows[i], floor.rows[i])
		}
	}
	// Four transitions a task, each notified once.
	if len(engine.notifications) != 4*tasks {
		t.Errorf("the engine's drain notified %d transitions, want %d: %q", len(engine.notifications), 4*tasks, engine.notifications)
	}
	if !slices.Equal(engine.notifications, floor.notifications) {
		t.Errorf("notifications differ:\nengine %q\nfloor  %q", engine.notifications, floor.notifications)
	}
	// The comparison sees what it compares: a completed task, in both.
	if !slices.Contains(floor.rows, "task 1 complete t") {
		t.Errorf("the floor's drain left no completed task 1 (%d rows)", len(floor.rows))
	}
}
