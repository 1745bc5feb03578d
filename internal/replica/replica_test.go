package replica_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/taskerhq/tasker/graph/server"
	"github.com/taskerhq/tasker/internal/database"
	"github.com/taskerhq/tasker/internal/handler"
	"github.com/taskerhq/tasker/internal/migrate"
	"github.com/taskerhq/tasker/internal/querystats"
	"github.com/taskerhq/tasker/internal/replica"
	"github.com/taskerhq/tasker/internal/template"
	"github.com/taskerhq/tasker/internal/testkit/replicatest"
)

// api is the GraphQL handler over a primary and its standby.
type api struct {
	t      *testing.T
	pair   *replicatest.Pair
	db     *gorm.DB
	router *replica.Router
	srv    *httptest.Server
}

func newAPI(t *testing.T) *api {
	t.Helper()
	pair := replicatest.Start(t, "tasker")
	ctx := context.Background()
	mig, err := database.Open(ctx, pair.Primary.URL(), database.Options{MaxOpenConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := migrate.Up(ctx, database.SQL(mig)); err != nil {
		t.Fatal(err)
	}
	if err := database.Close(mig); err != nil {
		t.Fatal(err)
	}
	pair.WaitReplayed()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	db, err := database.OpenWithReplicas(ctx, pair.Primary.URL(), []string{pair.StandbyURL()},
		database.Options{Tracer: querystats.Tracer{}, MaxOpenConns: 10}, replica.Options{ProbeInterval: 50 * time.Millisecond, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	reg, err := template.Shipped(handler.NewBuiltinRegistry())
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	server.New(server.Config{QueryStats: true}, server.Deps{DB: db, Log: log, Templates: reg}).Mount(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
		_ = database.Close(db)
	})
	return &api{t: t, pair: pair, db: db, router: database.Router(db), srv: srv}
}

type response struct {
	Data       json.RawMessage            `json:"data"`
	Errors     []struct{ Message string } `json:"errors"`
	Extensions struct {
		ReadAfter  string `json:"readAfter"`
		QueryStats struct {
			SQLStatements int64    `json:"sqlStatements"`
			ServedBy      string   `json:"servedBy"`
			ReplicaLagMs  *float64 `json:"replicaLagMs"`
		} `json:"queryStats"`
	} `json:"extensions"`
}

// do posts a request, with the readAfter token when given, and returns its response; a
// transport failure or a GraphQL error is returned as an error.
func (a *api) do(query, readAfter string) (response, error) {
	body, _ := json.Marshal(map[string]any{"query": query})
	req, err := http.NewRequest(http.MethodPost, a.srv.URL+"/query", bytes.NewReader(body))
	if err != nil {
		return response{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	if readAfter != "" {
		req.Header.Set(server.ReadAfterHeader, readAfter)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	var r response
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return r, err
	}
	if len(r.Errors) > 0 {
		return r, fmt.Errorf("%s: %v", query, r.Errors)
	}
	return r, nil
}

func (a *api) must(query, readAfter string) response {
	a.t.Helper()
	r, err := a.do(query, readAfter)
	if err != nil {
		a.t.Fatal(err)
	}
	return r
}

// createTask creates a task through the API and returns its id and the readAfter token.
func (a *api) createTask() (string, string) {
	a.t.Helper()
	r := a.must(`mutation { createTask(input: {namespace: "examples", name: "linear_workflow"}) { id } }`, "")
	var d struct{ CreateTask struct{ ID string } }
	if err := json.Unmarshal(r.Data, &d); err != nil {
		a.t.Fatal(err)
	}
	if r.Extensions.QueryStats.ServedBy != "primary" || r.Extensions.ReadAfter == "" {
		a.t.Fatalf("a mutation: servedBy %q, readAfter %q; want primary and a token", r.Extensions.QueryStats.ServedBy, r.Extensions.ReadAfter)
	}
	return d.CreateTask.ID, r.Extensions.ReadAfter
}

const readQuery = `{ tasks(first: 5) { nodes { id status steps { name status readiness { readyForExecution } } } } namespaces { name } }`

func taskQuery(id string) string { return `{ task(id: "` + id + `") { id status steps { name } } }` }

// TestReplicas runs the API over a primary and a real streaming standby; its parts share that
// pair (starting one takes seconds) and run in order.
func TestReplicas(t *testing.T) {
	a := newAPI(t)
	t.Run("QueriesReadFromTheReplicaOnly", func(t *testing.T) { queriesReadFromTheReplicaOnly(t, a.with(t)) })
	t.Run("AWriterReadsItsWriteWhileTheReplicaLags", func(t *testing.T) { aWriterReadsItsWriteWhileTheReplicaLags(t, a.with(t)) })
	t.Run("AStoppedReplicaCostsNoRequest", func(t *testing.T) { aStoppedReplicaCostsNoRequest(t, a.with(t)) })
}

// with is a for subtest t.
func (a *api) with(t *testing.T) *api {
	b := *a
	b.t = t
	return &b
}

// queriesReadFromTheReplicaOnly sends read-only GraphQL traffic and counts the statements each
// server ran (pg_stat_statements on both): none on the primary.
func queriesReadFromTheReplicaOnly(t *testing.T, a *api) {
	a.createTask()
	a.pair.WaitReplayed()
	time.Sleep(100 * time.Millisecond) // the router's probe sees the replay
	a.pair.ResetStatements()
	primaryBefore := a.router.PrimaryStatements()
	replicaBefore := a.router.Replicas()[0].Statements()
	const n = 20
	var want int64
	for range n {
		r := a.must(readQuery, "")
		if r.Extensions.QueryStats.ServedBy != "replica" || r.Extensions.QueryStats.ReplicaLagMs == nil {
			t.Fatalf("servedBy %q, replicaLagMs %v; want replica and a lag", r.Extensions.QueryStats.ServedBy, r.Extensions.QueryStats.ReplicaLagMs)
		}
		want += r.Extensions.QueryStats.SQLStatements
	}
	if got := a.pair.Statements(a.pair.Primary); got != 0 {
		t.Errorf("the primary ran %d statements for %d read-only requests, want 0", got, n)
	}
	if got := a.router.PrimaryStatements() - primaryBefore; got != 0 {
		t.Errorf("the router sent %d statements to the primary, want 0", got)
	}
	// The standby also ran the router's probes; the requests' own statements are all there.
	if got := a.pair.Statements(a.pair.Standby); got < want {
		t.Errorf("the standby ran %d statements, want at least the %d the responses counted", got, want)
	}
	if got := a.router.Replicas()[0].Statements() - replicaBefore; got != want {
		t.Errorf("the router sent %d statements to the replica, the responses counted %d", got, want)
	}
	t.Logf("%d read-only requests: %d statements on the standby (responses counted %d), 0 on the primary", n, a.pair.Statements(a.pair.Standby), want)
}

// aWriterReadsItsWriteWhileTheReplicaLags pauses the standby's replay: a read carrying the
// token of a write goes to the primary and sees the write, a read without it is served by the
// replica, which does not have it yet; once replay resumes, the token's reads go to the replica.
func aWriterReadsItsWriteWhileTheReplicaLags(t *testing.T, a *api) {
	a.pair.Exec(a.pair.AdminURL(a.pair.Standby), "SELECT pg_wal_replay_pause()")
	resumed := false
	defer func() { // also when an assertion fails, so that the next part finds the replica replaying
		if !resumed {
			a.pair.Exec(a.pair.AdminURL(a.pair.Standby), "SELECT pg_wal_replay_resume()")
		}
	}()
	id, token := a.createTask()

	r := a.must(taskQuery(id), token)
	if r.Extensions.QueryStats.ServedBy != "primary" || string(r.Data) == `{"task":null}` {
		t.Fatalf("with the token while replay is paused: servedBy %q, data %s; want the primary and the task", r.Extensions.QueryStats.ServedBy, r.Data)
	}
	r, err := a.do(taskQuery(id), "")
	if r.Extensions.QueryStats.ServedBy != "replica" || err == nil {
		t.Fatalf("without the token: servedBy %q, err %v; want the replica, which does not have the task yet", r.Extensions.QueryStats.ServedBy, err)
	}

	a.pair.Exec(a.pair.AdminURL(a.pair.Standby), "SELECT pg_wal_replay_resume()")
	resumed = true
	a.pair.WaitReplayed()
	r = a.must(taskQuery(id), token)
	if r.Extensions.QueryStats.ServedBy != "replica" {
		t.Fatalf("with the token after replay: servedBy %q, want replica", r.Extensions.QueryStats.ServedBy)
	}

	// Write, then read in the next request with the token, many times: always seen.
	for i := range 20 {
		id, token := a.createTask()
		if _, err := a.do(taskQuery(id), token); err != nil {
			t.Fatalf("round %d: the write's own read failed: %v", i, err)
		}
	}
}

// aStoppedReplicaCostsNoRequest stops the standby while clients read: every request
// succeeds (served by the primary once the replica is gone), and reads return to the replica
// when it answers again.
func aStoppedReplicaCostsNoRequest(t *testing.T, a *api) {
	id, _ := a.createTask()
	a.pair.WaitReplayed()
	time.Sleep(100 * time.Millisecond)

	var requests, failures atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var firstErr atomic.Value
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				requests.Add(1)
				if _, err := a.do(taskQuery(id), ""); err != nil {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				}
			}
		})
	}
	time.Sleep(300 * time.Millisecond)
	a.pair.StopStandby()
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	if failures.Load() != 0 {
		t.Fatalf("%d of %d requests failed while the replica stopped; first: %v", failures.Load(), requests.Load(), firstErr.Load())
	}
	if r := a.must(taskQuery(id), ""); r.Extensions.QueryStats.ServedBy != "primary" {
		t.Fatalf("with the replica stopped: servedBy %q, want primary", r.Extensions.QueryStats.ServedBy)
	}
	if a.router.Replicas()[0].Up() {
		t.Fatal("the stopped replica is still in service")
	}
	t.Logf("%d requests while the replica stopped, none failed", requests.Load())

	a.pair.RestartStandby()
	deadline := time.Now().Add(15 * time.Second)
	for a.must(taskQuery(id), "").Extensions.QueryStats.ServedBy != "replica" {
		if time.Now().After(deadline) {
			t.Fatal("reads did not return to the restarted replica within 15s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
