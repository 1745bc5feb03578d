package server_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/taskerhq/tasker/graph/server"
	"github.com/taskerhq/tasker/internal/orchestration"
)

const createTasks = `mutation($in: [CreateTaskInput!]!) { createTasks(inputs: $in) {
	ok createdCount items { index created task { id status namedTask { name } steps { name } } error { code field message } } } }`

type createdTasks struct {
	CreateTasks struct {
		Ok           bool
		CreatedCount int
		Items        []struct {
			Index   int
			Created bool
			Task    *struct {
				ID, Status string
				NamedTask  struct{ Name string }
				Steps      []struct{ Name string }
			}
			Error *struct{ Code, Field, Message string }
		}
	}
}

func TestCreateTasks(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	linear := func(key string) map[string]any {
		in := map[string]any{"namespace": "examples", "name": "linear_workflow"}
		if key != "" {
			in["idempotencyKey"] = key
		}
		return in
	}
	var out createdTasks
	e.data(createTasks, map[string]any{"in": []any{linear("a"), linear(""), linear("a"),
		map[string]any{"namespace": "examples", "name": "diamond_workflow"}}}, &out)
	got := out.CreateTasks
	if !got.Ok || got.CreatedCount != 3 || len(got.Items) != 4 {
		t.Fatalf("createTasks = %+v", got)
	}
	for i, it := range got.Items {
		if it.Index != i || it.Task == nil || it.Error != nil || it.Task.Status != "PENDING" || len(it.Task.Steps) == 0 {
			t.Fatalf("item %d = %+v", i, it)
		}
	}
	if got.Items[0].Task.ID != got.Items[2].Task.ID || !got.Items[0].Created || got.Items[2].Created ||
		got.Items[3].Task.NamedTask.Name != "diamond_workflow" {
		t.Fatalf("items = %+v; want inputs 0 and 2 to share one task", got.Items)
	}

	tasks := e.count("tasker_tasks")
	var refused createdTasks
	e.data(createTasks, map[string]any{"in": []any{
		linear("b"),
		map[string]any{"namespace": "examples", "name": "linear_workflow", "context": map[string]any{"batch_size": 0}},
		map[string]any{"namespace": "examples", "name": "no_such_workflow"},
		map[string]any{"namespace": "examples", "name": "diamond_workflow", "idempotencyKey": "a"},
		map[string]any{"namespace": "examples", "name": "linear_workflow", "sourceSystem": strings.Repeat("s", 200)},
	}}, &refused)
	r := refused.CreateTasks
	want := map[int][2]string{1: {"VALIDATION", "context"}, 2: {"NOT_FOUND", "name"}, 4: {"VALIDATION", "sourceSystem"}}
	if r.Ok || r.CreatedCount != 0 || len(r.Items) != 5 {
		t.Fatalf("refused batch = %+v", r)
	}
	for i, it := range r.Items {
		w, bad := want[i]
		switch {
		case it.Task != nil || it.Created:
			t.Errorf("item %d of a refused batch has a task: %+v", i, it)
		case bad && (it.Error == nil || it.Error.Code != w[0] || it.Error.Field != w[1] || it.Error.Message == ""):
			t.Errorf("item %d: error %+v, want code %s on field %s", i, it.Error, w[0], w[1])
		case !bad && it.Error != nil:
			t.Errorf("item %d: unexpected error %+v", i, it.Error)
		}
	}
	// With the batch's own inputs right, the key of another template's task is a conflict.
	e.data(createTasks, map[string]any{"in": []any{linear("c"),
		map[string]any{"namespace": "examples", "name": "diamond_workflow", "idempotencyKey": "a"}}}, &refused)
	if it := refused.CreateTasks.Items[1]; refused.CreateTasks.Ok || it.Error == nil || it.Error.Code != "CONFLICT" ||
		it.Error.Field != "idempotencyKey" {
		t.Fatalf("key of another template: %+v", refused.CreateTasks)
	}

	big := make([]any, orchestration.MaxBatch+1)
	for i := range big {
		big[i] = linear("")
	}
	e.oneError(`mutation($in: [CreateTaskInput!]!) { createTasks(inputs: $in) { ok } }`, map[string]any{"in": big}, "VALIDATION")
	if n := e.count("tasker_tasks"); n != tasks {
		t.Fatalf("refused batches wrote tasks: %d -> %d", tasks, n)
	}
}

// TestCreateTasksComplexityCountsInputs: the same selection is admitted for a small batch and
// refused, before anything runs, for a batch whose inputs times the selection exceed the limit.
func TestCreateTasksComplexityCountsInputs(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *server.Config) { c.MaxComplexity = 100 })
	batch := func(n int) []any {
		in := make([]any, n)
		for i := range in {
			in[i] = map[string]any{"namespace": "examples", "name": "linear_workflow", "idempotencyKey": fmt.Sprint("k", i)}
		}
		return in
	}
	const q = `mutation($in: [CreateTaskInput!]!) { createTasks(inputs: $in) { ok items { index task { id status } } } }`
	var out createdTasks
	e.data(q, map[string]any{"in": batch(5)}, &out)
	if !out.CreateTasks.Ok || len(out.CreateTasks.Items) != 5 {
		t.Fatalf("small batch: %+v", out)
	}
	tasks := e.count("tasker_tasks")
	e.oneError(q, map[string]any{"in": batch(40)}, "COMPLEXITY_LIMIT_EXCEEDED")
	if n := e.count("tasker_tasks"); n != tasks {
		t.Fatalf("a refused operation wrote tasks: %d -> %d", tasks, n)
	}
}
