package migrate

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/pressly/goose/v3"

	"github.com/taskerhq/tasker/db"
)

// viewMigration is a Go migration that installs versioned SQL files from db/views (or another
// embedded folder) in one transaction. Its down step runs the given SQL, typically a DROP or the
// previous version's file.
type viewMigration struct {
	version int64
	up      []string // paths inside db.Views, applied in order
	down    string   // literal SQL run on the way down
	// downUp are paths inside db.Views applied after down: the previous versions of the views
	// that down dropped.
	downUp []string
}

// viewMigrations lists, in version order, the migrations that install live view definitions.
// Versions interleave with db/migrations/*.sql; goose refuses a duplicate version. The live
// views of SEMANTICS §3-6 start at version 10; the execution context reads the readiness view
// and the summary reads both, so they are installed in that order and dropped in reverse.
var viewMigrations = []viewMigration{
	{
		version: 10,
		up:      []string{"views/tasker_step_readiness_statuses_v01.sql"},
		down:    "DROP VIEW tasker_step_readiness_statuses",
	},
	{
		version: 11,
		up:      []string{"views/tasker_step_dag_relationships_v01.sql"},
		down:    "DROP VIEW tasker_step_dag_relationships",
	},
	{
		version: 12,
		up:      []string{"views/tasker_task_execution_contexts_v01.sql"},
		down:    "DROP VIEW tasker_task_execution_contexts",
	},
	{
		version: 13,
		up:      []string{"views/tasker_task_workflow_summaries_v01.sql"},
		down:    "DROP VIEW tasker_task_workflow_summaries",
	},
	{
		// Version 2 appends processed and in_process; PostgreSQL cannot drop columns of a
		// view with CREATE OR REPLACE, so the way down recreates the dependent views on v01.
		version: 33,
		up:      []string{"views/tasker_step_readiness_statuses_v02.sql"},
		down: "DROP VIEW tasker_task_workflow_summaries; DROP VIEW tasker_task_execution_contexts; " +
			"DROP VIEW tasker_step_readiness_statuses",
		downUp: []string{"views/tasker_step_readiness_statuses_v01.sql",
			"views/tasker_task_execution_contexts_v01.sql", "views/tasker_task_workflow_summaries_v01.sql"},
	},
}

func goMigrations() []*goose.Migration {
	out := make([]*goose.Migration, 0, len(viewMigrations))
	for _, vm := range viewMigrations {
		vm := vm
		up := &goose.GoFunc{RunTx: func(ctx context.Context, tx *sql.Tx) error {
			return installViews(ctx, tx, vm.up)
		}}
		down := &goose.GoFunc{RunTx: func(ctx context.Context, tx *sql.Tx) error {
			if _, err := tx.ExecContext(ctx, vm.down); err != nil {
				return err
			}
			return installViews(ctx, tx, vm.downUp)
		}}
		out = append(out, goose.NewGoMigration(vm.version, up, down))
	}
	return out
}

// installViews runs the view files at paths (inside db.Views) in order.
func installViews(ctx context.Context, tx *sql.Tx, paths []string) error {
	for _, path := range paths {
		body, err := db.Views.ReadFile(path)
		if err != nil {
			return fmt.Errorf("reading %s: %w", path, err)
		}
		if _, err := tx.ExecContext(ctx, string(body)); err != nil {
			return fmt.Errorf("installing %s: %w", path, err)
		}
	}
	return nil
}
