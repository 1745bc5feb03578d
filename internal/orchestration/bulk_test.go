package orchestration_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"gorm.io/gorm"

	"github.com/taskerhq/tasker/internal/database"
	"github.com/taskerhq/tasker/internal/errs"
	"github.com/taskerhq/tasker/internal/models"
	"github.com/taskerhq/tasker/internal/orchestration"
	"github.com/taskerhq/tasker/internal/template"
	"github.com/taskerhq/tasker/internal/testkit/baseline"
	"github.com/taskerhq/tasker/internal/testkit/dbtest"
	"github.com/taskerhq/tasker/internal/testkit/fixture"
)

// skipEdgeYAML has a step whose shortest and longest paths from the root differ, and a step
// declared before its parent.
const skipEdgeYAML = `
namespace: bulk
name: skip_edge
version: 1.0.0
steps:
  - name: last
    depends_on: [a, c]
    handler: {kind: noop}
  - name: a
    handler: {kind: noop}
  - name: b
    depends_on: a
    handler: {kind: noop}
  - name: c
    depends_on: [a, b]
    handler: {kind: noop}
  - name: lone
    handler: {kind: noop}
`

// requestsOfEveryTemplate returns one valid request per template of reg.
func requestsOfEveryTemplate(reg *template.Registry) []orchestration.CreateTaskRequest {
	var reqs []orchestration.CreateTaskRequest
	for _, tpl := range reg.Templates() {
		req := orchestration.CreateTaskRequest{Namespace: tpl.Namespace, Name: tpl.Name, Version: tpl.Version,
			Initiator: "tester", Tags: json.RawMessage(`{"bulk": true}`)}
		if tpl.Name == "http_fetch_and_post" {
			req.Context = json.RawMessage(`{"base_url": "http://127.0.0.1:1", "item_id": 5}`)
		}
		reqs = append(reqs, req)
	}
	return reqs
}

func createBatch(t *testing.T, db *gorm.DB, reg *template.Registry, reqs []orchestration.CreateTaskRequest) []orchestration.BatchTask {
	t.Helper()
	res, err := orchestration.NewService(db, reg).CreateTasks(context.Background(), reqs)
	if err != nil || len(res.Errors) > 0 || len(res.Tasks) != len(reqs) {
		t.Fatalf("CreateTasks: %+v, %v", res, err)
	}
	return res.Tasks
}

