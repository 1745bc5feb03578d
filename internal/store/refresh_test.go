package store_test

import (
	"testing"

	"github.com/taskerhq/tasker/db"
	"github.com/taskerhq/tasker/internal/store"
)

// Every materialized projection of the catalogue has the statements that fold changes into it,
// and nothing else has any.
func TestEveryMaterializedProjectionFoldsIn(t *testing.T) {
	for _, name := range db.Names(db.MaterializedView) {
		if len(store.FoldStatements(name)) == 0 {
			t.Errorf("%s: no statement folds changes in", name)
		}
	}
	for _, name := range db.Names(db.LiveView) {
		if n := len(store.FoldStatements(name)); n != 0 {
			t.Errorf("live view %s: %d statements fold changes in", name, n)
		}
	}
}
