package faulttest

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/taskerhq/tasker/internal/handler"
	"github.com/taskerhq/tasker/internal/orchestration"
	"github.com/taskerhq/tasker/internal/store"
	"github.com/taskerhq/tasker/internal/testkit/logbuf"
	"github.com/taskerhq/tasker/internal/testkit/wait"
)

// cut stops the cluster once, at its first call, and starts it again after down; restored
// receives the outcome.
type cut struct {
	pg   *cluster
	log  *slog.Logger
	down time.Duration

	once     sync.Once
	restored chan error
}

func (c *cut) now() {
	c.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := c.pg.c.Stop(ctx); err != nil {
			c.restored <- err
			return
		}
		go func() {
			time.Sleep(c.down)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			pc, err := startOn(ctx, c.pg, c.log)
			if err == nil {
				c.pg.c = pc
			}
			c.restored <- err
		}()
	})
}

// cutAfterClaim is an Observer that cuts the database right after the engine's first claim
// committed (the claim reads the claimed steps' inputs in its own transaction), before the
// engine does anything else with the step.
type cutAfterClaim struct{ *cut }

func (c cutAfterClaim) StepClaimed(string, time.Duration)          { c.now() }
func (c cutAfterClaim) StepStarted(string, time.Duration)          {}
func (c cutAfterClaim) StepFinished(string, string, time.Duration) {}
func (c cutAfterClaim) StepsRecovered(int)                         {}
func (c cutAfterClaim) EngineCall(string, int, int, time.Duration) {}

// cutBeforeHandler resolves step handlers from the database's configuration (like the
// binaries), cutting the database first the first time: after the inputs were read, before
// the handler's configuration is.
type cutBeforeHandler struct {
	*cut
	next orchestration.StepHandlers
}

func (c cutBeforeHandler) StepHandler(ctx context.Context, st *store.Store, namedTaskID int64, step string) (handler.Handler, time.Duration, error) {
	c.now()
	return c.next.StepHandler(ctx, st, namedTaskID, step)
}

// TestShortOutageAfterClaimDoesNotStrandTheStep cuts the database for 2 s while an engine
// holds a claim: right after the claim (which read the step's inputs) committed; and later,
// before it read the handler's configuration. The engine is alive and holds the claim, so it
// must run the step as soon as the database is back (the lease here is a minute, so waiting
// for it fails the test), as its first attempt, exactly once, with the step's history exactly
// pending → in_progress → complete.
func TestShortOutageAfterClaimDoesNotStrandTheStep(t *testing.T) {
	t.Parallel()
	for _, where := range []string{"right after the claim", "before loading the handler"} {
		t.Run(where, func(t *testing.T) {
			t.Parallel()
			shortOutageWhileClaimed(t, where == "right after the claim")
		})
	}
}

func shortOutageWhileClaimed(t *testing.T, afterClaim bool) {
	logs := &logbuf.Buffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("engine log:\n%s", logs.String())
		}
	})
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	pg := startCluster(t, quiet)
	url := pg.c.URL()
	ctx := context.Background()
	db := migratedDB(t, url)
	calls, handlers := countingHandlers(t)
	reg := registerTemplate(t, db, handlers, "single.yaml", singleYAML)
	task, _, err := orchestration.NewService(db, reg).CreateTask(ctx, orchestration.CreateTaskRequest{Namespace: "faults", Name: "single"})
	if err != nil {
		t.Fatal(err)
	}

	drop := &cut{pg: pg, log: quiet, down: 2 * time.Second, restored: make(chan error, 1)}
	cfg := orchestration.Config{Workers: 2, WorkerID: "survivor", PollInterval: time.Second, LeaseDuration: time.Minute}
	var steps orchestration.StepHandlers = orchestration.NewConfiguredHandlers(handlers)
	if afterClaim {
		cfg.Observer = cutAfterClaim{drop}
	} else {
		steps = cutBeforeHandler{cut: drop, next: steps}
	}
	engineDB := openDB(t, url)
	eng, err := orchestration.New(orchestration.NewService(engineDB, nil), startHub(t, url, log), steps, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := eng.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := eng.Stop(ctx); err != nil {
			t.Errorf("stopping the engine: %v", err)
		}
	})
	select {
	case err := <-drop.restored:
		if err != nil {
			t.Fatalf("cutting the database: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the engine claimed nothing, or the database did not come back, within 60s")
	}
	back := time.Now()

	var state string
	if !wait.Eventually(25*time.Second, func() bool {
		return db.Raw(`SELECT coalesce((SELECT to_state FROM tasker_task_transitions
			WHERE task_id = ? AND most_recent), 'pending')`, task.TaskID).Row().Scan(&state) == nil && state == "complete"
	}) {
		t.Fatalf("task %d is %s 25s after the database came back, want complete (the lease is 1m)", task.TaskID, state)
	}
	t.Logf("the task completed %s after the database came back", time.Since(back).Round(time.Millisecond))

	var rows []struct {
		WorkflowStepID int64
		Attempts       int
		History        string
	}
	if err := db.Raw(`SELECT ws.workflow_step_id, ws.attempts,
			string_agg(tr.to_state, ' ' ORDER BY tr.sort_key) AS history
		FROM tasker_workflow_steps ws
		JOIN tasker_workflow_step_transitions tr ON tr.workflow_step_id = ws.workflow_step_id
		WHERE ws.task_id = ? GROUP BY ws.workflow_step_id ORDER BY ws.workflow_step_id`, task.TaskID).
		Scan(&rows).Error; err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 {
		t.Fatalf("%d steps with transitions, want 2", len(rows))
	}
	calls.mu.Lock()
	defer calls.mu.Unlock()
	for _, s := range rows {
		if s.Attempts != 1 || s.History != "in_progress complete" {
			t.Errorf("step %d: %d attempts, history %q; want one attempt, \"in_progress complete\"",
				s.WorkflowStepID, s.Attempts, s.History)
		}
		if n := calls.calls[[2]int64{s.WorkflowStepID, 1}]; n != 1 {
			t.Errorf("step %d: attempt 1 ran %d times, want once", s.WorkflowStepID, n)
		}
	}
	if keys := len(calls.calls); keys != 2 {
		ran := make([][2]int64, 0, keys)
		for k := range calls.calls {
			ran = append(ran, k)
		}
		slices.SortFunc(ran, func(a, b [2]int64) int { return int(a[0] - b[0]) })
		t.Errorf("attempts run: %v, want the two steps' first attempts", ran)
	}
}
