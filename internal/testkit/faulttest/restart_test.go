package faulttest

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"
	"gorm.io/gorm"

	"github.com/taskerhq/tasker/graph/server"
	"github.com/taskerhq/tasker/internal/database"
	"github.com/taskerhq/tasker/internal/events"
	"github.com/taskerhq/tasker/internal/handler"
	"github.com/taskerhq/tasker/internal/migrate"
	"github.com/taskerhq/tasker/internal/orchestration"
	"github.com/taskerhq/tasker/internal/pgembed"
	"github.com/taskerhq/tasker/internal/template"
	"github.com/taskerhq/tasker/internal/testkit/eventstest"
	"github.com/taskerhq/tasker/internal/testkit/logbuf"
	"github.com/taskerhq/tasker/internal/testkit/wait"
)

// dagYAML is a seven-step DAG of counted steps:
//
//	a ─┬─ b ── d ─┐
//	   ├─ c ──────┴─ e ─┐
//	   └─ f ────────────┴─ g
const dagYAML = `
namespace: faults
name: dag
version: 1.0.0
steps:
  - name: a
    handler: {kind: count}
  - name: b
    depends_on: a
    handler: {kind: count}
  - name: c
    depends_on: a
    handler: {kind: count}
  - name: d
    depends_on: b
    handler: {kind: count}
  - name: e
    depends_on: [c, d]
    handler: {kind: count}
  - name: f
    depends_on: a
    handler: {kind: count}
  - name: g
    depends_on: [e, f]
    handler: {kind: count}
`

const (
	tasks       = 100
	stepsOfTask = 7
	subscribers = 10
)