// TestCreateTasksMatchesTheTriggerAndTheBaseline creates a task of every template in one batch
// and checks what the views say of them: the stored depths are the ones the edges trigger's
// walk computes, the DAG view's parents and children are the template's, and readiness and
// execution contexts equal the naive baseline's.
func TestCreateTasksMatchesTheTriggerAndTheBaseline(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil, skipEdgeYAML)
	ctx := context.Background()
	reqs := requestsOfEveryTemplate(h.reg)
	tasks := createBatch(t, h.db, h.reg, append(reqs, reqs...))
	ids := make([]int64, len(tasks))
	for i, bt := range tasks {
		if !bt.Created {
			t.Fatalf("request %d: not created", i)
		}
		ids[i] = bt.TaskID
	}

	depths := func() string {
		var s string
		if err := h.db.Raw(`SELECT string_agg(concat_ws(':', workflow_step_id, min_depth_from_root, dependency_level), ','
			ORDER BY workflow_step_id) FROM tasker_workflow_steps WHERE task_id IN ?`, ids).Scan(&s).Error; err != nil {
			t.Fatal(err)
		}
		return s
	}
	stored := depths()
	if err := h.db.Exec(`SELECT tasker_refresh_dag_levels(array_agg(task_id)) FROM tasker_tasks WHERE task_id IN ?`, ids).Error; err != nil {
		t.Fatal(err)
	}
	if walked := depths(); walked != stored {
		t.Fatalf("depths written from the template differ from the trigger's walk:\nstored %s\nwalked %s", stored, walked)
	}
	var deep int
	h.db.Raw(`SELECT count(*) FROM tasker_workflow_steps WHERE task_id IN ? AND min_depth_from_root <> dependency_level`, ids).Scan(&deep)
	if deep == 0 {
		t.Fatal("no step whose shortest and longest paths differ: the test does not cover them")
	}

	var dag []models.StepDagRelationship
	if err := h.db.Where("task_id IN ?", ids).Find(&dag).Error; err != nil {
		t.Fatal(err)
	}
	byTask := map[int64]*template.Template{}
	for i, id := range ids {
		tpl, err := h.reg.Lookup(reqs[i%len(reqs)].Namespace, reqs[i%len(reqs)].Name, reqs[i%len(reqs)].Version)
		if err != nil {
			t.Fatal(err)
		}
		byTask[id] = tpl
	}
	names := map[int64]string{}
	var named []struct {
		NamedStepID int64
		Name        string
	}
	h.db.Raw(`SELECT named_step_id, name FROM tasker_named_steps`).Scan(&named)
	for _, n := range named {
		names[n.NamedStepID] = n.Name
	}
	for _, d := range dag {
		tpl := byTask[d.TaskID]
		s := tpl.Step(names[d.NamedStepID])
		children := 0
		for _, e := range tpl.Edges() {
			if e.From == s.Name {
				children++
			}
		}
		if d.ParentCount != len(s.DependsOn) || d.ChildCount != children || d.IsRootStep != (len(s.DependsOn) == 0) ||
			d.IsLeafStep != (children == 0) {
			t.Errorf("%s step %s: DAG view %+v; template has %d parents, %d children", tpl.Key(), s.Name, d, len(s.DependsOn), children)
		}
	}
	if want := 2 * countSteps(h.reg); len(dag) != want {
		t.Fatalf("DAG view has %d rows, want %d", len(dag), want)
	}

	now := time.Now()
	slices.Sort(ids)
	views, err := models.ReadinessByTaskIDs(ctx, h.db, ids)
	if err != nil {
		t.Fatal(err)
	}
	byStep := map[int64]models.StepReadinessStatus{}
	for _, v := range views {
		byStep[v.WorkflowStepID] = v
	}
	contexts, err := models.ExecutionContextsByTaskIDs(ctx, h.db, ids)
	if err != nil {
		t.Fatal(err)
	}
	naive, err := baseline.TaskContexts(ctx, h.db, ids, now)
	if err != nil || len(naive) != len(contexts) || len(contexts) != len(ids) {
		t.Fatalf("%d contexts, %d baseline, %v", len(contexts), len(naive), err)
	}
	ready := 0
	for i, v := range contexts {
		n := naive[i]
		if v.TaskID != n.TaskID || v.Status != n.Status || v.TotalSteps != n.TotalSteps || v.PendingSteps != n.PendingSteps ||
			v.ReadySteps != n.ReadySteps || string(v.ExecutionStatus) != string(n.ExecutionStatus) || string(v.HealthStatus) != string(n.HealthStatus) ||
			string(v.RecommendedAction) != string(n.RecommendedAction) || math.Abs(v.CompletionPercentage-n.CompletionPercentage) > 0.001 {
			t.Errorf("task %d: view %+v\nbaseline %+v", v.TaskID, v, n)
		}
		steps, err := baseline.Steps(ctx, h.db, v.TaskID, now)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range steps {
			w := byStep[s.WorkflowStepID]
			reason := ""
			if w.BlockingReason != nil {
				reason = string(*w.BlockingReason)
			}
			if w.CurrentState != s.CurrentState || w.ReadyForExecution != s.ReadyForExecution ||
				w.DependenciesSatisfied != s.DependenciesSatisfied || w.TotalParents != s.TotalParents ||
				w.CompletedParents != s.CompletedParents || reason != s.BlockingReason {
				t.Errorf("step %d (%s): view %+v\nbaseline %+v", s.WorkflowStepID, w.Name, w, s)
			}
			if s.ReadyForExecution {
				ready++
			}
		}
	}
	if ready == 0 {
		t.Fatal("no ready step after creation")
	}
}

