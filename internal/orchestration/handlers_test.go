package orchestration_test

import (
	"context"
	"sync"
	"testing"

	"github.com/taskerhq/tasker/internal/handler"
	"github.com/taskerhq/tasker/internal/models"
	"github.com/taskerhq/tasker/internal/orchestration"
	"github.com/taskerhq/tasker/internal/store"
	"github.com/taskerhq/tasker/internal/testkit/fixture"
)

// Workers that all need the handlers of a named task not loaded yet share one read of its
// configuration; later calls read nothing; every caller gets the step's handler.
func TestConfiguredHandlersReadANamedTaskOnce(t *testing.T) {
	t.Parallel()
	db, count := countedDB(t)
	ctx := context.Background()
	reg := fixture.Templates(t)
	task, _, err := orchestration.NewService(db, reg).CreateTask(ctx,
		orchestration.CreateTaskRequest{Namespace: "examples", Name: "diamond_workflow"})
	if err != nil {
		t.Fatal(err)
	}
	var step string
	if err := db.Model(&models.WorkflowStep{}).Joins("JOIN tasker_named_steps USING (named_step_id)").
		Where("task_id = ?", task.TaskID).Limit(1).Pluck("tasker_named_steps.name", &step).Error; err != nil || step == "" {
		t.Fatalf("reading a step name: %q, %v", step, err)
	}

	handlers := orchestration.NewConfiguredHandlers(handler.NewBuiltinRegistry())
	st := store.New(db)
	before := count.n.Load()
	const workers = 32
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h, timeout, err := handlers.StepHandler(ctx, st, task.NamedTaskID, step)
			if err == nil && (h == nil || timeout <= 0) {
				t.Errorf("handler %v, timeout %v", h, timeout)
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := count.n.Load() - before; n != 1 {
		t.Errorf("%d statements for %d concurrent callers, want 1 read of the configuration", n, workers)
	}
	if _, _, err := handlers.StepHandler(ctx, st, task.NamedTaskID, step); err != nil {
		t.Fatal(err)
	}
	if n := count.n.Load() - before; n != 1 {
		t.Errorf("%d statements after a cached call, want still 1", n)
	}
}
