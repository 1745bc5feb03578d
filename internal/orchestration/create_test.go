package orchestration_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"
	"gorm.io/gorm"

	"github.com/taskerhq/tasker/internal/database"
	"github.com/taskerhq/tasker/internal/errs"
	"github.com/taskerhq/tasker/internal/handler"
	"github.com/taskerhq/tasker/internal/orchestration"
	"github.com/taskerhq/tasker/internal/template"
	"github.com/taskerhq/tasker/internal/testkit/dbtest"
	"github.com/taskerhq/tasker/internal/testkit/fixture"
)

type stepRow struct {
	WorkflowStepID int64
	Name           string
	Retryable      bool
	RetryLimit     int
	Skippable      bool
	Attempts       int
	Processed      bool
	Inputs         *string
}

func stepsOf(t *testing.T, db *gorm.DB, taskID int64) map[string]stepRow {
	t.Helper()
	var rows []stepRow
	if err := db.Raw(`SELECT s.workflow_step_id, ns.name, s.retryable, s.retry_limit, s.skippable, s.attempts,
			s.processed, s.inputs::text AS inputs
		FROM tasker_workflow_steps s JOIN tasker_named_steps ns USING (named_step_id)
		WHERE s.task_id = ?`, taskID).Scan(&rows).Error; err != nil {
		t.Fatal(err)
	}
	out := map[string]stepRow{}
	for _, r := range rows {
		out[r.Name] = r
	}
	return out
}

func edgesOf(t *testing.T, db *gorm.DB, taskID int64) []string {
	t.Helper()
	var edges []string
	if err := db.Raw(`SELECT pf.name || '>' || pt.name
		FROM tasker_workflow_step_edges e
		JOIN tasker_workflow_steps f ON f.workflow_step_id = e.from_step_id
		JOIN tasker_named_steps pf ON pf.named_step_id = f.named_step_id
		JOIN tasker_workflow_steps c ON c.workflow_step_id = e.to_step_id
		JOIN tasker_named_steps pt ON pt.named_step_id = c.named_step_id
		WHERE f.task_id = ? AND e.name = 'provides' ORDER BY 1`, taskID).Scan(&edges).Error; err != nil {
		t.Fatal(err)
	}
	return edges
}

func TestCreateTaskWritesStepsAndEdgesOfEveryTemplate(t *testing.T) {
	t.Parallel()
	db := dbtest.New(t)
	reg := fixture.Templates(t)
	ctx := context.Background()
	for _, tpl := range reg.Templates() {
		req := orchestration.CreateTaskRequest{Namespace: tpl.Namespace, Name: tpl.Name, Initiator: "tester",
			SourceSystem: "unit", Reason: "shape check", Tags: json.RawMessage(`["a","b"]`)}
		if tpl.Name == "http_fetch_and_post" {
			req.Context = json.RawMessage(`{"base_url": "http://127.0.0.1:1", "item_id": 5}`)
		}
		task, created, err := orchestration.NewService(db, reg).CreateTask(ctx, req)
		if err != nil || !created {
			t.Fatalf("%s: CreateTask = %v, %v", tpl.Key(), created, err)
		}
		if task.TaskID == 0 || task.Complete || !strings.HasPrefix(task.IdentityHash, "rnd:") ||
			task.Initiator == nil || *task.Initiator != "tester" || string(task.Tags) != `["a", "b"]` {
			t.Fatalf("%s: task = %+v", tpl.Key(), task)
		}
		steps := stepsOf(t, db, task.TaskID)
		if len(steps) != len(tpl.Steps) {
			t.Fatalf("%s: %d steps written, want %d", tpl.Key(), len(steps), len(tpl.Steps))
		}
		for _, s := range tpl.Steps {
			got, ok := steps[s.Name]
			if !ok || got.Retryable != s.Retryable || got.RetryLimit != s.RetryLimit || got.Skippable != s.Skippable ||
				got.Attempts != 0 || got.Processed {
				t.Errorf("%s: step %s = %+v, want the template's defaults %+v", tpl.Key(), s.Name, got, s)
			}
		}
		var want []string
		for _, e := range tpl.Edges() {
			want = append(want, e.From+">"+e.To)
		}
		slices.Sort(want)
		if got := edgesOf(t, db, task.TaskID); !slices.Equal(got, want) {
			t.Errorf("%s: edges\n got %v\nwant %v", tpl.Key(), got, want)
		}
		var transitions int64
		db.Raw(`SELECT (SELECT count(*) FROM tasker_task_transitions WHERE task_id = ?) +
			(SELECT count(*) FROM tasker_workflow_step_transitions st JOIN tasker_workflow_steps s USING (workflow_step_id)
			 WHERE s.task_id = ?)`, task.TaskID, task.TaskID).Scan(&transitions)
		if transitions != 0 {
			t.Errorf("%s: %d transition rows, want none (pending)", tpl.Key(), transitions)
		}
	}
}