func countSteps(reg *template.Registry) int {
	n := 0
	for _, tpl := range reg.Templates() {
		n += len(tpl.Steps)
	}
	return n
}

// TestCreateTasksKeepsTheTriggerForOtherWriters checks that the trusted flag covers one
// statement only: a later edge insert in the same transaction, and any other writer, still
// gets the acyclicity check and the depth walk.
func TestCreateTasksKeepsTheTriggerForOtherWriters(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	ids := createBatch(t, h.db, h.reg, []orchestration.CreateTaskRequest{{Namespace: "examples", Name: "linear_workflow"}})
	steps := stepsOf(t, h.db, ids[0].TaskID)
	first, last := steps["initialize_data"].WorkflowStepID, steps["finalize_workflow"].WorkflowStepID
	if first == 0 || last == 0 {
		t.Fatalf("steps of linear_workflow: %v", steps)
	}
	err := h.db.Transaction(func(tx *gorm.DB) error {
		if err := tx.Exec(`SELECT set_config('tasker.dag_levels_precomputed', 'on', true)`).Error; err != nil {
			return err
		}
		// The trusted statement (no edge) consumes the flag.
		if err := tx.Exec(`INSERT INTO tasker_workflow_step_edges (from_step_id, to_step_id, name)
			SELECT 1, 1, 'x' WHERE false`).Error; err != nil {
			return err
		}
		return tx.Exec(`INSERT INTO tasker_workflow_step_edges (from_step_id, to_step_id, name) VALUES (?, ?, 'back')`,
			last, first).Error
	})
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.ConstraintName != "tasker_workflow_step_edges_acyclic" {
		t.Fatalf("cycle after the trusted statement: err = %v, want the acyclic check", err)
	}
	// A plain writer's edge still gets its depth from the walk.
	if err := h.db.Exec(`INSERT INTO tasker_workflow_step_edges (from_step_id, to_step_id, name) VALUES (?, ?, 'extra')`,
		first, last).Error; err != nil {
		t.Fatal(err)
	}
	var minDepth int
	h.db.Raw(`SELECT min_depth_from_root FROM tasker_workflow_steps WHERE workflow_step_id = ?`, last).Scan(&minDepth)
	if minDepth != 1 {
		t.Fatalf("min depth of the last step after a shortcut edge = %d, want 1 (the trigger's walk)", minDepth)
	}
}

func TestCreateTasksIdempotency(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	req := func(key string) orchestration.CreateTaskRequest {
		return orchestration.CreateTaskRequest{Namespace: "examples", Name: "diamond_workflow", IdempotencyKey: key}
	}
	first := createBatch(t, h.db, h.reg, []orchestration.CreateTaskRequest{req("a"), req("b"), req("a"), req(""), req("")})
	if first[0].TaskID != first[2].TaskID || !first[0].Created || first[2].Created || !first[1].Created ||
		first[3].TaskID == first[4].TaskID || !first[3].Created || !first[4].Created {
		t.Fatalf("within a batch: %+v; want requests 0 and 2 one task created once, the others distinct", first)
	}
	var tasks int
	h.db.Raw(`SELECT count(*) FROM tasker_tasks`).Scan(&tasks)
	if tasks != 4 {
		t.Fatalf("%d tasks, want 4", tasks)
	}
	before := rowCounts(t, h.db)
	again := createBatch(t, h.db, h.reg, []orchestration.CreateTaskRequest{req("b"), req("a")})
	if again[0] != (orchestration.BatchTask{TaskID: first[1].TaskID}) || again[1] != (orchestration.BatchTask{TaskID: first[0].TaskID}) {
		t.Fatalf("repeated batch: %+v, want the tasks of the first batch, not created", again)
	}
	if after := rowCounts(t, h.db); after != before {
		t.Fatalf("a batch of repeats wrote rows: %s → %s", before, after)
	}
	mixed := createBatch(t, h.db, h.reg, []orchestration.CreateTaskRequest{req("c"), req("a"), req("c")})
	if mixed[1] != (orchestration.BatchTask{TaskID: first[0].TaskID}) || !mixed[0].Created || mixed[2].Created ||
		mixed[2].TaskID != mixed[0].TaskID {
		t.Fatalf("mixed batch: %+v", mixed)
	}
	diamond, _ := h.reg.Lookup("examples", "diamond_workflow", "")
	if n := len(stepsOf(t, h.db, mixed[0].TaskID)); n != len(diamond.Steps) {
		t.Fatalf("new task of a mixed batch has %d steps, want %d", n, len(diamond.Steps))
	}
	var steps int
	h.db.Raw(`SELECT count(*) FROM tasker_workflow_steps WHERE task_id = ?`, first[0].TaskID).Scan(&steps)
	if steps != len(diamond.Steps) {
		t.Fatalf("repeated task has %d steps, want %d (none added)", steps, len(diamond.Steps))
	}
}