// TestRestartPostgresUnderLoad restarts the database twice while two engines (separate pools
// and listeners, like two processes) run 100 tasks and 10 websocket clients stream every step
// transition. Every task must complete without any (step, attempt) running twice, and every
// client must receive every step transition of the table exactly once, in order per step, on
// the subscription it opened first: the server-side stream keeps its place across restarts.
// (The clients would resubscribe the way a real one does, with the highest id received, if
// their subscription ended; they must not need to.)
func TestRestartPostgresUnderLoad(t *testing.T) {
	t.Parallel()
	logs := &logbuf.Buffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("service log (warnings and errors):\n%s", logs.String())
		}
	})
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	pg := startCluster(t, log)
	url := pg.c.URL()

	// The test's own pool, for set-up and checks.
	ctx := context.Background()
	db := migratedDB(t, url)
	calls, handlers := countingHandlers(t)
	reg := registerTemplate(t, db, handlers, "dag.yaml", dagYAML)

	// The API process: its own pool and listener, and 10 subscribed clients.
	apiHub := startHub(t, url, log)
	api := server.New(server.Config{}, server.Deps{DB: openDB(t, url), Hub: apiHub, Log: log, Templates: reg})
	mux := http.NewServeMux()
	api.Mount(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(func() { srv.CloseClientConnections(); srv.Close() })
	wsURL := "ws" + strings.TrimPrefix(srv.URL, "http") + "/query"
	subCtx, stopSubs := context.WithCancel(ctx)
	var subsDone sync.WaitGroup
	subs := make([]*subscriber, subscribers)
	for i := range subs {
		subs[i] = &subscriber{seen: map[int64]int{}}
		subsDone.Add(1)
		go func() { defer subsDone.Done(); subs[i].run(subCtx, wsURL) }()
	}
	t.Cleanup(func() { stopSubs(); subsDone.Wait() })

	ids := make([]int64, tasks)
	for i := range ids {
		task, _, err := orchestration.NewService(db, reg).CreateTask(ctx, orchestration.CreateTaskRequest{Namespace: "faults", Name: "dag"})
		if err != nil {
			t.Fatalf("creating task %d: %v", i, err)
		}
		ids[i] = task.TaskID
	}

	// Two engines. The lease is short so that a step whose outcome could not be recorded
	// while the database was down is recovered (as a new attempt) within the test.
	for _, id := range []string{"engine-one", "engine-two"} {
		startEngine(t, url, handlers, orchestration.Config{
			Workers: 4, PollInterval: 500 * time.Millisecond, WorkerID: id,
			LeaseDuration: 3 * time.Second, RecoveryInterval: 250 * time.Millisecond,
		}, log)
	}

	// Restart PostgreSQL twice while the steps run.
	for i, after := range []int{tasks * stepsOfTask / 6, tasks * stepsOfTask / 2} {
		if !wait.Eventually(40*time.Second, func() bool { return calls.total() >= after }) {
			t.Fatalf("only %d step invocations before restart %d, want %d", calls.total(), i+1, after)
		}
		began := time.Now()
		pg.restart(t, log)
		t.Logf("restart %d after %d invocations took %s", i+1, after, time.Since(began))
	}

	var lastErr error
	var complete int64
	if !wait.Eventually(60*time.Second, func() bool {
		lastErr = db.Raw(`SELECT count(*) FROM tasker_task_transitions
			WHERE most_recent AND to_state = 'complete'`).Row().Scan(&complete)
		return lastErr == nil && complete == tasks
	}) {
		t.Fatalf("%d of %d tasks complete (last error: %v)", complete, tasks, lastErr)
	}

	checkAttempts(t, db, calls)

	// Every client must catch up with the whole table.
	type row struct {
		ID             int64
		WorkflowStepID int64
	}
	var table []row
	if err := db.Raw(`SELECT id, workflow_step_id FROM tasker_workflow_step_transitions ORDER BY id`).
		Scan(&table).Error; err != nil {
		t.Fatal(err)
	}
	if !wait.Eventually(30*time.Second, func() bool {
		for _, s := range subs {
			if s.count() < len(table) {
				return false
			}
		}
		return true
	}) {
		for i, s := range subs {
			t.Logf("subscriber %d received %d of %d transitions", i, s.count(), len(table))
		}
	}
	stopSubs()
	subsDone.Wait()
	stepOf := make(map[int64]int64, len(table))
	for _, r := range table {
		stepOf[r.ID] = r.WorkflowStepID
	}
	for i, s := range subs {
		var missing, dup []int64
		for _, r := range table {
			switch n := s.seen[r.ID]; {
			case n == 0:
				missing = append(missing, r.ID)
			case n > 1:
				dup = append(dup, r.ID)
			}
		}
		if len(missing) > 0 || len(dup) > 0 || len(s.got) != len(table) {
			t.Errorf("subscriber %d: %d events for %d transitions; missing %v; duplicated %v",
				i, len(s.got), len(table), head(missing), head(dup))
		}
		last := map[int64]int64{}
		for _, d := range s.got {
			step, ok := stepOf[d.id]
			if !ok {
				t.Errorf("subscriber %d received transition %d, which is not in the table", i, d.id)
				continue
			}
			if step != d.stepID {
				t.Errorf("subscriber %d: transition %d of step %d arrived as step %d", i, d.id, step, d.stepID)
			}
			if d.id < last[step] {
				t.Errorf("subscriber %d: transition %d of step %d arrived after %d", i, d.id, step, last[step])
			}
			last[step] = max(last[step], d.id)
		}
		// The server keeps each stream's place across the restarts: the client never had to
		// resubscribe (its websocket, to the unaffected HTTP server, never dropped).
		if s.subscriptions != 1 || s.connections != 1 {
			t.Errorf("subscriber %d needed %d subscriptions over %d connections, want the first to last",
				i, s.subscriptions, s.connections)
		}
	}
}

// checkAttempts asserts that every step completed and that no (step, attempt) ran twice; an
// attempt cut short by the restart may have been recovered as a new attempt.
func checkAttempts(t *testing.T, db *gorm.DB, calls *counter) {
	t.Helper()
	var steps []struct {
		WorkflowStepID int64
		Attempts       int
		Processed      bool
		InProcess      bool
	}
	if err := db.Raw(`SELECT workflow_step_id, coalesce(attempts, 0) AS attempts, processed, in_process
		FROM tasker_workflow_steps`).Scan(&steps).Error; err != nil {
		t.Fatal(err)
	}
	if len(steps) != tasks*stepsOfTask {
		t.Fatalf("%d steps, want %d", len(steps), tasks*stepsOfTask)
	}
	calls.mu.Lock()
	defer calls.mu.Unlock()
	retried := 0
	for _, s := range steps {
		if !s.Processed || s.InProcess || s.Attempts < 1 {
			t.Errorf("step %d: processed %v, in_process %v, attempts %d", s.WorkflowStepID, s.Processed, s.InProcess, s.Attempts)
		}
		if s.Attempts > 1 {
			retried++
		}
		if n := calls.calls[[2]int64{s.WorkflowStepID, int64(s.Attempts)}]; n != 1 {
			t.Errorf("step %d: its final attempt %d ran %d times, want once", s.WorkflowStepID, s.Attempts, n)
		}
	}
	for k, n := range calls.calls {
		if n != 1 {
			t.Errorf("step %d attempt %d ran %d times", k[0], k[1], n)
		}
	}
	t.Logf("%d invocations for %d steps; %d steps needed more than one attempt", len(calls.calls), len(steps), retried)
}

