package app

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/taskerhq/tasker/internal/auth"
	"github.com/taskerhq/tasker/internal/runstate"
	"github.com/taskerhq/tasker/internal/testkit/dbtest"
	"github.com/taskerhq/tasker/internal/testkit/wait"
)

// TestServeRunsItsOwnPostgres builds the binary and runs `tasker serve` without DATABASE_URL:
// it must start a private cluster, become healthy and ready, exit 0 on SIGTERM with its cluster
// stopped, start again on the same data, take its cluster down when killed with SIGKILL, and
// exit 1 when its cluster dies under it.
func TestServeRunsItsOwnPostgres(t *testing.T) {
	t.Parallel()
	bin := buildTasker(t)
	dataDir := clusterDataDir(t)

	// First run: a fresh cluster, stopped by SIGTERM.
	s := startServe(t, bin, "-data-dir", dataDir)
	s.waitHealthy(t)
	assertPostgresRunning(t, s)
	s.stop(t, syscall.SIGTERM)
	if processAlive(s.postgresPID) {
		t.Fatalf("postgres pid %d still running after tasker serve exited", s.postgresPID)
	}
	for _, want := range []string{`msg="serve: stopped" step=http`, `msg="serve: stopped" step="database pool"`, `msg="serve: stopped" step=postgres`} {
		if !strings.Contains(s.log.String(), want) {
			t.Errorf("shutdown log lacks %q", want)
		}
	}
	assertStopOrder(t, s.log.String(), "serve", "workers", `"engine pool"`, `"database pool"`, "postgres")

	// Second run on the same data: a restart, then SIGKILL of the server.
	s = startServe(t, bin, "-data-dir", dataDir)
	s.waitHealthy(t)
	assertPostgresRunning(t, s)
	if !strings.Contains(s.log.String(), "fresh=false") {
		t.Errorf("second run did not reuse the cluster:\n%s", s.log.String())
	}
	if err := s.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	s.wait(t)
	if !wait.Eventually(15*time.Second, func() bool { return !processAlive(s.postgresPID) }) {
		t.Fatalf("postgres pid %d outlived its killed server", s.postgresPID)
	}
	// The killed server left its record behind; commands see that it names a dead server.
	_, stderr, code := runCLI(t, bin, dataDir, "run-task", "-template", "examples/linear_workflow")
	if want := fmt.Sprintf("pid %d, has exited", s.cmd.Process.Pid); code != 1 || !strings.Contains(stderr, want) {
		t.Errorf("run-task after the server was killed: exit %d, %q; want 1 and %q", code, stderr, want)
	}

	// Third run: the cluster dies under the server, which must shut down and report it.
	s = startServe(t, bin, "-data-dir", dataDir)
	s.waitHealthy(t)
	assertPostgresRunning(t, s)
	if err := syscall.Kill(s.postgresPID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if code := s.wait(t); code != 1 {
		t.Fatalf("tasker serve exited %d after its cluster died, want 1", code)
	}
	if !strings.Contains(s.log.String(), "exited unexpectedly") {
		t.Fatalf("the cluster's death was not reported:\n%s", s.log.String())
	}
	// The killed postmaster's backends exit on their own; the data dir is removed after them.
	clusterDir := filepath.Join(dataDir, "postgres")
	if !wait.Eventually(15*time.Second, func() bool { return len(processesIn(clusterDir)) == 0 }) {
		t.Fatalf("processes still running in %s: %v", clusterDir, processesIn(clusterDir))
	}
}

// TestServeUsesDatabaseURL checks that with DATABASE_URL set, serve uses it and starts no
// cluster of its own.
func TestServeUsesDatabaseURL(t *testing.T) {
	t.Parallel()
	bin := buildTasker(t)
	s := startServe(t, bin, "-database-url", dbtest.NewURL(t), "-data-dir", t.TempDir())
	s.waitHealthy(t)
	if strings.Contains(s.log.String(), "pgembed:") {
		t.Fatalf("serve started a private cluster although a database URL was given:\n%s", s.log.String())
	}
	s.stop(t, syscall.SIGINT)
}

// TestWorkerServesMetricsAndHealth runs `tasker worker -metrics-listen` against a test
// database: it serves /healthz, /readyz and /metrics with the step metric families, and exits 0
// on SIGTERM.
func TestWorkerServesMetricsAndHealth(t *testing.T) {
	t.Parallel()
	bin := buildTasker(t)
	url := dbtest.NewURL(t)
	w := startProcess(t, bin, "worker", []string{"-metrics-listen", "127.0.0.1:0"}, []string{"DATABASE_URL=" + url})
	// The metrics listener answers before the engines have started; the stop below must find
	// every part started.
	if !wait.Eventually(30*time.Second, func() bool { return strings.Contains(w.log.String(), `msg="worker: started" step=workers`) }) {
		t.Fatalf("the worker's engines did not start within 30s:\n%s", w.log.String())
	}
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get("http://" + w.addr + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if code, _ := get("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz: %d", code)
	}
	if code, _ := get("/readyz"); code != http.StatusOK {
		t.Errorf("/readyz: %d", code)
	}
	code, body := get("/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d", code)
	}
	for _, family := range []string{"tasker_ready_steps", "tasker_subscribers", "go_goroutines"} {
		if !strings.Contains(body, family) {
			t.Errorf("/metrics lacks %s", family)
		}
	}
	if code, _ := get("/debug/pprof/"); code != http.StatusNotFound {
		t.Errorf("/debug/pprof/ without -pprof: %d, want 404", code)
	}
	w.stop(t, syscall.SIGTERM)
	assertStopOrder(t, w.log.String(), "worker", "workers", `"engine pool"`, `"database pool"`)
}

