package models_test

import (
	"context"
	"reflect"
	"testing"

	"gorm.io/gorm"

	"github.com/taskerhq/tasker/internal/database"
	"github.com/taskerhq/tasker/internal/models"
	"github.com/taskerhq/tasker/internal/testkit/fixture"
)

// gormDetail is models.StepDetail as GORM reads a row of tasker_read_step_details.
type gormDetail struct {
	Step      models.StepRecord          `gorm:"embedded;embeddedPrefix:step_"`
	Readiness models.StepReadinessStatus `gorm:"embedded;embeddedPrefix:readiness_"`
	Dag       models.StepDagRelationship `gorm:"embedded;embeddedPrefix:dag_"`
}

// The readers that scan without GORM (rowscan.go) return exactly what GORM's reflection reads
// from the same statements, over a generated database of every scenario.
func TestScannedReadersAreGORMsRows(t *testing.T) {
	t.Parallel()
	db := fixture.Generated(t, 13, 2000)
	var taskIDs, stepIDs []int64
	if err := db.Raw(`SELECT task_id FROM tasker_tasks ORDER BY task_id`).Scan(&taskIDs).Error; err != nil {
		t.Fatal(err)
	}
	if err := db.Raw(`SELECT workflow_step_id FROM tasker_workflow_steps ORDER BY workflow_step_id DESC`).Scan(&stepIDs).Error; err != nil {
		t.Fatal(err)
	}
	if len(taskIDs) < 50 || len(stepIDs) < 1500 {
		t.Fatalf("%d tasks, %d steps generated", len(taskIDs), len(stepIDs))
	}
	ctx := context.Background()
	byTask, byStep := database.Array[int64](taskIDs), database.Array[int64](stepIDs)

	sameAsGORM(t, db, "TasksByIDs", models.TasksByIDs, taskIDs, `SELECT * FROM tasker_read_tasks(?)`, byTask)
	sameAsGORM(t, db, "StepsByIDs", models.StepsByIDs, stepIDs, `SELECT * FROM tasker_read_steps(false, ?)`, byStep)
	sameAsGORM(t, db, "StepsByTaskIDs", models.StepsByTaskIDs, taskIDs, `SELECT * FROM tasker_read_steps(true, ?)`, byTask)
	sameAsGORM(t, db, "ReadinessByStepIDs", models.ReadinessByStepIDs, stepIDs, `SELECT * FROM tasker_read_readiness(false, ?)`, byStep)
	sameAsGORM(t, db, "ReadinessByTaskIDs", models.ReadinessByTaskIDs, taskIDs, `SELECT * FROM tasker_read_readiness(true, ?)`, byTask)
	sameAsGORM(t, db, "DagByStepIDs", models.DagByStepIDs, stepIDs, `SELECT * FROM tasker_read_dags(false, ?)`, byStep)
	sameAsGORM(t, db, "DagByTaskIDs", models.DagByTaskIDs, taskIDs, `SELECT * FROM tasker_read_dags(true, ?)`, byTask)

	details := readAll(t, db, models.StepDetailsByTaskIDs, taskIDs)
	var want []gormDetail
	if err := db.Raw(`SELECT * FROM tasker_read_step_details(true, ?)`, byTask).Scan(&want).Error; err != nil {
		t.Fatal(err)
	}
	if len(details) != len(want) {
		t.Fatalf("StepDetailsByTaskIDs: %d rows, GORM reads %d", len(details), len(want))
	}
	for i := range want {
		if got := (gormDetail{details[i].Step, details[i].Readiness, details[i].Dag}); !reflect.DeepEqual(got, want[i]) {
			t.Fatalf("StepDetailsByTaskIDs, row %d:\n%+v\nGORM reads\n%+v", i, got, want[i])
		}
	}

	for _, f := range []models.StepFilter{{}, {Ready: ptr(true)}, {BlockingReasons: []models.BlockingReason{models.ReasonDependenciesNotSatisfied}}} {
		got, err := models.ReadinessPage(ctx, db, f, 0, 500)
		if err != nil {
			t.Fatal(err)
		}
		var want []models.StepReadinessStatus
		q, args := models.ReadinessPageSQL(f, 0, 500)
		if err := db.Raw(q, args...).Scan(&want).Error; err != nil {
			t.Fatal(err)
		}
		if len(got) == 0 || !reflect.DeepEqual(got, want) {
			t.Errorf("ReadinessPage(%+v): %d rows, GORM reads %d, or they differ", f, len(got), len(want))
		}
	}

	// A row of another width than the reader's is an error, never a shifted row.
	if _, err := models.ScanTasks(ctx, db, `SELECT *, 1 FROM tasker_read_tasks($1)`, taskIDs[:1]); err == nil {
		t.Error("a task row with one column too many was read")
	}
}

// sameAsGORM checks that read returns for ids exactly the rows GORM scans from query with arg.
func sameAsGORM[T any](t *testing.T, db *gorm.DB, name string, read func(context.Context, *gorm.DB, []int64) ([]T, error), ids []int64, query string, arg any) {
	t.Helper()
	got := readAll(t, db, read, ids)
	var want []T
	if err := db.Raw(query, arg).Scan(&want).Error; err != nil {
		t.Fatal(err)
	}
	if len(got) < len(ids)/2 || len(got) != len(want) {
		t.Fatalf("%s: %d rows, GORM reads %d", name, len(got), len(want))
	}
	for i := range want {
		if !reflect.DeepEqual(got[i], want[i]) {
			t.Fatalf("%s, row %d:\n%+v\nGORM reads\n%+v", name, i, got[i], want[i])
		}
	}
}

func ptr[T any](v T) *T { return &v }
