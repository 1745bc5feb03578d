package orchestration_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/taskerhq/tasker/internal/database"
	"github.com/taskerhq/tasker/internal/events"
	"github.com/taskerhq/tasker/internal/handler"
	"github.com/taskerhq/tasker/internal/orchestration"
	"github.com/taskerhq/tasker/internal/template"
	"github.com/taskerhq/tasker/internal/testkit/dbtest"
)

// harness is one test database with the shipped templates (plus any given as YAML)
// registered, and engines that each have their own pool and LISTEN connection, like separate
// processes.
type harness struct {
	t        testing.TB
	url      string
	db       *gorm.DB
	handlers *handler.Registry
	reg      *template.Registry
	svc      *orchestration.Service // over db, creating tasks from reg
}

func newHarness(t testing.TB, handlers *handler.Registry, yamls ...string) *harness {
	t.Helper()
	if handlers == nil {
		handlers = handler.NewBuiltinRegistry()
	}
	h := &harness{t: t, url: dbtest.NewURL(t), handlers: handlers}
	h.db = openDB(t, h.url)
	var err error
	if h.reg, err = template.Shipped(handlers); err != nil {
		t.Fatal(err)
	}
	for i, y := range yamls {
		tpl, err := template.Parse(fmt.Sprintf("test%d.yaml", i), []byte(y), handlers)
		if err != nil {
			t.Fatalf("parsing test template: %v", err)
		}
		if err := h.reg.Add(tpl); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.reg.RegisterAll(context.Background(), h.db); err != nil {
		t.Fatalf("registering templates: %v", err)
	}
	h.svc = orchestration.NewService(h.db, h.reg)
	return h
}

func openDB(t testing.TB, url string) *gorm.DB {
	t.Helper()
	db, err := database.Open(context.Background(), url, database.Options{MaxOpenConns: 10})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = database.Close(db) })
	return db
}

// engine starts an engine with its own pools (the service's, and the engine's own unless cfg
// has one) and events hub, as tasker worker does; it is stopped at cleanup.
func (h *harness) engine(cfg orchestration.Config) *orchestration.Engine {
	h.t.Helper()
	db := openDB(h.t, h.url)
	if cfg.Pool == nil {
		pool, err := database.OpenEngine(context.Background(), h.url,
			database.Options{MaxOpenConns: orchestration.PoolConns}, cfg.AsyncCommit)
		if err != nil {
			h.t.Fatal(err)
		}
		h.t.Cleanup(func() { _ = pool.Close() }) // after the engine's stop, registered below
		cfg.Pool = pool
	}
	log := slog.New(slog.DiscardHandler)
	hub := events.NewHub(h.url, log)
	hubCtx, stopHub := context.WithCancel(context.Background())
	hubDone := make(chan struct{})
	go func() { defer close(hubDone); _ = hub.Run(hubCtx) }()
	select {
	case <-hub.Ready():
	case <-time.After(10 * time.Second):
		h.t.Fatal("events hub did not connect")
	}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = time.Second
	}
	eng, err := orchestration.New(orchestration.NewService(db, nil), hub, orchestration.NewConfiguredHandlers(h.handlers), cfg, log)
	if err != nil {
		h.t.Fatal(err)
	}
	if err := eng.Start(context.Background()); err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if err := eng.Stop(ctx); err != nil {
			h.t.Errorf("stopping engine: %v", err)
		}
		stopHub()
		<-hubDone
	})
	return eng
}

// create creates a task of template namespace/name and returns its id.
func (h *harness) create(namespace, name string, taskContext string) int64 {
	h.t.Helper()
	req := orchestration.CreateTaskRequest{Namespace: namespace, Name: name}
	if taskContext != "" {
		req.Context = json.RawMessage(taskContext)
	}
	task, _, err := h.svc.CreateTask(context.Background(), req)
	if err != nil {
		h.t.Fatalf("creating task %s/%s: %v", namespace, name, err)
	}
	return task.TaskID
}

func (h *harness) taskState(id int64) string {
	h.t.Helper()
	var st string
	if err := h.db.Raw(`SELECT coalesce((SELECT to_state FROM tasker_task_transitions
		WHERE task_id = ? AND most_recent), 'pending')`, id).Row().Scan(&st); err != nil {
		h.t.Fatal(err)
	}
	return st
}

