package main

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/taskerhq/tasker/internal/dbtest"
)

func TestDemoCreatesOneTaskPerDemoTemplateOnce(t *testing.T) {
	t.Parallel()
	db := dbtest.New(t)
	reg, err := loadTemplates("")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if err := reg.RegisterAll(ctx, db); err != nil {
		t.Fatal(err)
	}
	for round := 1; round <= 2; round++ {
		if err := createDemoTasks(ctx, db, reg, "http://127.0.0.1:1/demo", log); err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		var n int64
		if err := db.Raw(`SELECT count(*) FROM tasker_tasks WHERE initiator = 'demo'`).Scan(&n).Error; err != nil {
			t.Fatal(err)
		}
		if n != int64(len(demoTasks)) {
			t.Fatalf("round %d: %d demo tasks, want %d", round, n, len(demoTasks))
		}
	}
	var steps int64
	if err := db.Raw(`SELECT count(*) FROM tasker_workflow_steps s JOIN tasker_tasks t USING (task_id)
		JOIN tasker_named_tasks nt USING (named_task_id) WHERE nt.name = 'payment_failures'`).Scan(&steps).Error; err != nil {
		t.Fatal(err)
	}
	if steps != 4 {
		t.Fatalf("payment_failures task has %d steps, want 4", steps)
	}
}
