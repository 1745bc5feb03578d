package faulttest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/taskerhq/tasker/internal/handler"
	"github.com/taskerhq/tasker/internal/orchestration"
	"github.com/taskerhq/tasker/internal/testkit/testbin"
	"github.com/taskerhq/tasker/internal/testkit/wait"
)

// retryYAML is one step that fails its first attempt and asks for its retry 2s later.
const retryYAML = `
namespace: faults
name: retry_later
version: 1.0.0
steps:
  - name: flaky
    handler: {kind: fail, config: {times: 1, retry_after: 2s}}
`

// outage is how long the database stays down in TestProcessesBackOffWhileDatabaseIsDown.
const outage = 10 * time.Second

// TestProcessesBackOffWhileDatabaseIsDown runs `tasker serve` and `tasker worker` on a private
// cluster and stops the cluster for 10 s while a step's retry is due. Each process must log
// the outage as failure streaks (the first failure, then "recovered" with the count), not once
// per attempt: at most a few lines per loop, and its claim loop at most a dozen attempts; and
// once the cluster is back, the retry must run within a few seconds (the loops wake when the
// events hub reconnects instead of sleeping out their backoff), exactly once.
func TestProcessesBackOffWhileDatabaseIsDown(t *testing.T) {
	t.Parallel()
	bin := buildTasker(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	pg := startCluster(t, log)
	url := pg.c.URL()
	ctx := context.Background()
	db := migratedDB(t, url)
	reg := registerTemplate(t, db, handler.NewBuiltinRegistry(), "retry.yaml", retryYAML)

	env := []string{"DATABASE_URL=" + url, "TASKER_AUTH=off", "PORT=0", "TASKER_HOST=127.0.0.1"}
	procs := []*process{
		startTasker(t, bin, "serve", env, `msg="http: listening"`),
		startTasker(t, bin, "worker", env, `msg="orchestration: engine started"`),
	}

	task, _, err := orchestration.NewService(db, reg).CreateTask(ctx, orchestration.CreateTaskRequest{Namespace: "faults", Name: "retry_later"})
	if err != nil {
		t.Fatal(err)
	}
	stepState := func() (state string, attempts int, err error) {
		err = db.Raw(`SELECT coalesce((SELECT to_state FROM tasker_workflow_step_transitions tr
			WHERE tr.workflow_step_id = ws.workflow_step_id AND tr.most_recent), 'pending'), coalesce(attempts, 0)
			FROM tasker_workflow_steps ws WHERE task_id = ?`, task.TaskID).Row().Scan(&state, &attempts)
		return
	}
	if !wait.Eventually(30*time.Second, func() bool { s, a, err := stepState(); return err == nil && s == "error" && a == 1 }) {
		s, a, err := stepState()
		t.Fatalf("the step's first attempt did not fail within 30s: %s after %d attempts (%v)", s, a, err)
	}

	// The database goes down for 10s, during which the retry falls due (2s after the failure).
	marks := make([]int, len(procs))
	for i, p := range procs {
		marks[i] = p.lines()
	}
	stopCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := pg.c.Stop(stopCtx); err != nil {
		t.Fatalf("stopping PostgreSQL: %v", err)
	}
	pg.c = nil
	cpuBefore := make([]time.Duration, len(procs))
	for i, p := range procs {
		cpuBefore[i] = p.cpu()
	}
	time.Sleep(outage)
	cpu := make([]time.Duration, len(procs))
	for i, p := range procs {
		cpu[i] = p.cpu() - cpuBefore[i]
	}
	pg.start(t, log)
	back := time.Now()

	// The retry runs soon after the database is back, once.
	var state string
	var attempts int
	if !wait.Eventually(20*time.Second, func() bool {
		state, attempts, err = stepState()
		return err == nil && state == "complete"
	}) {
		t.Fatalf("the step is %s after %d attempts 20s after the database came back (%v)", state, attempts, err)
	}
	resumed := time.Since(back)
	if attempts != 2 {
		t.Errorf("the step completed after %d attempts, want 2 (the failure and its retry)", attempts)
	}
	if resumed > 8*time.Second {
		t.Errorf("the retry ran %s after the database came back, want within 8s", resumed.Round(time.Millisecond))
	}
	// Every process's claim loop and events listener log their recovery once they next reach
	// the database: the listener within its reconnection delay, the claim loop when the
	// listener's reconnection wakes it. Wait for those lines (a loaded machine may take a few
	// seconds), then a moment for the other loops (refresher, recovery).
	recoveredEverywhere := func() bool {
		for i, p := range procs {
			text := strings.Join(p.since(marks[i]), "\n")
			if !strings.Contains(text, `msg="orchestration: claiming steps recovered"`) ||
				!strings.Contains(text, `msg="events: listening recovered"`) {
				return false
			}
		}
		return true
	}
	if !wait.Eventually(20*time.Second, recoveredEverywhere) {
		t.Errorf("not every process logged its claim loop's and its listener's recovery within 20s of the database's return")
	}
	time.Sleep(time.Second)

	claimAttempts := regexp.MustCompile(`msg="orchestration: claiming steps recovered".* failures=(\d+)`)
	workerID := regexp.MustCompile(`worker_id=\S+`)
	for i, p := range procs {
		during := p.since(marks[i])
		var failureLines, recovered int
		claimLines := map[string]int{} // per engine (a process runs two by default)
		claimFailures := -1
		for _, l := range during {
			if strings.Contains(l, "level=ERROR") || strings.Contains(l, "level=WARN") {
				failureLines++
			}
			if strings.Contains(l, "claiming steps") {
				claimLines[workerID.FindString(l)]++
			}
			if strings.Contains(l, " recovered") {
				recovered++
			}
			if m := claimAttempts.FindStringSubmatch(l); m != nil {
				claimFailures, _ = strconv.Atoi(m[1])
			}
		}
		t.Logf("tasker %s: %d log lines during and after the outage (%d errors and warnings), %d claim attempts failed, "+
			"%s of CPU in the %s outage, the retry ran %s after the database came back",
			p.name, len(during), failureLines, claimFailures, cpu[i], outage, resumed.Round(time.Millisecond))
		if failureLines > 12 {
			t.Errorf("tasker %s logged %d errors and warnings for a %s outage, want a few failure streaks:\n%s",
				p.name, failureLines, outage, strings.Join(head2(during, 40), "\n"))
		}
		for engine, n := range claimLines {
			if n != 2 {
				t.Errorf("tasker %s, engine %s, logged %d lines about claiming steps, want 2 (the first failure, the recovery):\n%s",
					p.name, engine, n, strings.Join(head2(during, 40), "\n"))
			}
		}
		if len(claimLines) == 0 {
			t.Errorf("tasker %s logged nothing about claiming steps during the outage", p.name)
		}
		if claimFailures < 1 || claimFailures > 12 {
			t.Errorf("tasker %s: its claim loop failed %d times in %s, want between 1 and 12 (exponential backoff)",
				p.name, claimFailures, outage)
		}
		if recovered < 2 {
			t.Errorf("tasker %s logged %d recoveries, want at least the claim loop's and the events listener's", p.name, recovered)
		}
	}
}

func head2(lines []string, n int) []string { return lines[:min(len(lines), n)] }

// buildTasker builds the tasker binary once per test run (internal/testkit/testbin).
func buildTasker(t *testing.T) string { return testbin.Tasker(t) }

// process is a running tasker command whose log lines are collected.
type process struct {
	name string
	cmd  *exec.Cmd
	mu   sync.Mutex
	log  []string
}

func (p *process) lines() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.log)
}