// counter is the "count" handler kind: it records every (step, attempt) it runs.
type counter struct {
	mu    sync.Mutex
	calls map[[2]int64]int
	n     int
}

func newCounter() *counter { return &counter{calls: map[[2]int64]int{}} }

// countingHandlers returns the built-in handler kinds plus "count", and its counter.
func countingHandlers(t *testing.T) (*counter, *handler.Registry) {
	t.Helper()
	calls := newCounter()
	handlers := handler.NewBuiltinRegistry()
	if err := handlers.Register("count", calls.factory); err != nil {
		t.Fatal(err)
	}
	return calls, handlers
}

func (c *counter) factory(map[string]any) (handler.Handler, error) {
	return handler.HandlerFunc(func(ctx context.Context, in handler.Input) (handler.Output, error) {
		c.mu.Lock()
		c.calls[[2]int64{in.StepID, int64(in.Attempt)}]++
		c.n++
		c.mu.Unlock()
		select { // a little work, so that the restarts land while steps run
		case <-time.After(15 * time.Millisecond):
		case <-ctx.Done():
			return handler.Output{}, ctx.Err()
		}
		return handler.Output{Results: json.RawMessage(fmt.Sprintf(`{"step": %q}`, in.StepName))}, nil
	}), nil
}

func (c *counter) total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// cluster is a private PostgreSQL cluster that can be restarted on the same port and data.
type cluster struct {
	dir  string
	port int
	c    *pgembed.Cluster
}

func startCluster(t *testing.T, log *slog.Logger) *cluster {
	t.Helper()
	dir := t.TempDir()
	if os.Geteuid() == 0 { // PostgreSQL then runs as another user, who must traverse these
		for _, d := range []string{dir, filepath.Dir(dir)} {
			if err := os.Chmod(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	pg := &cluster{dir: filepath.Join(dir, "pg")}
	pg.start(t, log)
	t.Cleanup(func() {
		if pg.c != nil {
			_ = pg.c.Stop(context.Background())
		}
	})
	return pg
}

func (pg *cluster) start(t *testing.T, log *slog.Logger) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := startOn(ctx, pg, log)
	if err != nil {
		t.Fatalf("starting PostgreSQL: %v", err)
	}
	pg.c, pg.port = c, c.Port()
}

// startOn starts the cluster's server on its data directory and port (a free one the first
// time); it may run outside the test's goroutine.
func startOn(ctx context.Context, pg *cluster, log *slog.Logger) (*pgembed.Cluster, error) {
	return pgembed.Start(ctx, pgembed.Options{DataDir: pg.dir, Port: pg.port, Database: "tasker", Logger: log})
}

// restart stops the cluster with a fast shutdown (every connection is cut) and starts it
// again on the same port and data directory.
func (pg *cluster) restart(t *testing.T, log *slog.Logger) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := pg.c.Stop(ctx); err != nil {
		t.Fatalf("stopping PostgreSQL: %v", err)
	}
	pg.c = nil
	pg.start(t, log)
}

// registerTemplate registers the template yaml (file name) with handlers in db and returns
// the registry that holds it.
func registerTemplate(t *testing.T, db *gorm.DB, handlers *handler.Registry, name, yaml string) *template.Registry {
	t.Helper()
	reg := template.NewRegistry(handlers)
	tpl, err := template.Parse(name, []byte(yaml), handlers)
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.Add(tpl); err != nil {
		t.Fatal(err)
	}
	if err := reg.RegisterAll(context.Background(), db); err != nil {
		t.Fatalf("registering the template: %v", err)
	}
	return reg
}

// migratedDB opens a pool on url and migrates its database.
func migratedDB(t *testing.T, url string) *gorm.DB {
	t.Helper()
	db := openDB(t, url)
	if _, err := migrate.Up(context.Background(), database.SQL(db)); err != nil {
		t.Fatalf("migrating: %v", err)
	}
	return db
}

func openDB(t *testing.T, url string) *gorm.DB {
	t.Helper()
	db, err := database.Open(context.Background(), url, database.Options{MaxOpenConns: 8})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = database.Close(db) })
	return db
}

// startHub runs an events hub until cleanup and waits until it listens.
func startHub(t *testing.T, url string, log *slog.Logger) *events.Hub {
	t.Helper()
	return eventstest.Start(t, url, log)
}