// TestWorkerServesProfilesWhenAsked runs `tasker worker -metrics-listen` with TASKER_PPROF=on:
// it serves the runtime's profiles under /debug/pprof/, a CPU profile among them.
func TestWorkerServesProfilesWhenAsked(t *testing.T) {
	t.Parallel()
	bin := buildTasker(t)
	url := dbtest.NewURL(t)
	w := startProcess(t, bin, "worker", []string{"-metrics-listen", "127.0.0.1:0"},
		[]string{"DATABASE_URL=" + url, "TASKER_PPROF=on"})
	for path, want := range map[string]string{
		"/debug/pprof/":                  "goroutine",
		"/debug/pprof/goroutine?debug=1": "goroutine profile: total",
		"/debug/pprof/profile?seconds=1": "\x1f\x8b", // a gzipped profile
		"/debug/pprof/cmdline":           "worker",
	} {
		resp, err := http.Get("http://" + w.addr + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
			t.Errorf("GET %s: %d, body without %q", path, resp.StatusCode, want)
		}
	}
	w.stop(t, syscall.SIGTERM)
}

// assertStopOrder checks that the shutdown log of command stopped every one of steps, in
// that order: the engine's pool closes after the engine has stopped, and before the main pool.
func assertStopOrder(t *testing.T, log, command string, steps ...string) {
	t.Helper()
	last := -1
	for _, step := range steps {
		i := strings.Index(log, fmt.Sprintf(`msg="%s: stopped" step=%s `, command, step))
		if i < 0 {
			t.Errorf("the shutdown log does not show step %s stopped:\n%s", step, log)
			return
		}
		if i < last {
			t.Errorf("step %s stopped before the step stopped ahead of it in %v:\n%s", step, steps, log)
		}
		last = i
	}
}

// TestServeWithoutWorkers runs `tasker serve` with TASKER_WORKERS=0: it starts no engine,
// serves the API (a task created through it waits, ready, in Query.steps), stops cleanly
// without a workers step, and a second process with workers then runs the task it created.
func TestServeWithoutWorkers(t *testing.T) {
	t.Parallel()
	bin := buildTasker(t)
	url := dbtest.NewURL(t)
	api := startServeWithEnv(t, bin, "DATABASE_URL="+url, "TASKER_AUTH=off", "TASKER_WORKERS=0")
	api.waitHealthy(t)
	if log := api.log.String(); !strings.Contains(log, "serve: no workers") || strings.Contains(log, "orchestration: engine started") {
		t.Fatalf("an API-only serve logged:\n%s", log)
	}

	var created struct {
		CreateTask struct{ ID string } `json:"createTask"`
	}
	gql(t, api.addr, `mutation { createTask(input: {namespace: "examples", name: "linear_workflow"}) { id } }`, &created)
	var ready struct {
		Steps struct {
			Nodes []struct {
				Name      string
				Status    string
				InProcess bool
				Task      struct{ ID string }
			}
		}
	}
	gql(t, api.addr, `{ steps(filter: {ready: true}) { nodes { name status inProcess task { id } } } }`, &ready)
	if n := ready.Steps.Nodes; len(n) != 1 || n[0].Name != "initialize_data" || n[0].Status != "PENDING" ||
		n[0].InProcess || n[0].Task.ID != created.CreateTask.ID {
		t.Fatalf("ready steps after createTask on an API-only server: %+v", n)
	}

	workers := startServeWithEnv(t, bin, "DATABASE_URL="+url, "TASKER_AUTH=off", "TASKER_WORKERS=2")
	workers.waitHealthy(t)
	var task struct {
		Task struct{ Status string }
	}
	if !wait.Eventually(30*time.Second, func() bool {
		gql(t, api.addr, `{ task(id: "`+created.CreateTask.ID+`") { status } }`, &task)
		return task.Task.Status == "COMPLETE"
	}) {
		t.Fatalf("the task was not run by the process with workers: status %s\n%s", task.Task.Status, workers.log.String())
	}

	api.stop(t, syscall.SIGTERM)
	if log := api.log.String(); strings.Contains(log, `step=workers`) || !strings.Contains(log, `msg="serve: stopped" step=http`) {
		t.Errorf("API-only shutdown log:\n%s", log)
	}
}