// waitTasks polls until every task is in state want, failing after timeout with the states
// and blocking reasons it saw.
func (h *harness) waitTasks(want string, timeout time.Duration, ids ...int64) {
	h.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var n int64
		if err := h.db.Raw(`SELECT count(*) FROM tasker_task_transitions
			WHERE task_id = ANY(?::bigint[]) AND most_recent AND to_state = ?`,
			database.Array[int64](ids), want).Row().Scan(&n); err != nil {
			h.t.Fatal(err)
		}
		if int(n) == len(ids) {
			return
		}
		if time.Now().After(deadline) {
			var rows []struct {
				TaskID         int64
				Name           string
				CurrentState   string
				BlockingReason *string
			}
			h.db.Raw(`SELECT task_id, name, current_state, blocking_reason FROM tasker_step_readiness_statuses
				WHERE task_id = ANY(?::bigint[]) AND current_state <> 'complete' ORDER BY task_id, workflow_step_id LIMIT 20`,
				database.Array[int64](ids)).Scan(&rows)
			h.t.Fatalf("%d of %d tasks reached %s within %s; unfinished steps: %+v", n, len(ids), want, timeout, rows)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stepInfo is what the tests check about one step after a run.
type stepInfo struct {
	ID                    int64
	Name                  string
	Attempts              int
	Processed             bool
	InProcess             bool
	Retryable             bool
	RetryLimit            int
	BackoffRequestSeconds *int
	Results               string
	History               []string         `gorm:"-"`
	Times                 []time.Time      `gorm:"-"`
	Meta                  []map[string]any `gorm:"-"`
}

func (h *harness) steps(taskID int64) map[string]*stepInfo {
	h.t.Helper()
	var rows []*stepInfo
	if err := h.db.Raw(`SELECT s.workflow_step_id AS id, ns.name, coalesce(s.attempts, 0) AS attempts, s.processed,
			s.in_process, s.retryable, coalesce(s.retry_limit, 3) AS retry_limit, s.backoff_request_seconds,
			coalesce(s.results::text, '') AS results
		FROM tasker_workflow_steps s JOIN tasker_named_steps ns USING (named_step_id)
		WHERE s.task_id = ?`, taskID).Scan(&rows).Error; err != nil {
		h.t.Fatal(err)
	}
	out := map[string]*stepInfo{}
	byID := map[int64]*stepInfo{}
	for _, si := range rows {
		out[si.Name] = si
		byID[si.ID] = si
	}
	var trs []struct {
		WorkflowStepID int64
		ToState        string
		CreatedAt      time.Time
		Metadata       string
	}
	if err := h.db.Raw(`SELECT t.workflow_step_id, t.to_state, t.created_at, t.metadata::text AS metadata
		FROM tasker_workflow_step_transitions t JOIN tasker_workflow_steps s USING (workflow_step_id)
		WHERE s.task_id = ? ORDER BY t.workflow_step_id, t.sort_key`, taskID).Scan(&trs).Error; err != nil {
		h.t.Fatal(err)
	}
	for _, tr := range trs {
		si := byID[tr.WorkflowStepID]
		var m map[string]any
		_ = json.Unmarshal([]byte(tr.Metadata), &m)
		si.History = append(si.History, tr.ToState)
		si.Times = append(si.Times, tr.CreatedAt)
		si.Meta = append(si.Meta, m)
	}
	return out
}

func (h *harness) taskHistory(taskID int64) []string {
	h.t.Helper()
	var out []string
	if err := h.db.Raw(`SELECT to_state FROM tasker_task_transitions WHERE task_id = ? ORDER BY sort_key`,
		taskID).Scan(&out).Error; err != nil {
		h.t.Fatal(err)
	}
	return out
}

var (
	once   = []string{"in_progress", "error", "pending", "in_progress", "complete"}
	twice  = []string{"in_progress", "error", "pending", "in_progress", "error", "pending", "in_progress", "complete"}
	simple = []string{"in_progress", "complete"}
)

// checkBackoff asserts that no retry started before its backoff: every error transition is
// followed by its retry (pending) no earlier than min(2^attempts, 30) seconds later, where
// attempts counts the attempts made up to that failure.
func checkBackoff(t *testing.T, si *stepInfo) {
	t.Helper()
	failures := 0
	for i, st := range si.History {
		if st != "error" {
			continue
		}
		failures++
		if i+1 >= len(si.History) {
			continue
		}
		wait := time.Duration(min(1<<failures, 30)) * time.Second
		if got := si.Times[i+1].Sub(si.Times[i]); got < wait {
			t.Errorf("step %s: retry %d started %s after the failure, before its backoff of %s", si.Name, failures, got, wait)
		}
	}
}

func TestStandardShapesRunToCompleteDespiteTheirFailures(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	h.engine(orchestration.Config{Workers: 4})
	cases := []struct {
		name    string
		history map[string][]string // default: simple
	}{
		{"linear_workflow", map[string][]string{"process_data": once}},
		{"diamond_workflow", map[string][]string{"branch_one_process": once, "branch_two_process": once}},
		{"parallel_merge_workflow", map[string][]string{"fetch_order_data": once, "merge_all_data": once, "fetch_inventory_data": once}},
		{"tree_workflow", map[string][]string{"branch_b_setup": once, "branch_b_task_two": once, "branch_a_task_two": once}},
		{"mixed_workflow", map[string][]string{"validate_permissions": once, "setup_environment": once, "process_critical_data": twice}},
	}
	ids := make([]int64, len(cases))
	for i, c := range cases {
		ids[i] = h.create("examples", c.name, `{"order_id": 7}`)
	}
	h.waitTasks("complete", 60*time.Second, ids...)
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := h.taskHistory(ids[i]); !slices.Equal(got, []string{"in_progress", "complete"}) {
				t.Errorf("task history %v, want [in_progress complete]", got)
			}
			var complete bool
			h.db.Raw(`SELECT complete FROM tasker_tasks WHERE task_id = ?`, ids[i]).Row().Scan(&complete)
			if !complete {
				t.Error("task complete flag not set")
			}
			tpl, err := h.reg.Lookup("examples", c.name, "")
			if err != nil {
				t.Fatal(err)
			}
			steps := h.steps(ids[i])
			if len(steps) != len(tpl.Steps) {
				t.Fatalf("%d steps, want %d", len(steps), len(tpl.Steps))
			}
			for name, si := range steps {
				want := simple
				if hw, ok := c.history[name]; ok {
					want = hw
				}
				if !slices.Equal(si.History, want) {
					t.Errorf("step %s history %v, want %v", name, si.History, want)
				}
				wantAttempts := (len(want) + 1) / 3
				if si.Attempts != wantAttempts || !si.Processed || si.InProcess {
					t.Errorf("step %s: attempts %d (want %d), processed %v, in_process %v",
						name, si.Attempts, wantAttempts, si.Processed, si.InProcess)
				}
				checkBackoff(t, si)
			}
		})
	}
}
