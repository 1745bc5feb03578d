package store

import (
	"context"
	"fmt"
	"slices"
	"testing"
)

// TestTaskInactiveFlagsForEveryHistory: whatever a task's state before a statement (no
// transition yet, or any state) and whatever one statement writes for it (one transition to
// any state, or two in a row, as one batch of the state machine writes them: error ->
// pending -> in_progress is one statement), its unprocessed steps end with task_inactive
// true exactly when its new current state is neither pending nor in_progress: the flags the
// trigger of migration 00050 wrote, whatever the trigger skips.
func TestTaskInactiveFlagsForEveryHistory(t *testing.T) {
	s, _ := open(t)
	ctx := context.Background()
	for _, q := range []string{
		`INSERT INTO tasker_dependent_systems (name) VALUES ('flags')`,
		`INSERT INTO tasker_named_tasks (task_namespace_id, name) VALUES (1, 'flags')`,
		`INSERT INTO tasker_named_steps (dependent_system_id, name)
		 SELECT dependent_system_id, 'f' || i FROM tasker_dependent_systems, generate_series(1, 3) i WHERE name = 'flags'`,
	} {
		if err := s.db.Exec(q).Error; err != nil {
			t.Fatalf("%v\n%s", err, q)
		}
	}
	states := []string{"pending", "in_progress", "complete", "error", "cancelled", "resolved_manually"}
	active := func(st string) bool { return st == "pending" || st == "in_progress" }
	// write appends states to the task's history in one statement, each row from the one
	// before (from_state NULL for the first), clearing the current row first, as the state
	// machine writes a batch.
	write := func(task int64, path []string) error {
		return s.Tx(ctx, func(tx *Store) error {
			var from *string
			var key int
			if err := tx.db.Raw(`SELECT (SELECT to_state FROM tasker_task_transitions WHERE task_id = ? AND most_recent),
				coalesce((SELECT max(sort_key) FROM tasker_task_transitions WHERE task_id = ?), 0)`, task, task).
				Row().Scan(&from, &key); err != nil {
				return err
			}
			if err := tx.db.Exec(`UPDATE tasker_task_transitions SET most_recent = false WHERE task_id = ? AND most_recent`,
				task).Error; err != nil {
				return err
			}
			var rows []TransitionRow
			for i, to := range path {
				rows = append(rows, TransitionRow{Owner: task, ToState: to, FromState: from, Metadata: []byte(`{}`),
					SortKey: key + i + 1, MostRecent: i == len(path)-1})
				from = &path[i]
			}
			payload, err := encodeTransitionRows(rows)
			if err != nil {
				return err
			}
			return tx.db.Exec(`INSERT INTO tasker_task_transitions (task_id, to_state, from_state, metadata, sort_key, most_recent)
				SELECT r.owner, r.to_state, r.from_state, r.metadata, r.sort_key, r.most_recent
				FROM jsonb_to_recordset(?::jsonb) AS r(owner bigint, to_state varchar, from_state varchar,
				                                        metadata jsonb, sort_key integer, most_recent boolean)`,
				string(payload)).Error
		})
	}
	var befores [][]string // the task's history before the statement: none, or one row
	befores = append(befores, nil)
	for _, b := range states {
		befores = append(befores, []string{b})
	}
	var statements [][]string
	for _, a := range states {
		statements = append(statements, []string{a})
		for _, b := range states {
			if b != a {
				statements = append(statements, []string{a, b})
			}
		}
	}
	var wrong []string
	for _, before := range befores {
		for _, stmt := range statements {
			var task int64
			// Three steps: two unprocessed (flag kept), one processed (flag not kept).
			if err := s.db.Raw(`WITH t AS (
				    INSERT INTO tasker_tasks (named_task_id) SELECT named_task_id FROM tasker_named_tasks WHERE name = 'flags'
				    RETURNING task_id
				), s AS (
				    INSERT INTO tasker_workflow_steps (task_id, named_step_id, processed)
				    SELECT t.task_id, ns.named_step_id, ns.name = 'f3' FROM t, tasker_named_steps ns WHERE ns.name LIKE 'f_'
				)
				SELECT task_id FROM t`).Row().Scan(&task); err != nil {
				t.Fatal(err)
			}
			if len(before) > 0 {
				if err := write(task, before); err != nil {
					t.Fatal(err)
				}
			}
			if err := write(task, stmt); err != nil {
				t.Fatal(err)
			}
			var flags []bool
			if err := s.db.Raw(`SELECT task_inactive FROM tasker_workflow_steps WHERE task_id = ? AND NOT processed`, task).
				Scan(&flags).Error; err != nil {
				t.Fatal(err)
			}
			want := !active(stmt[len(stmt)-1])
			if len(flags) != 2 || slices.Contains(flags, !want) {
				wrong = append(wrong, fmt.Sprintf("%v then %v in one statement: task_inactive %v, want %v", before, stmt, flags, want))
			}
		}
	}
	if len(wrong) > 0 {
		t.Fatalf("%d of %d histories with wrong flags:\n%v", len(wrong), len(befores)*len(statements), wrong)
	}
}