func TestCreateTaskStoresContextAndInputs(t *testing.T) {
	t.Parallel()
	db := dbtest.New(t)
	reg := template.NewRegistry(handler.NewBuiltinRegistry())
	y := "namespace: shop\nname: order\nversion: 2.0.0\nsteps:\n" +
		"  - name: a\n    inputs: {currency: EUR, amounts: [1, 2]}\n    handler: {kind: noop}\n" +
		"  - name: b\n    depends_on: a\n    retryable: false\n    retry_limit: 0\n    skippable: true\n    handler: {kind: noop}\n"
	for _, v := range []string{"1.0.0", "2.0.0", "10.0.0-beta.1"} {
		tpl, err := template.Parse(v+".yaml", []byte(strings.Replace(y, "2.0.0", v, 1)), reg.Handlers())
		if err != nil {
			t.Fatal(err)
		}
		if err := reg.Add(tpl); err != nil {
			t.Fatal(err)
		}
	}
	task, _, err := orchestration.NewService(db, reg).CreateTask(context.Background(), orchestration.CreateTaskRequest{
		Namespace: "shop", Name: "order", Context: json.RawMessage(` {"order_id": 7,  "lines": [1]} `)})
	if err != nil {
		t.Fatal(err)
	}
	var version string
	db.Raw(`SELECT version FROM tasker_named_tasks WHERE named_task_id = ?`, task.NamedTaskID).Scan(&version)
	if version != "2.0.0" {
		t.Fatalf("empty version created a task of %s, want the newest release 2.0.0", version)
	}
	var ctxText string
	db.Raw(`SELECT context::text FROM tasker_tasks WHERE task_id = ?`, task.TaskID).Scan(&ctxText)
	if ctxText != `{"lines": [1], "order_id": 7}` {
		t.Fatalf("stored context = %s", ctxText)
	}
	steps := stepsOf(t, db, task.TaskID)
	if a := steps["a"]; a.Inputs == nil || *a.Inputs != `{"amounts": [1, 2], "currency": "EUR"}` {
		t.Fatalf("inputs of a = %v", a.Inputs)
	}
	if b := steps["b"]; b.Inputs != nil || b.Retryable || b.RetryLimit != 0 || !b.Skippable {
		t.Fatalf("step b = %+v", b)
	}
	old, _, err := orchestration.NewService(db, reg).CreateTask(context.Background(), orchestration.CreateTaskRequest{
		Namespace: "shop", Name: "order", Version: "1.0.0"})
	if err != nil || old.NamedTaskID == task.NamedTaskID {
		t.Fatalf("explicit version 1.0.0: %+v, %v", old, err)
	}
}

// rowCounts is a fingerprint of every table CreateTask or registration may write.
func rowCounts(t *testing.T, db *gorm.DB) string {
	t.Helper()
	var s string
	if err := db.Raw(`SELECT concat_ws(',',
		(SELECT count(*) FROM tasker_tasks), (SELECT count(*) FROM tasker_workflow_steps),
		(SELECT count(*) FROM tasker_workflow_step_edges), (SELECT count(*) FROM tasker_named_tasks),
		(SELECT count(*) FROM tasker_named_steps), (SELECT count(*) FROM tasker_task_namespaces),
		(SELECT count(*) FROM tasker_named_tasks_named_steps), (SELECT count(*) FROM tasker_dependent_systems),
		(SELECT count(*) FROM tasker_task_transitions), (SELECT count(*) FROM tasker_workflow_step_transitions))`).
		Scan(&s).Error; err != nil {
		t.Fatal(err)
	}
	return s
}

