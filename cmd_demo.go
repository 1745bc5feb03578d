package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"gorm.io/gorm"

	"github.com/taskerhq/tasker/internal/config"
	"github.com/taskerhq/tasker/internal/orchestration"
	"github.com/taskerhq/tasker/internal/template"
)

// runDemo is `tasker serve` that, once serving, creates one task of each demo template, so the
// playground shows tasks that succeed, retry and fail on a fresh machine. The tasks carry
// fixed idempotency keys: running the demo again on the same database creates nothing new.
func runDemo(ctx context.Context, cfg config.Config, args []string, out io.Writer, log *slog.Logger) error {
	return serve(ctx, cfg, args, out, log, func(ctx context.Context, db *gorm.DB, reg *template.Registry) error {
		return createDemoTasks(ctx, db, reg, log)
	})
}

// demoTasks are the templates the demo starts, one task each: five that run to complete
// through their injected failures and one that ends blocked by failures.
var demoTasks = []struct{ namespace, name string }{
	{"examples", "linear_workflow"},
	{"examples", "diamond_workflow"},
	{"examples", "parallel_merge_workflow"},
	{"examples", "tree_workflow"},
	{"examples", "mixed_workflow"},
	{"examples", "payment_failures"},
}

func createDemoTasks(ctx context.Context, db *gorm.DB, reg *template.Registry, log *slog.Logger) error {
	for _, d := range demoTasks {
		task, created, err := orchestration.CreateTask(ctx, db, reg, orchestration.CreateTaskRequest{
			Namespace:      d.namespace,
			Name:           d.name,
			Initiator:      "demo",
			SourceSystem:   "tasker demo",
			Reason:         "show a real workflow in the playground",
			IdempotencyKey: "demo:" + d.namespace + "/" + d.name,
		})
		if err != nil {
			return fmt.Errorf("creating demo task %s/%s: %w", d.namespace, d.name, err)
		}
		log.Info("demo: task", "template", d.namespace+"/"+d.name, "task_id", task.TaskID, "created", created)
	}
	return nil
}