// startEngine starts an engine with its own pool and hub, stopped at cleanup.
func startEngine(t *testing.T, url string, handlers *handler.Registry, cfg orchestration.Config, log *slog.Logger) {
	t.Helper()
	db := openDB(t, url)
	hub := startHub(t, url, log)
	eng, err := orchestration.New(orchestration.NewService(db, nil), hub, orchestration.NewConfiguredHandlers(handlers), cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := eng.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := eng.Stop(ctx); err != nil {
			t.Errorf("stopping %s: %v", cfg.WorkerID, err)
		}
	})
}

const stepSub = `subscription($after: ID) { stepTransitions(afterTransitionId: $after) { id stepId } }`

// delivered is one transition event a subscriber received.
type delivered struct{ id, stepID int64 }

// subscriber is a websocket client of stepTransitions (graphql-transport-ws) that behaves
// like a real one: when its subscription completes or errors it subscribes again, and when
// its connection drops it reconnects, each time with afterTransitionId = the highest id it
// has received.
type subscriber struct {
	mu            sync.Mutex
	got           []delivered
	seen          map[int64]int
	maxID         int64
	subscriptions int
	connections   int
}

func (s *subscriber) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.seen)
}

func (s *subscriber) run(ctx context.Context, url string) {
	for ctx.Err() == nil {
		s.connect(ctx, url)
		pause(ctx, 100*time.Millisecond)
	}
}

// connect dials, then subscribes again after every end of the subscription, until the
// connection fails or ctx ends.
func (s *subscriber) connect(ctx context.Context, url string) {
	dialCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	conn, _, err := websocket.Dial(dialCtx, url, &websocket.DialOptions{Subprotocols: []string{"graphql-transport-ws"}})
	cancel()
	if err != nil {
		return
	}
	defer func() { _ = conn.CloseNow() }()
	conn.SetReadLimit(1 << 20)
	s.mu.Lock()
	s.connections++
	s.mu.Unlock()
	if wsjson.Write(ctx, conn, wsMessage{Type: "connection_init"}) != nil {
		return
	}
	var ack wsMessage
	if wsjson.Read(ctx, conn, &ack) != nil || ack.Type != "connection_ack" {
		return
	}
	current := ""
	subscribe := func() error {
		s.mu.Lock()
		s.subscriptions++
		current = strconv.Itoa(s.subscriptions)
		after := strconv.FormatInt(s.maxID, 10)
		s.mu.Unlock()
		payload, _ := json.Marshal(map[string]any{"query": stepSub, "variables": map[string]any{"after": after}})
		return wsjson.Write(ctx, conn, wsMessage{ID: current, Type: "subscribe", Payload: payload})
	}
	if subscribe() != nil {
		return
	}
	for {
		var m wsMessage
		if wsjson.Read(ctx, conn, &m) != nil {
			return
		}
		switch m.Type {
		case "ping":
			if wsjson.Write(ctx, conn, wsMessage{Type: "pong"}) != nil {
				return
			}
		case "next":
			if m.ID != current {
				continue
			}
			var p struct {
				Data struct {
					StepTransitions struct {
						ID     string `json:"id"`
						StepID string `json:"stepId"`
					} `json:"stepTransitions"`
				} `json:"data"`
				Errors json.RawMessage `json:"errors"`
			}
			if err := json.Unmarshal(m.Payload, &p); err != nil || len(p.Errors) > 0 {
				continue // a failed event carries no transition; the stream goes on
			}
			id, err1 := strconv.ParseInt(p.Data.StepTransitions.ID, 10, 64)
			step, err2 := strconv.ParseInt(p.Data.StepTransitions.StepID, 10, 64)
			if err1 != nil || err2 != nil {
				continue
			}
			s.mu.Lock()
			s.got = append(s.got, delivered{id: id, stepID: step})
			s.seen[id]++
			s.maxID = max(s.maxID, id)
			s.mu.Unlock()
		case "complete", "error":
			if m.ID != current {
				continue
			}
			pause(ctx, 100*time.Millisecond)
			if ctx.Err() != nil || subscribe() != nil {
				return
			}
		}
	}
}

type wsMessage struct {
	ID      string          `json:"id,omitempty"`
	Type    string          `json:"type"`
	Payload json.RawMessage `json:"payload,omitempty"`
}

func pause(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func head(ids []int64) []int64 { return ids[:min(len(ids), 10)] }
