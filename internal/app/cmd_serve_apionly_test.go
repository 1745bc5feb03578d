package app

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/taskerhq/tasker/internal/testkit/dbtest"
)

// gql posts a GraphQL query to a running server and decodes its data into out, failing on
// any error.
func gql(t *testing.T, addr, query string, out any) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"query": query})
	resp, err := http.Post("http://"+addr+"/query", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	var r struct {
		Data   json.RawMessage `json:"data"`
		Errors []any           `json:"errors"`
	}
	if err := json.Unmarshal(raw, &r); err != nil || len(r.Errors) > 0 {
		t.Fatalf("%s answered %s (%v)", query, raw, err)
	}
	if err := json.Unmarshal(r.Data, out); err != nil {
		t.Fatal(err)
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
	if !eventually(30*time.Second, func() bool {
		gql(t, api.addr, `{ task(id: "`+created.CreateTask.ID+`") { status } }`, &task)
		return task.Task.Status == "COMPLETE"
	}) {
		t.Fatalf("the task was not run by the process with workers: status %s\n%s", task.Task.Status, workers.log.String())
	}

	if err := api.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := api.wait(t); code != 0 {
		t.Fatalf("API-only serve exited %d after SIGTERM, want 0", code)
	}
	if log := api.log.String(); strings.Contains(log, `step=workers`) || !strings.Contains(log, `msg="serve: stopped" step=http`) {
		t.Errorf("API-only shutdown log:\n%s", log)
	}
}
