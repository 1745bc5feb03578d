package models_test

import (
	"context"
	"reflect"
	"testing"

	"github.com/taskerhq/tasker/internal/models"
	"github.com/taskerhq/tasker/internal/testkit/fixture"
)

// A task's detail (tasker_read_task_detail, scanned without GORM) is, part by part, exactly
// what the separate readers return for that task, in their order, over a generated database
// of every scenario; the parts not asked for are nil. (graph/server's tests count its
// statements: one per request.)
func TestTaskDetailIsTheSeparateReaders(t *testing.T) {
	t.Parallel()
	db := fixture.Generated(t, 11, 2000)
	var ids []int64
	if err := db.Raw(`SELECT task_id FROM tasker_tasks ORDER BY task_id`).Scan(&ids).Error; err != nil {
		t.Fatal(err)
	}
	if len(ids) < 50 {
		t.Fatalf("%d tasks generated", len(ids))
	}
	all := models.TaskDetailParts{TaskTransitions: true, Steps: true, Details: true, StepTransitions: true}
	var steps, stepTransitions, failed int
	for _, id := range ids {
		one := []int64{id}
		d, err := models.TaskDetailByID(context.Background(), db, id, all)
		if err != nil {
			t.Fatal(err)
		}
		if d == nil {
			t.Fatalf("task %d: no detail", id)
		}
		if want := readAll(t, db, models.TasksByIDs, one); !reflect.DeepEqual(d.Task, want[0]) {
			t.Errorf("task %d: detail says\n%+v\nTasksByIDs says\n%+v", id, d.Task, want[0])
		}
		if want := readAll(t, db, models.TaskTransitionsByTaskIDs, one); !sameRows(d.Transitions, want) {
			t.Errorf("task %d: detail says transitions\n%+v\nTaskTransitionsByTaskIDs says\n%+v", id, d.Transitions, want)
		}
		if want := readAll(t, db, models.StepDetailsByTaskIDs, one); !sameRows(d.Steps, want) {
			t.Errorf("task %d: detail says steps\n%+v\nStepDetailsByTaskIDs says\n%+v", id, d.Steps, want)
		}
		if want := readAll(t, db, models.StepTransitionsByTaskIDs, one); !sameRows(d.StepTransitions, want) {
			t.Errorf("task %d: detail says step transitions\n%+v\nStepTransitionsByTaskIDs says\n%+v", id, d.StepTransitions, want)
		}
		steps += len(d.Steps)
		stepTransitions += len(d.StepTransitions)
		for _, s := range d.Steps {
			if s.Readiness.LastFailureAt != nil {
				failed++
			}
		}
	}
	if steps < 1500 || stepTransitions < steps || failed == 0 {
		t.Errorf("the data cover %d steps, %d step transitions, %d failed steps only", steps, stepTransitions, failed)
	}

	// Steps without their readiness and DAG rows are StepsByTaskIDs; parts not asked for are nil.
	id := ids[len(ids)/2]
	d, err := models.TaskDetailByID(context.Background(), db, id, models.TaskDetailParts{Steps: true})
	if err != nil {
		t.Fatal(err)
	}
	want := readAll(t, db, models.StepsByTaskIDs, []int64{id})
	if len(d.Steps) != len(want) || d.Transitions != nil || d.StepTransitions != nil {
		t.Fatalf("task %d: %d steps (want %d), transitions %v, step transitions %v", id, len(d.Steps), len(want), d.Transitions, d.StepTransitions)
	}
	for i := range want {
		if s := d.Steps[i]; !reflect.DeepEqual(s.Step, want[i]) || !reflect.DeepEqual(s.Readiness, models.StepReadinessStatus{}) ||
			!reflect.DeepEqual(s.Dag, models.StepDagRelationship{}) {
			t.Errorf("task %d, step %d: detail says\n%+v\nStepsByTaskIDs says\n%+v", id, i, s, want[i])
		}
	}
	d, err = models.TaskDetailByID(context.Background(), db, id, models.TaskDetailParts{})
	if err != nil || d == nil || d.Task.TaskID != id || d.Steps != nil || d.Transitions != nil || d.StepTransitions != nil {
		t.Fatalf("task %d alone: %+v, %v", id, d, err)
	}

	// A task that does not exist has no detail, and that is no error.
	d, err = models.TaskDetailByID(context.Background(), db, ids[len(ids)-1]+1000, all)
	if err != nil || d != nil {
		t.Fatalf("a missing task: %+v, %v", d, err)
	}
}

// sameRows reports whether a and b hold the same rows; no rows is no rows, nil or empty.
func sameRows[T any](a, b []T) bool {
	return len(a) == 0 && len(b) == 0 || reflect.DeepEqual(a, b)
}

func TestParseIDArray(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		in   string
		want []int64
	}{
		{"[]", []int64{}},
		{" [ ] ", []int64{}},
		{"[1]", []int64{1}},
		{"[12, 3,-4]", []int64{12, 3, -4}},
		{"[9223372036854775807]", []int64{9223372036854775807}},
	} {
		got, err := models.ParseIDArray([]byte(c.in))
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("ParseIDArray(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
	}
	for _, in := range []string{"", "null", "[", "[1,]", "[,1]", "[1 2]", "[1.5]", `["1"]`, "[1]x", "{}", "[99999999999999999999]"} {
		if got, err := models.ParseIDArray([]byte(in)); err == nil {
			t.Errorf("ParseIDArray(%q) = %v, want an error", in, got)
		}
	}
}
