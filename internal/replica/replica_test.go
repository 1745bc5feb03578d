package replica_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"gorm.io/gorm"

	"github.com/taskerhq/tasker/graph/server"
	"github.com/taskerhq/tasker/internal/database"
	"github.com/taskerhq/tasker/internal/handler"
	"github.com/taskerhq/tasker/internal/metrics"
	"github.com/taskerhq/tasker/internal/migrate"
	"github.com/taskerhq/tasker/internal/querystats"
	"github.com/taskerhq/tasker/internal/replica"
	"github.com/taskerhq/tasker/internal/template"
	"github.com/taskerhq/tasker/internal/testkit/logbuf"
	"github.com/taskerhq/tasker/internal/testkit/replicatest"
	"github.com/taskerhq/tasker/internal/testkit/wait"
)

// api is the GraphQL handler over a primary and its standby.
type api struct {
	t       *testing.T
	pair    *replicatest.Pair
	db      *gorm.DB
	router  *replica.Router
	srv     *httptest.Server
	metrics *metrics.Metrics
	logs    *logbuf.Buffer // the API's log lines
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
	logs := &logbuf.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	db, err := database.OpenWithReplicas(ctx, pair.Primary.URL(), []string{pair.StandbyURL()},
		database.Options{Tracer: querystats.Tracer{}, MaxOpenConns: 10}, replica.Options{ProbeInterval: 50 * time.Millisecond, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	reg, err := template.Shipped(handler.NewBuiltinRegistry())
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New(metrics.Options{})
	router := database.Router(db)
	m.Registry().MustRegister(router.Collector())
	mux := http.NewServeMux()
	server.New(server.Config{QueryStats: true}, server.Deps{DB: db, Log: log, Templates: reg, Metrics: m}).Mount(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
		_ = database.Close(db)
	})
	return &api{t: t, pair: pair, db: db, router: router, srv: srv, metrics: m, logs: logs}
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
	t.Run("AReplicaFailingMidResultCostsNoRequest", func(t *testing.T) { aReplicaFailingMidResultCostsNoRequest(t, a.with(t)) })
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
	// The router learns the replay from a probe: the background one (every 50 ms here), or the
	// one a read needing a later position makes when the last is older than its staleness. A
	// read right after the replay may still find a probe made a moment before it, and go to
	// the primary; within a few probes, the token's reads go to the replica.
	var servedBy string
	if !wait.Eventually(5*time.Second, func() bool {
		servedBy = a.must(taskQuery(id), token).Extensions.QueryStats.ServedBy
		return servedBy == "replica"
	}) {
		t.Fatalf("with the token after replay: servedBy %q for 5 s, want replica", servedBy)
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

	statements, reruns := a.router.RetriedStatements(), a.router.RetriedRequests()
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
	t.Logf("%d requests while the replica stopped, none failed; %d reads retried on the primary, %d requests ran again there",
		requests.Load(), a.router.RetriedStatements()-statements, a.router.RetriedRequests()-reruns)

	a.pair.RestartStandby()
	deadline := time.Now().Add(15 * time.Second)
	for a.must(taskQuery(id), "").Extensions.QueryStats.ServedBy != "replica" {
		if time.Now().After(deadline) {
			t.Fatal("reads did not return to the restarted replica within 15s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// aReplicaFailingMidResultCostsNoRequest ends the standby backend serving a query after the
// query's first row reached the router, while later rows are still to come: the request
// still succeeds, answered whole by the primary, and the router counts it as run again.
//
// Holding a standby query mid-result: the task list sends tasks newest first, with their
// context. The two newest tasks get a large compressible context, stored compressed in the
// row (reading it needs no TOAST), whose rows overflow the server's 8 kB send buffer: the
// first row is sent while the second is written. The third gets an incompressible one, stored
// in the table's TOAST relation. On the primary a transaction that REINDEXes the TOAST index
// holds an ACCESS EXCLUSIVE lock on it; the standby replays that lock, so the standby backend
// that reaches the third row waits for it, mid-result. pg_terminate_backend then ends it.
func aReplicaFailingMidResultCostsNoRequest(t *testing.T, a *api) {
	older, _ := a.createTask()
	newer1, _ := a.createTask()
	newer2, _ := a.createTask()
	ctx := context.Background()
	primary := a.pair.Connect(a.pair.Primary.URL())
	standby := a.pair.Connect(a.pair.StandbyURL())
	for _, id := range []string{newer1, newer2} {
		if _, err := primary.Exec(ctx, `UPDATE tasker_tasks SET context = jsonb_build_object('filler', repeat('a', 100000)) WHERE task_id = $1`, id); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := primary.Exec(ctx, `UPDATE tasker_tasks SET context = jsonb_build_object('filler',
		(SELECT string_agg(md5(i::text), '') FROM generate_series(1, 1000) i)) WHERE task_id = $1`, older); err != nil {
		t.Fatal(err)
	}
	var toastIndex string
	var toastIndexOID uint32
	if err := primary.QueryRow(ctx, `SELECT i.indexrelid::regclass::text, i.indexrelid FROM pg_class c
		JOIN pg_index i ON i.indrelid = c.reltoastrelid WHERE c.oid = 'tasker_tasks'::regclass`).Scan(&toastIndex, &toastIndexOID); err != nil {
		t.Fatal(err)
	}
	lock, err := primary.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	locked := true
	unlock := func() {
		if locked {
			locked = false
			if err := lock.Rollback(ctx); err != nil {
				t.Error(err)
			}
		}
	}
	defer unlock()
	if _, err := lock.Exec(ctx, "REINDEX INDEX "+toastIndex); err != nil {
		t.Fatal(err)
	}
	// A commit flushes the WAL up to its record, past the lock's; the standby receives only
	// flushed WAL.
	a.pair.Exec(a.pair.AdminURL(a.pair.Primary), "SELECT txid_current()")
	wait.Until(t, 15*time.Second, "the standby to replay the lock on the TOAST index", func() bool {
		var n int
		if err := standby.QueryRow(ctx, `SELECT count(*) FROM pg_locks WHERE relation = $1 AND mode = 'AccessExclusiveLock' AND granted`,
			toastIndexOID).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 1
	}) // and so the contexts written before it

	retried := a.router.RetriedRequests()
	served := a.router.Replicas()[0].Statements()
	tasksQuery := map[string]string{"type": "query", "field": "tasks"}
	ok := a.metric("tasker_graphql_requests_total", with(tasksQuery, "outcome", "ok"))
	failed := a.metric("tasker_graphql_requests_total", with(tasksQuery, "outcome", "error"))
	logged := len(a.logs.String())
	type result struct {
		r   response
		err error
	}
	done := make(chan result, 1)
	go func() {
		r, err := a.do(`{ tasks(first: 3) { nodes { id } } }`, "")
		done <- result{r, err}
	}()
	var pid int
	wait.Until(t, 15*time.Second, "the standby query to wait for the lock after its first row", func() bool {
		err := standby.QueryRow(ctx, `SELECT pid FROM pg_stat_activity WHERE datname = current_database()
			AND backend_type = 'client backend' AND wait_event_type = 'Lock' AND query LIKE '%tasker_tasks%'`).Scan(&pid)
		if errors.Is(err, pgx.ErrNoRows) {
			return false
		}
		if err != nil {
			t.Fatal(err)
		}
		// Served: the router's QueryContext returned, which it does once the first row arrived.
		return a.router.Replicas()[0].Statements() > served
	})
	var terminated bool
	if err := standby.QueryRow(ctx, "SELECT pg_terminate_backend($1)", pid).Scan(&terminated); err != nil || !terminated {
		t.Fatalf("pg_terminate_backend(%d): %v, %v", pid, terminated, err)
	}
	// The query runs again on the primary, where it waits for the same lock: release it.
	unlock()

	var res result
	select {
	case res = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("no response within 30s of the standby backend's end")
	}
	if res.err != nil {
		t.Fatalf("the request failed as its replica backend ended mid-result: %v", res.err)
	}
	var d struct {
		Tasks struct{ Nodes []struct{ ID string } }
	}
	if err := json.Unmarshal(res.r.Data, &d); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, n := range d.Tasks.Nodes {
		ids = append(ids, n.ID)
	}
	if want := []string{newer2, newer1, older}; fmt.Sprint(ids) != fmt.Sprint(want) {
		t.Fatalf("tasks %v, want %v", ids, want)
	}
	if by := res.r.Extensions.QueryStats.ServedBy; by != "primary" {
		t.Fatalf("servedBy %q after running again on the primary, want primary", by)
	}
	if got := a.router.RetriedRequests() - retried; got != 1 {
		t.Fatalf("the router counted %d requests run again on the primary, want 1", got)
	}
	if got, want := a.metric("tasker_replica_reads_retried_total", map[string]string{"scope": "request"}), float64(a.router.RetriedRequests()); got != want {
		t.Fatalf("tasker_replica_reads_retried_total{scope=\"request\"} is %v, want %v", got, want)
	}
	// The request counts once, as answered.
	if got := a.metric("tasker_graphql_requests_total", with(tasksQuery, "outcome", "ok")) - ok; got != 1 {
		t.Fatalf("tasker_graphql_requests_total{outcome=\"ok\"} moved by %v, want 1", got)
	}
	if got := a.metric("tasker_graphql_requests_total", with(tasksQuery, "outcome", "error")) - failed; got != 0 {
		t.Fatalf("tasker_graphql_requests_total{outcome=\"error\"} moved by %v, want 0", got)
	}
	// The replica's error is logged as one that ran again, not as an internal error.
	logs := a.logs.String()[logged:]
	if strings.Contains(logs, "level=ERROR") || !strings.Contains(logs, "runs again on the primary") {
		t.Fatalf("the API logged:\n%s\nwant a warning that the query runs again and no error", logs)
	}
	// The replica itself is fine (only one of its backends ended): reads go back to it, once a
	// probe has found it answering (a terminated backend takes it out until then).
	wait.Until(t, 15*time.Second, "reads to go back to the replica", func() bool {
		return a.must(`{ tasks(first: 3) { nodes { id } } }`, "").Extensions.QueryStats.ServedBy == "replica"
	})
}

// with is labels and name=value.
func with(labels map[string]string, name, value string) map[string]string {
	out := map[string]string{name: value}
	for k, v := range labels {
		out[k] = v
	}
	return out
}

// metric is the value of the counter name{labels} in the API's metrics, 0 when it has not
// been counted yet.
func (a *api) metric(name string, labels map[string]string) float64 {
	a.t.Helper()
	families, err := a.metrics.Registry().Gather()
	if err != nil {
		a.t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	metrics:
		for _, m := range f.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if got[k] != v {
					continue metrics
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}
