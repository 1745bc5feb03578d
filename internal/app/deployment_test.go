package app

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"

	"github.com/taskerhq/tasker/graph/server"
	"github.com/taskerhq/tasker/internal/testkit/dbtest"
	"github.com/taskerhq/tasker/internal/testkit/replicatest"
)

// deployResponse is a GraphQL response with the extensions the deployment test reads.
type deployResponse struct {
	Data       json.RawMessage `json:"data"`
	Errors     []any           `json:"errors"`
	Extensions struct {
		ReadAfter  string `json:"readAfter"`
		QueryStats struct {
			ServedBy      string `json:"servedBy"`
			SQLStatements int64  `json:"sqlStatements"`
		} `json:"queryStats"`
	} `json:"extensions"`
}

// postAs posts query to the server at addr with token and, when set, a readAfter token.
func postAs(t *testing.T, addr, token, readAfter, query string) deployResponse {
	t.Helper()
	resp, raw := postQuery(t, addr, query, "Authorization", "Bearer "+token, server.ReadAfterHeader, readAfter)
	var out deployResponse
	if err := json.Unmarshal(raw, &out); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /query %s: %d %s", query, resp.StatusCode, raw)
	}
	return out
}

// TestManyProcessesShareOneDatabase is the deployment of README's "Many machines": two
// `tasker serve` processes (as behind a load balancer) reading from a streaming replica, and
// two `tasker worker` processes, all on one primary. Tasks created through one server are run
// by all four processes' workers; a subscription on the other server sees every task
// complete; no step runs more often than its template says; and a client that wrote through
// one server reads its write through the other by sending the readAfter token, even while the
// replica lags.
func TestManyProcessesShareOneDatabase(t *testing.T) {
	t.Parallel()
	bin := buildTasker(t)
	pair := replicatest.Start(t, "tasker")
	primary, standby := pair.Primary.URL(), pair.StandbyURL()
	out, err := runInProcess(t, runToken, primary, "create", "-role", "operator") // migrates the primary first
	if err != nil {
		t.Fatal(err)
	}
	token := strings.TrimSpace(out[strings.LastIndex(strings.TrimSpace(out), "\n")+1:])
	pair.WaitReplayed()

	var servers []*serveProcess
	for range 2 {
		s := startProcess(t, bin, "serve", []string{"-database-url", primary, "-database-replica-urls", standby,
			"-data-dir", t.TempDir()}, []string{"TASKER_WORKERS=4", "TASKER_QUERY_STATS=1"})
		s.waitHealthy(t)
		servers = append(servers, s)
	}
	for range 2 {
		startProcess(t, bin, "worker", []string{"-metrics-listen", "127.0.0.1:0"},
			[]string{"DATABASE_URL=" + primary, "TASKER_WORKERS=4"})
	}
	a, b := servers[0].addr, servers[1].addr

	// A subscription on server b.
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, "ws://"+b+"/query", &websocket.DialOptions{Subprotocols: []string{"graphql-transport-ws"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	type msg struct {
		ID, Type string
		Payload  json.RawMessage
	}
	send := func(v any) {
		t.Helper()
		if err := wsjson.Write(ctx, conn, v); err != nil {
			t.Fatal(err)
		}
	}
	send(map[string]any{"type": "connection_init", "payload": map[string]any{"Authorization": "Bearer " + token}})
	var ack msg
	if err := wsjson.Read(ctx, conn, &ack); err != nil || ack.Type != "connection_ack" {
		t.Fatalf("connection_init: %+v %v", ack, err)
	}
	send(map[string]any{"id": "s", "type": "subscribe", "payload": map[string]any{
		"query": `subscription { taskTransitions(namespace: "examples", afterTransitionId: "0") { taskId toState } }`}})

	// Tasks created through server a.
	pair.ResetStatements()
	const tasks = 8
	created := map[string]bool{}
	for range tasks {
		r := postAs(t, a, token, "", `mutation { createTask(input: {namespace: "examples", name: "linear_workflow"}) { id } }`)
		var d struct{ CreateTask struct{ ID string } }
		if err := json.Unmarshal(r.Data, &d); err != nil || d.CreateTask.ID == "" {
			t.Fatalf("createTask: %s %v", r.Data, r.Errors)
		}
		created[d.CreateTask.ID] = true
	}
	completed := map[string]bool{}
	for len(completed) < tasks {
		var m msg
		if err := wsjson.Read(ctx, conn, &m); err != nil {
			t.Fatalf("subscription on the other server, %d of %d tasks seen complete: %v", len(completed), tasks, err)
		}
		if m.Type != "next" {
			continue
		}
		var p struct {
			Data struct {
				TaskTransitions struct{ TaskID, ToState string }
			}
		}
		if err := json.Unmarshal(m.Payload, &p); err != nil {
			t.Fatal(err)
		}
		if tr := p.Data.TaskTransitions; tr.ToState == "COMPLETE" && created[tr.TaskID] {
			completed[tr.TaskID] = true
		}
	}

	t.Logf("%d tasks created and run: %d statements on the primary, %d on the standby",
		tasks, pair.Statements(pair.Primary), pair.Statements(pair.Standby))

	// Every step ran as often as its template says (process_data fails once), never more.
	db := dbtest.Open(t, primary)
	var rows []struct {
		Name           string
		Attempts       int
		Starts         int
		CompleteStates int
	}
	if err := db.Raw(`
		SELECT ns.name, ws.attempts,
		       count(*) FILTER (WHERE tr.to_state = 'in_progress') AS starts,
		       count(*) FILTER (WHERE tr.to_state = 'complete') AS complete_states
		FROM tasker_workflow_steps ws
		JOIN tasker_named_steps ns USING (named_step_id)
		JOIN tasker_workflow_step_transitions tr USING (workflow_step_id)
		GROUP BY ws.workflow_step_id, ns.name, ws.attempts`).Scan(&rows).Error; err != nil {
		t.Fatal(err)
	}
	if len(rows) != tasks*6 {
		t.Fatalf("%d steps, want %d", len(rows), tasks*6)
	}
	for _, r := range rows {
		want := 1
		if r.Name == "process_data" {
			want = 2
		}
		if r.Starts != want || r.Attempts != want || r.CompleteStates != 1 {
			t.Errorf("step %s: started %d times, attempts %d, completed %d times; want %d, %d, 1", r.Name, r.Starts, r.Attempts, r.CompleteStates, want, want)
		}
	}
	var workers int
	db.Raw(`SELECT count(DISTINCT metadata->>'worker_id') FROM tasker_workflow_step_transitions WHERE to_state = 'in_progress'`).Scan(&workers)
	t.Logf("%d tasks, %d steps, run by %d distinct workers of 4 processes", tasks, len(rows), workers)

	// Reads on both servers come from the replica once it has replayed.
	pair.WaitReplayed()
	taskQuery := func(id string) string { return fmt.Sprintf(`{ task(id: "%s") { id status } }`, id) }
	pair.ResetStatements()
	const detail = `{ tasks(first: 10) { nodes { id status steps { name status readiness { readyForExecution } } } } }`
	var statements int64
	for _, s := range []string{a, b, a, b} {
		r := postAs(t, s, token, "", detail)
		if r.Extensions.QueryStats.ServedBy != "replica" || len(r.Errors) > 0 {
			t.Fatalf("a query on server %s: servedBy %q, errors %v; want the replica", s, r.Extensions.QueryStats.ServedBy, r.Errors)
		}
		statements += r.Extensions.QueryStats.SQLStatements
	}
	t.Logf("4 task-list queries (10 tasks with their steps and readiness) ran %d statements, all on the standby "+
		"(which ran %d with the servers' probes); meanwhile the primary ran %d for four idle processes",
		statements, pair.Statements(pair.Standby), pair.Statements(pair.Primary))

	// Each server counts what it routed where, and its replica's state, on /metrics.
	replicaName := fmt.Sprintf("127.0.0.1:%d/tasker", pair.Standby.Port())
	code, metrics := get(t, "http://"+b+"/metrics", "")
	for _, want := range []string{`tasker_replica_up{replica="` + replicaName + `"} 1`,
		`tasker_db_routed_statements_total{replica="` + replicaName + `",server="replica"}`,
		`tasker_db_routed_statements_total{replica="",server="primary"}`, `tasker_replica_lag_seconds{replica="` + replicaName + `"}`} {
		if code != http.StatusOK || !strings.Contains(metrics, want) {
			t.Errorf("/metrics (%d) lacks %s", code, want)
		}
	}

	// A write through a, read through b with its token while the replica lags: b asks the
	// primary and sees it; without the token, b's replica does not have it yet.
	pair.Exec(pair.AdminURL(pair.Standby), "SELECT pg_wal_replay_pause()")
	r := postAs(t, a, token, "", `mutation { createTask(input: {namespace: "examples", name: "linear_workflow"}) { id } }`)
	var d struct{ CreateTask struct{ ID string } }
	if err := json.Unmarshal(r.Data, &d); err != nil || r.Extensions.ReadAfter == "" {
		t.Fatalf("createTask on a: %s, readAfter %q", r.Data, r.Extensions.ReadAfter)
	}
	if got := postAs(t, b, token, r.Extensions.ReadAfter, taskQuery(d.CreateTask.ID)); len(got.Errors) > 0 ||
		got.Extensions.QueryStats.ServedBy != "primary" {
		t.Fatalf("b with a's token: servedBy %q, errors %v; want the primary and the task", got.Extensions.QueryStats.ServedBy, got.Errors)
	}
	if got := postAs(t, b, token, "", taskQuery(d.CreateTask.ID)); len(got.Errors) == 0 ||
		got.Extensions.QueryStats.ServedBy != "replica" {
		t.Fatalf("b without the token while replay is paused: servedBy %q, data %s; want the replica, without the task",
			got.Extensions.QueryStats.ServedBy, got.Data)
	}
	pair.Exec(pair.AdminURL(pair.Standby), "SELECT pg_wal_replay_resume()")

	for _, s := range servers {
		s.stop(t, syscall.SIGTERM)
	}
}
