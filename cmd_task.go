package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/taskerhq/tasker/internal/config"
	"github.com/taskerhq/tasker/internal/database"
	"github.com/taskerhq/tasker/internal/handler"
	"github.com/taskerhq/tasker/internal/orchestration"
	"github.com/taskerhq/tasker/internal/template"
	"github.com/taskerhq/tasker/internal/textcheck"
)

// loadTemplates returns the templates of dir, or the templates shipped in the binary when dir
// is empty.
func loadTemplates(dir string) (*template.Registry, error) {
	if dir == "" {
		return template.Shipped(handler.NewBuiltinRegistry())
	}
	reg := template.NewRegistry(handler.NewBuiltinRegistry())
	return reg, reg.LoadDir(dir)
}

// runRunTask creates one task from a template and prints its id. The workers run it.
func runRunTask(ctx context.Context, cfg config.Config, args []string, out io.Writer, log *slog.Logger) error {
	fs := newFlagSet("run-task", "-template namespace/name[@version] [-context JSON] [flags]",
		"Create a task from a template and print its id; the server's workers run it.", out)
	databaseFlags(fs, &cfg)
	dir := fs.String("templates-dir", os.Getenv("TASKER_TEMPLATES_DIR"),
		"folder of YAML task templates (env TASKER_TEMPLATES_DIR); empty uses the templates shipped in the binary")
	ref := fs.String("template", "", "the template: namespace/name[@version] (no version: the newest release)")
	taskContext := fs.String("context", "{}", "the task context, a JSON object")
	key := fs.String("idempotency-key", "", "de-duplication key: the same key returns the task it created")
	initiator := fs.String("initiator", os.Getenv("USER"), "who asks for the task")
	reason := fs.String("reason", "", "why the task is run")
	tags := fs.String("tags", "{}", "tags, a JSON object or array")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	if *ref == "" {
		return errors.New("run-task: -template is required (namespace/name[@version], e.g. examples/linear_workflow)")
	}
	// Text PostgreSQL cannot store, or that decoding would silently change, is refused
	// before anything is read or written (internal/textcheck).
	for flagName, v := range map[string]string{"-context": *taskContext, "-tags": *tags} {
		if p := textcheck.JSON(flagName, []byte(v)); p != nil {
			return fmt.Errorf("run-task: %w: %s", orchestration.ErrValidation, p)
		}
	}
	for flagName, v := range map[string]string{"-idempotency-key": *key, "-initiator": *initiator, "-reason": *reason} {
		if reason := textcheck.String(v); reason != "" {
			return fmt.Errorf("run-task: %w: %s %s", orchestration.ErrValidation, flagName, reason)
		}
	}
	namespace, name, version, err := template.ParseRef(*ref)
	if err != nil {
		return err
	}
	reg, err := loadTemplates(*dir)
	if err != nil {
		return fmt.Errorf("loading templates: %w", err)
	}
	dbURL, err := resolveDatabaseURL(ctx, cfg)
	if err != nil {
		return err
	}
	gdb, err := database.Open(ctx, dbURL, database.Options{MaxOpenConns: 2})
	if err != nil {
		return err
	}
	defer database.Close(gdb)
	task, created, err := orchestration.CreateTask(ctx, gdb, reg, orchestration.CreateTaskRequest{
		Namespace: namespace, Name: name, Version: version,
		Context: json.RawMessage(*taskContext), Tags: json.RawMessage(*tags),
		Initiator: *initiator, SourceSystem: "cli", Reason: *reason, IdempotencyKey: *key,
	})
	if err != nil {
		return err
	}
	log.Info("run-task: task ready", "task_id", task.TaskID, "template", *ref, "created", created)
	fmt.Fprintln(out, task.TaskID)
	return nil
}