// TestCreateTasksConcurrentOverlappingKeys runs batches with overlapping keys, in opposite
// orders, at the same time: one task per key, and every batch sees the same task for a key.
func TestCreateTasksConcurrentOverlappingKeys(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	const keys, rounds = 300, 3
	batch := func(from, to int, reverse bool) []orchestration.CreateTaskRequest {
		var reqs []orchestration.CreateTaskRequest
		for k := from; k < to; k++ {
			reqs = append(reqs, orchestration.CreateTaskRequest{Namespace: "examples", Name: "linear_workflow",
				IdempotencyKey: fmt.Sprintf("key-%d", k)})
		}
		if reverse {
			slices.Reverse(reqs)
		}
		return reqs
	}
	var mu sync.Mutex
	taskOfKey := map[string]int64{}
	created := 0
	for round := range rounds {
		var wg sync.WaitGroup
		start := make(chan struct{})
		for g, b := range [][]orchestration.CreateTaskRequest{batch(0, 200, false), batch(100, keys, true), batch(50, 250, round%2 == 0)} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				res, err := h.svc.CreateTasks(context.Background(), b)
				mu.Lock()
				defer mu.Unlock()
				if err != nil || len(res.Errors) > 0 {
					t.Errorf("round %d batch %d: %+v, %v", round, g, res.Errors, err)
					return
				}
				for i, bt := range res.Tasks {
					k := b[i].IdempotencyKey
					if prev, ok := taskOfKey[k]; ok && prev != bt.TaskID {
						t.Errorf("key %s: tasks %d and %d", k, prev, bt.TaskID)
					}
					taskOfKey[k] = bt.TaskID
					if bt.Created {
						created++
					}
				}
			}()
		}
		close(start)
		wg.Wait()
	}
	var tasks, steps int
	h.db.Raw(`SELECT count(*) FROM tasker_tasks`).Scan(&tasks)
	h.db.Raw(`SELECT count(*) FROM tasker_workflow_steps`).Scan(&steps)
	linear, _ := h.reg.Lookup("examples", "linear_workflow", "")
	if tasks != keys || created != keys || len(taskOfKey) != keys || steps != keys*len(linear.Steps) {
		t.Fatalf("%d tasks, %d created, %d keys, %d steps; want %d tasks created once each with %d steps",
			tasks, created, len(taskOfKey), steps, keys, len(linear.Steps))
	}
}