func (p *process) since(n int) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.log[n:]...)
}

// cpu is the CPU time (user and system) the process has used so far.
func (p *process) cpu() time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return -1
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * 10 * time.Millisecond // USER_HZ is 100 on Linux
}

// startTasker runs `tasker command` with env (and no TASKER_* or DATABASE_URL of the
// caller's) and returns once a log line contains ready. It is killed at cleanup.
func startTasker(t *testing.T, bin, command string, env []string, ready string) *process {
	t.Helper()
	cmd := exec.Command(bin, command)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DATABASE_URL=") && !strings.HasPrefix(kv, "PORT=") && !strings.HasPrefix(kv, "TASKER_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &process{name: command, cmd: cmd}
	exited := make(chan struct{})
	found := make(chan struct{})
	go func() {
		defer close(exited)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		announced := false
		for sc.Scan() {
			p.mu.Lock()
			p.log = append(p.log, sc.Text())
			p.mu.Unlock()
			if !announced && strings.Contains(sc.Text(), ready) {
				announced = true
				close(found)
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
		_ = cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("tasker %s log (last lines):\n%s", command, strings.Join(p.since(max(0, p.lines()-60)), "\n"))
		}
	})
	select {
	case <-found:
	case <-exited:
		t.Fatalf("tasker %s exited before it was ready:\n%s", command, strings.Join(p.since(0), "\n"))
	case <-time.After(60 * time.Second):
		t.Fatalf("tasker %s was not ready within 60s:\n%s", command, strings.Join(p.since(0), "\n"))
	}
	return p
}
