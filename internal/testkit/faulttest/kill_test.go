package faulttest

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/taskerhq/tasker/internal/database"
	"github.com/taskerhq/tasker/internal/events"
	"github.com/taskerhq/tasker/internal/handler"
	"github.com/taskerhq/tasker/internal/orchestration"
	"github.com/taskerhq/tasker/internal/testkit/dbtest"
	"github.com/taskerhq/tasker/internal/testkit/testbin"
	"github.com/taskerhq/tasker/internal/testkit/wait"
)

// workerEnvVar makes the test binary act as a worker process on the named database: its
// engine runs "count" steps with a handler that prints "started <step id> <attempt>" and then
// hangs, until the process is killed.
const workerEnvVar = "FAULTTEST_WORKER_DATABASE_URL"

// killedLease is the lease of the worker that gets killed: its step is recovered once the
// lease has run out.
const killedLease = 2 * time.Second

func TestMain(m *testing.M) {
	if url := os.Getenv(workerEnvVar); url != "" {
		os.Exit(runHangingWorker(url))
	}
	code := m.Run()
	testbin.Remove()
	os.Exit(code)
}

func runHangingWorker(url string) int {
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	db, err := database.Open(ctx, url, database.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		return 2
	}
	hub := events.NewHub(url, log)
	go func() { _ = hub.Run(ctx) }()
	handlers := handler.NewBuiltinRegistry()
	_ = handlers.Register("count", func(map[string]any) (handler.Handler, error) {
		return handler.HandlerFunc(func(ctx context.Context, in handler.Input) (handler.Output, error) {
			fmt.Printf("started %d %d\n", in.StepID, in.Attempt)
			select {} // until killed
		}), nil
	})
	eng, err := orchestration.New(orchestration.NewService(db, nil), hub, orchestration.NewConfiguredHandlers(handlers), orchestration.Config{
		Workers: 1, WorkerID: "doomed", PollInterval: 200 * time.Millisecond, LeaseDuration: killedLease,
	}, log)
	if err == nil {
		err = eng.Start(ctx)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		return 2
	}
	select {} // until killed
}

const singleYAML = `
namespace: faults
name: single
version: 1.0.0
steps:
  - name: only
    handler: {kind: count}
  - name: next
    depends_on: only
    handler: {kind: count}
`

// TestKilledWorkersStepIsRecovered kills a worker process (SIGKILL) while its step runs: once
// the claim's lease runs out, another engine recovers the step and runs it as a new attempt,
// and the task completes; the killed attempt is never run again.
func TestKilledWorkersStepIsRecovered(t *testing.T) {
	t.Parallel()
	url := dbtest.NewURL(t)
	db := openDB(t, url)
	ctx := context.Background()
	calls, handlers := countingHandlers(t)
	reg := registerTemplate(t, db, handlers, "single.yaml", singleYAML)
	task, _, err := orchestration.NewService(db, reg).CreateTask(ctx, orchestration.CreateTaskRequest{Namespace: "faults", Name: "single"})
	if err != nil {
		t.Fatal(err)
	}

	// The worker process claims the first step and hangs in it; then it is killed.
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), workerEnvVar+"="+url)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	started := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if line := sc.Text(); strings.HasPrefix(line, "started ") {
				started <- line
				return
			}
		}
		close(started)
	}()
	var stepID, attempt int64
	select {
	case line, ok := <-started:
		if !ok {
			t.Fatalf("the worker process ended before running a step:\n%s", stderr.String())
		}
		if _, err := fmt.Sscanf(line, "started %d %d", &stepID, &attempt); err != nil || attempt != 1 {
			t.Fatalf("worker reported %q, want the first attempt of a step", line)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("the worker process ran no step within 30s:\n%s", stderr.String())
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()

	// A surviving engine recovers the step when the lease runs out.
	startEngine(t, url, handlers, orchestration.Config{
		Workers: 2, WorkerID: "survivor", PollInterval: 200 * time.Millisecond, RecoveryInterval: 200 * time.Millisecond,
	}, slog.New(slog.DiscardHandler))
	var state string
	if !wait.Eventually(30*time.Second, func() bool {
		return db.Raw(`SELECT coalesce((SELECT to_state FROM tasker_task_transitions
			WHERE task_id = ? AND most_recent), 'pending')`, task.TaskID).Row().Scan(&state) == nil && state == "complete"
	}) {
		t.Fatalf("task %d is %s 30s after its worker was killed, want complete", task.TaskID, state)
	}

	var attempts int
	if err := db.Raw(`SELECT attempts FROM tasker_workflow_steps WHERE workflow_step_id = ?`, stepID).
		Row().Scan(&attempts); err != nil {
		t.Fatal(err)
	}
	if attempts != 2 {
		t.Errorf("the killed step has %d attempts, want 2 (the killed one and its recovery)", attempts)
	}
	calls.mu.Lock()
	first, second := calls.calls[[2]int64{stepID, 1}], calls.calls[[2]int64{stepID, 2}]
	calls.mu.Unlock()
	if first != 0 || second != 1 {
		t.Errorf("after the kill, attempt 1 ran %d times and attempt 2 ran %d times here, want 0 and 1", first, second)
	}
	var recovery struct{ Reason, ClaimedBy string }
	if err := db.Raw(`SELECT metadata->>'reason' AS reason, metadata->>'claimed_by' AS claimed_by
		FROM tasker_workflow_step_transitions
		WHERE workflow_step_id = ? AND metadata->>'reason' IS NOT NULL ORDER BY id LIMIT 1`, stepID).
		Scan(&recovery).Error; err != nil {
		t.Fatal(err)
	}
	if recovery.Reason != "lease_expired" || recovery.ClaimedBy != "doomed" {
		t.Errorf("recovery transition metadata %+v, want reason lease_expired, claimed_by doomed", recovery)
	}
}