// TestCreateTasksRefusesTheBatchForAnyBadRequest: every request at fault is listed with its
// index and field, and nothing is written.
func TestCreateTasksRefusesTheBatchForAnyBadRequest(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil)
	ctx := context.Background()
	held := createBatch(t, h.db, h.reg, []orchestration.CreateTaskRequest{{Namespace: "examples", Name: "diamond_workflow", IdempotencyKey: "held"}})
	before := rowCounts(t, h.db)
	good := orchestration.CreateTaskRequest{Namespace: "examples", Name: "linear_workflow"}
	reqs := []orchestration.CreateTaskRequest{
		good,
		{Namespace: "examples", Name: "http_fetch_and_post", Context: json.RawMessage(`{"base_url": 3}`)},
		good,
		{Namespace: "examples", Name: "no_such_template"},
		{Namespace: "examples"},
		{Namespace: "examples", Name: "linear_workflow", Tags: json.RawMessage(`"x"`)},
		{Namespace: "examples", Name: "linear_workflow", IdempotencyKey: "held"},
		{Namespace: "examples", Name: "linear_workflow", IdempotencyKey: "twice"},
		{Namespace: "examples", Name: "tree_workflow", IdempotencyKey: "twice"},
		{Namespace: "examples", Name: "linear_workflow", Reason: strings.Repeat("r", 256)},
	}
	res, err := h.svc.CreateTasks(ctx, reqs)
	if err != nil || res.Tasks != nil {
		t.Fatalf("CreateTasks: %+v, %v; want item errors and no tasks", res, err)
	}
	type want struct {
		field string
		is    errs.Kind
		text  string
	}
	wants := map[int]want{
		1: {"context", errs.Invalid, "base_url"},
		3: {"", errs.NotFound, "no_such_template"},
		4: {"template", errs.Invalid, "name is required"},
		5: {"tags", errs.Invalid, "object or array"},
		8: {"idempotency_key", errs.Conflict, "twice"},
		9: {"reason", errs.Invalid, "reason"},
	}
	if len(res.Errors) != len(wants) {
		t.Fatalf("errors %v; want requests 1, 3, 4, 5, 8, 9 at fault", res.Errors)
	}
	for _, e := range res.Errors {
		w, ok := wants[e.Index]
		var ve *errs.Error
		if !ok || !errs.Is(e, w.is) || !strings.Contains(e.Error(), w.text) ||
			(w.field != "" && (!errors.As(e, &ve) || ve.Field != w.field)) {
			t.Errorf("request %d: %v; want %+v", e.Index, e, w)
		}
	}
	// Once the batch's own requests are right, a key held by another template's task is found.
	res, err = h.svc.CreateTasks(ctx, []orchestration.CreateTaskRequest{good, reqs[6]})
	var ve *errs.Error
	if err != nil || len(res.Errors) != 1 || res.Errors[0].Index != 1 || !errors.As(res.Errors[0].Err, &ve) ||
		ve.Field != "idempotency_key" || !strings.Contains(ve.Error(), fmt.Sprint(held[0].TaskID)) {
		t.Fatalf("key held by another template: %+v, %v", res, err)
	}
	if after := rowCounts(t, h.db); after != before {
		t.Fatalf("refused batches wrote rows: %s → %s", before, after)
	}
	big := make([]orchestration.CreateTaskRequest, orchestration.MaxBatch+1)
	for i := range big {
		big[i] = good
	}
	if _, err := h.svc.CreateTasks(ctx, big); !errors.As(err, &ve) || ve.Field != "inputs" ||
		!strings.Contains(err.Error(), fmt.Sprint(orchestration.MaxBatch)) {
		t.Fatalf("batch over the cap: %v", err)
	}
	if after := rowCounts(t, h.db); after != before {
		t.Fatalf("a batch over the cap wrote rows: %s → %s", before, after)
	}
}