// TestNewcomerPath drives the real binary the way the README tells a newcomer to: `tasker
// serve` with no DATABASE_URL (its private cluster, in a temporary data folder), then, as from
// another shell, `tasker run-task`, `tasker status` and `tasker token create`, which find the
// server's database by themselves; the task completes (GraphQL); after the server stops,
// `tasker run-task` and `tasker status` say clearly that no server is running.
func TestNewcomerPath(t *testing.T) {
	t.Parallel()
	bin := buildTasker(t)
	dataDir := clusterDataDir(t)
	s := startServeWithEnv(t, bin, "TASKER_DATA_DIR="+dataDir)
	s.waitHealthy(t)

	// run-task beside the server, with no database given.
	out, stderr, code := runCLI(t, bin, dataDir, "run-task", "-template", "examples/linear_workflow", "-context", `{"batch_size": 2}`)
	if code != 0 {
		t.Fatalf("run-task exited %d: %s", code, stderr)
	}
	taskID := strings.TrimSpace(out)

	// status says where everything is, and that it answers.
	out, stderr, code = runCLI(t, bin, dataDir, "status")
	if code != 0 {
		t.Fatalf("status exited %d:\n%s%s", code, out, stderr)
	}
	t.Logf("tasker status:\n%s", out)
	for _, want := range []string{dataDir, "http://" + s.addr + " (pid " + fmt.Sprint(s.cmd.Process.Pid), "postgres://postgres@127.0.0.1:",
		fmt.Sprintf("postgres pid %d", s.postgresPID), "answering"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "NOT ANSWERING") {
		t.Errorf("status reports a failure:\n%s", out)
	}

	// The workers run the task to complete; the playground's API shows it.
	query := fmt.Sprintf(`{ task(id: "%s") { status complete } }`, taskID)
	var last []byte
	if !wait.Eventually(30*time.Second, func() bool {
		_, last = postQuery(t, s.addr, query)
		return strings.Contains(string(last), `"status":"COMPLETE","complete":true`)
	}) {
		t.Fatalf("task %s did not complete within 30s: %s", taskID, last)
	}
	if out, _, _ = runCLI(t, bin, dataDir, "status"); !strings.Contains(out, "1 (1 complete)") {
		t.Errorf("status does not count the completed task:\n%s", out)
	}

	// Open mode has no rate limit: a burst far above the default (50/s, burst 100) is served.
	for i := range 250 {
		if _, resp := postQuery(t, s.addr, `{ namespaces { name } }`); strings.Contains(string(resp), "RATE_LIMITED") {
			t.Fatalf("request %d of a burst refused in open mode: %s", i, resp)
		}
	}

	// token create works beside the server.
	out, stderr, code = runCLI(t, bin, dataDir, "token", "create", "-role", "reader", "-name", "newcomer")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || !strings.HasPrefix(lines[len(lines)-1], auth.TokenPrefix) {
		t.Fatalf("token create exited %d: %s%s", code, out, stderr)
	}

	// A wrong template name lists the templates that exist.
	_, stderr, code = runCLI(t, bin, dataDir, "run-task", "-template", "examples/nope")
	if code != 1 || !strings.Contains(stderr, "examples/linear_workflow") || !strings.Contains(stderr, "examples/nope") {
		t.Errorf("unknown template: exit %d, %q; want 1 and the templates listed", code, stderr)
	}

	// Stopped: the record is gone and the commands say no server is running.
	s.stop(t, syscall.SIGTERM)
	if _, err := os.Stat(runstate.Path(dataDir)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the server record outlived the server: %v", err)
	}
	_, stderr, code = runCLI(t, bin, dataDir, "run-task", "-template", "examples/linear_workflow")
	if want := "no tasker server is running with data folder " + dataDir + ": start one with `make run`"; code != 1 || !strings.Contains(stderr, want) {
		t.Errorf("run-task with no server: exit %d, %q; want 1 and %q", code, stderr, want)
	}
	if out, _, code = runCLI(t, bin, dataDir, "status"); code != 1 || !strings.Contains(out, "not running") {
		t.Errorf("status with no server: exit %d, %q; want 1 and not running", code, out)
	}
}
