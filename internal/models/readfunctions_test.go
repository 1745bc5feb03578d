package models_test

import (
	"context"
	"reflect"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/taskerhq/tasker/db"
	"github.com/taskerhq/tasker/internal/database"
	"github.com/taskerhq/tasker/internal/models"
	"github.com/taskerhq/tasker/internal/testkit/fixture"
)

// The readers of the live views go through functions that return the view's rows
// (db/migrations/00037_read_functions.sql). Each must return exactly what its view holds: the
// same columns, by name and in order, and the same rows in the same order.
func TestReadFunctionsReturnTheirViews(t *testing.T) {
	e := newEnv(t)
	diamond, four := e.b.Task(fixture.Diamond), e.b.Task(fixture.FourStep)
	diamond.Complete("start_workflow")
	four.Complete("one")
	tasks := []int64{diamond.ID, four.ID}
	steps := append(diamond.StepIDs("start_workflow", "merge_branches"), four.StepIDs("two", "four")...)
	for _, c := range []struct {
		view, filter, order, call string
		ids                       []int64
	}{
		{db.StepReadinessStatuses, "task_id", "task_id, workflow_step_id", "tasker_read_readiness(true, $1)", tasks},
		{db.StepReadinessStatuses, "workflow_step_id", "workflow_step_id", "tasker_read_readiness(false, $1)", steps},
		{db.StepDagRelationships, "task_id", "task_id, workflow_step_id", "tasker_read_dags(true, $1)", tasks},
		{db.StepDagRelationships, "workflow_step_id", "workflow_step_id", "tasker_read_dags(false, $1)", steps},
		{db.TaskExecutionContexts, "task_id", "task_id", "tasker_read_execution_contexts($1)", tasks},
		{db.TaskWorkflowSummaries, "task_id", "task_id", "tasker_read_workflow_summaries($1)", tasks},
	} {
		var want, got string
		arg := database.Array[int64](c.ids)
		if err := e.db.Raw(`SELECT coalesce(json_agg(row_to_json(v))::text, '') FROM (SELECT * FROM `+c.view+
			` WHERE `+c.filter+` = ANY($1) ORDER BY `+c.order+`) v`, arg).Row().Scan(&want); err != nil {
			t.Fatalf("reading %s: %v", c.view, err)
		}
		if err := e.db.Raw(`SELECT coalesce(json_agg(row_to_json(f))::text, '') FROM `+c.call+` f`, arg).Row().Scan(&got); err != nil {
			t.Fatalf("calling %s: %v", c.call, err)
		}
		if want == "" || got != want {
			t.Errorf("%s returns\n%s\nits view %s by %s\n%s", c.call, got, c.view, c.filter, want)
		}
	}
}

// A step's details (tasker_read_step_details) are the step, its readiness row and its DAG
// row exactly as the separate readers return them, in the same order.
func TestStepDetailsAreTheStepReadinessAndDag(t *testing.T) {
	e := newEnv(t)
	diamond, four := e.b.Task(fixture.Diamond), e.b.Task(fixture.FourStep)
	diamond.Complete("start_workflow", "branch_one_process")
	diamond.Fail("branch_one_validate", time.Second)
	four.Complete("one")
	tasks := []int64{four.ID, diamond.ID}
	details := readAll(t, e.db, models.StepDetailsByTaskIDs, tasks)
	steps := readAll(t, e.db, models.StepsByTaskIDs, tasks)
	readiness := readAll(t, e.db, models.ReadinessByTaskIDs, tasks)
	dags := readAll(t, e.db, models.DagByTaskIDs, tasks)
	if len(details) != len(steps) || len(details) != len(readiness) || len(details) != len(dags) || len(details) < 8 {
		t.Fatalf("%d details for %d steps, %d readiness rows, %d DAG rows", len(details), len(steps), len(readiness), len(dags))
	}
	for i := range details {
		if !reflect.DeepEqual(details[i].Step, steps[i]) {
			t.Errorf("step %d: details say\n%+v\nStepsByTaskIDs says\n%+v", i, details[i].Step, steps[i])
		}
		if r := details[i].Readiness; !reflect.DeepEqual(r, readiness[i]) {
			t.Errorf("step %d: details say readiness\n%+v\nReadinessByTaskIDs says\n%+v", i, r, readiness[i])
		}
		if d := details[i].Dag; !reflect.DeepEqual(d, dags[i]) {
			t.Errorf("step %d: details say DAG\n%+v\nDagByTaskIDs says\n%+v", i, d, dags[i])
		}
	}
}

// readAll reads the rows of ids with read, failing the test on an error.
func readAll[T any](t *testing.T, db *gorm.DB, read func(context.Context, *gorm.DB, []int64) ([]T, error), ids []int64) []T {
	t.Helper()
	rows, err := read(context.Background(), db, ids)
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

// ExecutionContextOf derives from a task's step details exactly the task's row of
// tasker_task_execution_contexts, over a generated database of every scenario.
func TestExecutionContextOfIsTheView(t *testing.T) {
	t.Parallel()
	db := fixture.Generated(t, 7, 3000)
	var ids []int64
	if err := db.Raw(`SELECT task_id FROM tasker_tasks ORDER BY task_id`).Scan(&ids).Error; err != nil {
		t.Fatal(err)
	}
	tasks := readAll(t, db, models.TasksByIDs, ids)
	want := readAll(t, db, models.ExecutionContextsByTaskIDs, ids)
	byTask := map[int64][]models.StepDetail{}
	for _, d := range readAll(t, db, models.StepDetailsByTaskIDs, ids) {
		byTask[d.Step.TaskID] = append(byTask[d.Step.TaskID], d)
	}
	if len(tasks) != len(want) || len(tasks) < 100 {
		t.Fatalf("%d tasks, %d execution contexts", len(tasks), len(want))
	}
	statuses, health := map[models.ExecutionStatus]bool{}, map[models.HealthStatus]bool{}
	for i, tk := range tasks {
		got := models.ExecutionContextOf(tk.TaskID, tk.NamedTaskID, tk.Status, byTask[tk.TaskID])
		if !reflect.DeepEqual(got, want[i]) {
			t.Errorf("task %d: derived\n%+v\nthe view says\n%+v", tk.TaskID, got, want[i])
		}
		statuses[want[i].ExecutionStatus], health[want[i].HealthStatus] = true, true
	}
	if len(statuses) < 4 || len(health) < 3 {
		t.Errorf("the data cover execution statuses %v and health %v only", statuses, health)
	}
}