// TestCreateTasksStatementCountIsConstant: the statements of a batch do not depend on its size.
func TestCreateTasksStatementCountIsConstant(t *testing.T) {
	t.Parallel()
	db, c := countedDB(t)
	reg := fixture.Templates(t)
	ctx := context.Background()
	if err := reg.RegisterAll(ctx, db); err != nil {
		t.Fatal(err)
	}
	statements := map[int]int64{}
	if _, err := orchestration.NewService(db, reg).CreateTasks(ctx, []orchestration.CreateTaskRequest{
		{Namespace: "examples", Name: "mixed_workflow", IdempotencyKey: "k0"}}); err != nil {
		t.Fatal(err)
	}
	for _, size := range []int{20, 200, 600} {
		reqs := make([]orchestration.CreateTaskRequest, size)
		for i := range reqs {
			// Half with keys, some of them already taken by the previous batches.
			reqs[i] = orchestration.CreateTaskRequest{Namespace: "examples", Name: "mixed_workflow"}
			if i%2 == 0 {
				reqs[i].IdempotencyKey = fmt.Sprintf("k%d", i)
			}
		}
		before := c.n.Load()
		res, err := orchestration.NewService(db, reg).CreateTasks(ctx, reqs)
		if err != nil || len(res.Errors) > 0 || res.Created() == 0 {
			t.Fatalf("size %d: %+v, %v", size, res.Errors, err)
		}
		statements[size] = c.n.Load() - before
	}
	var tasks, steps int
	db.Raw(`SELECT count(*) FROM tasker_tasks`).Scan(&tasks)
	db.Raw(`SELECT count(*) FROM tasker_workflow_steps`).Scan(&steps)
	mixed, _ := reg.Lookup("examples", "mixed_workflow", "")
	if tasks != 1+19+190+500 || steps != tasks*len(mixed.Steps) {
		t.Fatalf("%d tasks with %d steps; want 710 tasks of %d steps", tasks, steps, len(mixed.Steps))
	}
	if statements[20] != statements[200] || statements[200] != statements[600] || statements[600] > 12 {
		t.Fatalf("statements per batch of 20, 200, 600 requests: %v; want one small constant", statements)
	}
}

// TestCreateTasksPlansItsStatementsOnce: a creation batch runs its statements with generic
// plans (store.PlanBulkWrite), so that its foreign-key checks, one per row written, are not
// planned again for every row, and the connection's own setting (plan every execution afresh)
// is back once the batch commits. Two batches run on a pool of one connection, as the test
// databases' owner (who must run the checks); the connection's prepared insert of tasks then
// shows two generic plans and no custom one.
func TestCreateTasksPlansItsStatementsOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, err := database.Open(ctx, dbtest.NewURL(t), database.Options{MaxOpenConns: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = database.Close(db) })
	reg := fixture.Templates(t)
	svc := orchestration.NewService(db, reg)
	for batch := range 2 {
		reqs := make([]orchestration.CreateTaskRequest, 40)
		for i := range reqs {
			reqs[i] = orchestration.CreateTaskRequest{Namespace: "examples", Name: "diamond_workflow",
				IdempotencyKey: fmt.Sprintf("plans-%d-%d", batch, i)}
		}
		if res, err := svc.CreateTasks(ctx, reqs); err != nil || len(res.Errors) > 0 || res.Created() != len(reqs) {
			t.Fatalf("batch %d: %+v, %v", batch, res.Errors, err)
		}
	}
	var plans struct{ Generic, Custom int64 }
	if err := db.Raw(`SELECT coalesce(sum(generic_plans), 0) AS generic, coalesce(sum(custom_plans), 0) AS custom
		FROM pg_prepared_statements WHERE ltrim(statement, E' \t\n') LIKE 'INSERT INTO tasker_tasks (%'`).Scan(&plans).Error; err != nil {
		t.Fatal(err)
	}
	if plans.Generic != 2 || plans.Custom != 0 {
		t.Errorf("the insert of tasks ran with %d generic and %d custom plans; want 2 and 0", plans.Generic, plans.Custom)
	}
	var mode, seqscan string
	if err := db.Raw(`SELECT current_setting('plan_cache_mode'), current_setting('enable_seqscan')`).Row().Scan(&mode, &seqscan); err != nil {
		t.Fatal(err)
	}
	if mode != "force_custom_plan" || seqscan != "on" {
		t.Errorf("after the batches the connection has plan_cache_mode %s and enable_seqscan %s; want force_custom_plan and on",
			mode, seqscan)
	}
}
