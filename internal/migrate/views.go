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
}

// viewMigrations lists, in version order, the migrations that install live view definitions.
// Versions interleave with db/migrations/*.sql; goose refuses a duplicate version.
var viewMigrations = []viewMigration{}

func goMigrations() []*goose.Migration {
	out := make([]*goose.Migration, 0, len(viewMigrations))
	for _, vm := range viewMigrations {
		vm := vm
		up := &goose.GoFunc{RunTx: func(ctx context.Context, tx *sql.Tx) error {
			for _, path := range vm.up {
				body, err := db.Views.ReadFile(path)
				if err != nil {
					return fmt.Errorf("reading %s: %w", path, err)
				}
				if _, err := tx.ExecContext(ctx, string(body)); err != nil {
					return fmt.Errorf("installing %s: %w", path, err)
				}
			}
			return nil
		}}
		down := &goose.GoFunc{RunTx: func(ctx context.Context, tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, vm.down)
			return err
		}}
		out = append(out, goose.NewGoMigration(vm.version, up, down))
	}
	return out
}