func TestCreateTaskRefusalsWriteNothing(t *testing.T) {
	t.Parallel()
	db := dbtest.New(t)
	reg := fixture.Templates(t)
	ctx := context.Background()
	before := rowCounts(t, db)
	cases := []struct {
		name    string
		req     orchestration.CreateTaskRequest
		is      errs.Kind
		mention []string
	}{
		{"context against schema", orchestration.CreateTaskRequest{Namespace: "examples", Name: "http_fetch_and_post",
			Context: json.RawMessage(`{"base_url": 3}`)}, errs.Invalid, []string{"/base_url", "item_id"}},
		{"context not an object", orchestration.CreateTaskRequest{Namespace: "examples", Name: "linear_workflow",
			Context: json.RawMessage(`[1]`)}, errs.Invalid, []string{"object"}},
		{"context not json", orchestration.CreateTaskRequest{Namespace: "examples", Name: "linear_workflow",
			Context: json.RawMessage(`{nope`)}, errs.Invalid, []string{"JSON"}},
		{"schema minimum", orchestration.CreateTaskRequest{Namespace: "examples", Name: "linear_workflow",
			Context: json.RawMessage(`{"batch_size": 0}`)}, errs.Invalid, []string{"/batch_size"}},
		{"tags not a collection", orchestration.CreateTaskRequest{Namespace: "examples", Name: "linear_workflow",
			Tags: json.RawMessage(`"x"`)}, errs.Invalid, []string{"tags"}},
		{"initiator too long", orchestration.CreateTaskRequest{Namespace: "examples", Name: "linear_workflow",
			Initiator: strings.Repeat("i", 129)}, errs.Invalid, []string{"initiator"}},
		{"unknown template", orchestration.CreateTaskRequest{Namespace: "examples", Name: "nope"},
			errs.NotFound, []string{"examples/nope"}},
		{"unknown version", orchestration.CreateTaskRequest{Namespace: "examples", Name: "linear_workflow", Version: "9.9.9"},
			errs.NotFound, []string{"linear_workflow@9.9.9"}},
		{"no name", orchestration.CreateTaskRequest{}, errs.Invalid, []string{"name"}},
	}
	for _, tc := range cases {
		_, created, err := orchestration.NewService(db, reg).CreateTask(ctx, tc.req)
		if !errs.Is(err, tc.is) || created {
			t.Errorf("%s: err = %v, created %v; want %v", tc.name, err, created, tc.is)
			continue
		}
		for _, m := range tc.mention {
			if !strings.Contains(err.Error(), m) {
				t.Errorf("%s: error %q does not mention %q", tc.name, err, m)
			}
		}
	}
	if after := rowCounts(t, db); after != before {
		t.Fatalf("refused requests wrote rows: %s → %s", before, after)
	}
}

func TestCreateTaskIdempotencyKey(t *testing.T) {
	t.Parallel()
	db := dbtest.New(t)
	reg := fixture.Templates(t)
	ctx := context.Background()
	req := orchestration.CreateTaskRequest{Namespace: "examples", Name: "diamond_workflow", IdempotencyKey: strings.Repeat("k", 500)}
	first, created, err := orchestration.NewService(db, reg).CreateTask(ctx, req)
	if err != nil || !created || len(first.IdentityHash) > 128 {
		t.Fatalf("first = %+v, %v, %v", first, created, err)
	}
	again, created, err := orchestration.NewService(db, reg).CreateTask(ctx, req)
	if err != nil || created || again.TaskID != first.TaskID {
		t.Fatalf("second = task %d, created %v, %v; want task %d, created false", again.TaskID, created, err, first.TaskID)
	}
	before := rowCounts(t, db)
	other := req
	other.Name = "linear_workflow"
	if _, _, err := orchestration.NewService(db, reg).CreateTask(ctx, other); !errs.Is(err, errs.Conflict) ||
		!strings.Contains(err.Error(), fmt.Sprint(first.TaskID)) {
		t.Fatalf("key reused for another template: err = %v", err)
	}
	if after := rowCounts(t, db); after != before {
		t.Fatalf("refused request wrote rows: %s → %s", before, after)
	}
}

