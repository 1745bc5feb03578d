package app

import (
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/taskerhq/tasker/internal/testkit/dbtest"
	"github.com/taskerhq/tasker/internal/testkit/wait"
)

// TestWorkerServesMetricsAndHealth runs `tasker worker -metrics-listen` against a test
// database: it serves /healthz, /readyz and /metrics with the step metric families, and exits 0
// on SIGTERM.
func TestWorkerServesMetricsAndHealth(t *testing.T) {
	t.Parallel()
	bin := buildTasker(t)
	url := dbtest.NewURL(t)
	w := startProcess(t, bin, "worker", []string{"-metrics-listen", "127.0.0.1:0"}, []string{"DATABASE_URL=" + url})
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
	w.stop(t, syscall.SIGTERM)
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
