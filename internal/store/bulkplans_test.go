package store

import (
	"context"
	"testing"
)

// TestBulkWritesPlanTheirRowStatementsOnce: a task-creation batch (PlanBulkWrite) and a
// retention delete (DeleteRetainedTasks) run the rest of their transaction with generic plans
// and sequential and bitmap scans off, so that the statements PostgreSQL runs for every row
// they write (foreign-key checks, cascades) are planned once per connection; the connection's
// own settings are back after the transaction. The retention delete sets them even when it
// deletes nothing.
func TestBulkWritesPlanTheirRowStatementsOnce(t *testing.T) {
	t.Parallel()
	st, _ := open(t)
	ctx := context.Background()
	before := st.settings(t, ctx)
	const want = "off,off,off,on,force_generic_plan"
	for name, write := range map[string]func(tx *Store) error{
		"creation": func(tx *Store) error {
			trusted, err := tx.PlanBulkWrite(ctx, true)
			if err == nil && trusted {
				t.Errorf("the test databases' owner was trusted to skip foreign-key checks")
			}
			return err
		},
		"retention": func(tx *Store) error {
			n, err := tx.DeleteRetainedTasks(ctx, []int64{1, 2}, []string{"no_such_read_model"})
			if err == nil && n != 0 {
				t.Errorf("deleted %d tasks of an empty database", n)
			}
			return err
		},
	} {
		var during string
		if err := st.Tx(ctx, func(tx *Store) error {
			if err := write(tx); err != nil {
				return err
			}
			during = tx.settings(t, ctx)
			return nil
		}); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if during != want {
			t.Errorf("%s: settings %s in its transaction, want %s", name, during, want)
		}
		if after := st.settings(t, ctx); after != before {
			t.Errorf("%s: settings %s after its transaction, want %s as before", name, after, before)
		}
	}
}