func TestCreateTaskConcurrentIdempotentCreates(t *testing.T) {
	t.Parallel()
	db := dbtest.New(t)
	reg := fixture.Templates(t)
	const n = 10
	start := make(chan struct{})
	type result struct {
		id      int64
		created bool
		err     error
	}
	results := make(chan result, n)
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			task, created, err := orchestration.NewService(db, reg).CreateTask(context.Background(), orchestration.CreateTaskRequest{
				Namespace: "examples", Name: "mixed_workflow", IdempotencyKey: "order-42"})
			results <- result{task.TaskID, created, err}
		}()
	}
	close(start)
	wg.Wait()
	close(results)
	var ids []int64
	createdCount := 0
	for r := range results {
		if r.err != nil {
			t.Fatalf("concurrent CreateTask: %v", r.err)
		}
		ids = append(ids, r.id)
		if r.created {
			createdCount++
		}
	}
	slices.Sort(ids)
	if ids[0] != ids[n-1] || createdCount != 1 {
		t.Fatalf("ids %v, %d created; want one task created once", ids, createdCount)
	}
	var tasks, steps, edges int64
	db.Raw(`SELECT count(*) FROM tasker_tasks`).Scan(&tasks)
	db.Raw(`SELECT count(*) FROM tasker_workflow_steps`).Scan(&steps)
	db.Raw(`SELECT count(*) FROM tasker_workflow_step_edges`).Scan(&edges)
	if tasks != 1 || steps != 9 || edges != 9 {
		t.Fatalf("tasks %d, steps %d, edges %d; want 1, 9, 9", tasks, steps, edges)
	}
	var namedTasks int64
	db.Raw(`SELECT count(*) FROM tasker_named_tasks`).Scan(&namedTasks)
	if namedTasks != 1 {
		t.Fatalf("%d named tasks registered, want 1", namedTasks)
	}
}

// counter counts the statements a connection pool runs.
type counter struct{ n atomic.Int64 }

// countedDB opens a fresh migrated database whose statements c counts.
func countedDB(t *testing.T) (*gorm.DB, *counter) {
	t.Helper()
	c := &counter{}
	db, err := database.Open(context.Background(), dbtest.NewURL(t), database.Options{Tracer: c})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = database.Close(db) })
	return db, c
}

func (c *counter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	c.n.Add(1)
	return ctx
}

func (c *counter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// layered builds a template of width*depth steps where every step depends on every step of the
// layer above.
func layered(t *testing.T, reg *template.Registry, name string, width, depth int) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "namespace: big\nname: %s\nversion: 1.0.0\nsteps:\n", name)
	for l := range depth {
		for w := range width {
			fmt.Fprintf(&b, "  - name: s_%d_%d\n    handler: {kind: noop}\n", l, w)
			if l > 0 {
				b.WriteString("    depends_on: [")
				for p := range width {
					if p > 0 {
						b.WriteString(", ")
					}
					fmt.Fprintf(&b, "s_%d_%d", l-1, p)
				}
				b.WriteString("]\n")
			}
		}
	}
	tpl, err := template.Parse(name+".yaml", []byte(b.String()), reg.Handlers())
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.Add(tpl); err != nil {
		t.Fatal(err)
	}
}

func TestCreateTaskIsSetBased(t *testing.T) {
	t.Parallel()
	db, c := countedDB(t)
	reg := template.NewRegistry(handler.NewBuiltinRegistry())
	layered(t, reg, "small", 2, 2)   // 4 steps, 4 edges
	layered(t, reg, "large", 10, 30) // 300 steps, 2900 edges
	ctx := context.Background()
	statements := map[string]int64{}
	for _, name := range []string{"small", "large"} {
		tpl, _ := reg.Lookup("big", name, "")
		if _, err := template.Register(ctx, db, tpl); err != nil {
			t.Fatal(err)
		}
		before := c.n.Load()
		task, _, err := orchestration.NewService(db, reg).CreateTask(ctx, orchestration.CreateTaskRequest{Namespace: "big", Name: name})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		statements[name] = c.n.Load() - before
		var steps, edges int64
		db.Raw(`SELECT count(*) FROM tasker_workflow_steps WHERE task_id = ?`, task.TaskID).Scan(&steps)
		db.Raw(`SELECT count(*) FROM tasker_workflow_step_edges e JOIN tasker_workflow_steps s ON s.workflow_step_id = e.to_step_id
			WHERE s.task_id = ?`, task.TaskID).Scan(&edges)
		if want := len(tpl.Steps); steps != int64(want) || edges != int64(len(tpl.Edges())) {
			t.Fatalf("%s: %d steps, %d edges; want %d, %d", name, steps, edges, want, len(tpl.Edges()))
		}
	}
	if statements["small"] != statements["large"] || statements["large"] > 12 {
		t.Fatalf("statements per CreateTask: %v; want the same small number for 4 and 300 steps", statements)
	}
}
