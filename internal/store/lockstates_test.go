package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/taskerhq/tasker/internal/database"
	"github.com/taskerhq/tasker/internal/testkit/dbtest"
)

// TestLockTasksSkipLockedReturnsTheLockedTasksWithTheirCurrentTransitions: of five ids, in no
// order (a task with a history, a task with none, a task another transaction holds, the same
// task twice, an id no task has), the call locks and returns the two free tasks, in id order,
// each with its current state and last sort key; the held task is skipped, not waited for,
// and is returned, with the transition its holder committed, once the holder has committed.
func TestLockTasksSkipLockedReturnsTheLockedTasksWithTheirCurrentTransitions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := dbtest.NewURL(t)
	s, _ := openAt(t, url)
	seedHistory(t, s, 3)
	var stuck, fresh, held int64
	if err := s.db.Raw(`SELECT (SELECT min(task_id) FROM tasker_task_transitions),
		(SELECT min(task_id) FROM tasker_tasks t WHERE NOT EXISTS (SELECT 1 FROM tasker_task_transitions tt WHERE tt.task_id = t.task_id)),
		(SELECT max(task_id) FROM tasker_tasks t WHERE NOT EXISTS (SELECT 1 FROM tasker_task_transitions tt WHERE tt.task_id = t.task_id))`).
		Row().Scan(&stuck, &fresh, &held); err != nil {
		t.Fatal(err)
	}
	var stuckState string
	if err := s.db.Raw(`SELECT to_state FROM tasker_task_transitions WHERE task_id = ? AND most_recent`, stuck).
		Row().Scan(&stuckState); err != nil {
		t.Fatal(err)
	}

	holder := dbtest.Open(t, url).Begin()
	t.Cleanup(func() { holder.Rollback() })
	if err := holder.Exec(`SELECT task_id FROM tasker_tasks WHERE task_id = ? FOR NO KEY UPDATE`, held).Error; err != nil {
		t.Fatal(err)
	}
	if err := holder.Exec(`INSERT INTO tasker_task_transitions (task_id, to_state, sort_key, most_recent)
		VALUES (?, 'in_progress', 1, true)`, held).Error; err != nil {
		t.Fatal(err)
	}

	lock := func() []OwnerState {
		t.Helper()
		var got []OwnerState
		if err := s.Tx(ctx, func(tx *Store) error {
			var err error
			got, err = tx.LockTasksSkipLocked(ctx, []int64{held, fresh, 1 << 40, stuck, held})
			if err != nil {
				return err
			}
			// The locks are held until the transaction ends: another transaction skips them.
			var others []int64
			if err := dbtest.Open(t, url).Raw(`SELECT task_id FROM tasker_tasks WHERE task_id IN (?, ?)
				FOR NO KEY UPDATE SKIP LOCKED`, stuck, fresh).Scan(&others).Error; err != nil {
				return err
			}
			if len(others) != 0 {
				t.Errorf("another transaction could lock tasks %v while the call's transaction held them", others)
			}
			return errRollback
		}); !errors.Is(err, errRollback) {
			t.Fatal(err)
		}
		return got
	}
	state := func(s string) *string { return &s }
	same := func(a, b OwnerState) bool {
		return a.ID == b.ID && a.SortKey == b.SortKey && (a.State == nil) == (b.State == nil) && (a.State == nil || *a.State == *b.State)
	}
	want := []OwnerState{{ID: stuck, State: state(stuckState), SortKey: 2}, {ID: fresh}}
	slices.SortFunc(want, func(a, b OwnerState) int { return int(a.ID - b.ID) })
	if got := lock(); !slices.EqualFunc(got, want, same) {
		t.Errorf("with task %d held elsewhere: %s, want %s", held, describeStates(got), describeStates(want))
	}

	if err := holder.Commit().Error; err != nil {
		t.Fatal(err)
	}
	want = append(want, OwnerState{ID: held, State: state("in_progress"), SortKey: 1})
	slices.SortFunc(want, func(a, b OwnerState) int { return int(a.ID - b.ID) })
	if got := lock(); !slices.EqualFunc(got, want, same) {
		t.Errorf("once its holder committed: %s, want %s", describeStates(got), describeStates(want))
	}
}

// describeStates renders owner states for a failure message: id:state@sort_key each.
func describeStates(states []OwnerState) string {
	out := make([]string, len(states))
	for i, s := range states {
		state := "<none>"
		if s.State != nil {
			state = *s.State
		}
		out[i] = fmt.Sprintf("%d:%s@%d", s.ID, state, s.SortKey)
	}
	return "[" + strings.Join(out, " ") + "]"
}

// TestTheMoveToCompleteFlagsTheTask: a task's complete flag is set by the statement that
// writes its move to complete, whoever writes it (here plain SQL), and by no other move; a
// bulk load (tasker.bulk_load on) writes the flag itself, and the trigger leaves it alone.
func TestTheMoveToCompleteFlagsTheTask(t *testing.T) {
	t.Parallel()
	s, _ := open(t)
	seedHistory(t, s, 0)
	var tasks []int64
	if err := s.db.Raw(`SELECT task_id FROM tasker_tasks ORDER BY task_id LIMIT 3`).Scan(&tasks).Error; err != nil {
		t.Fatal(err)
	}
	flags := func() []bool {
		t.Helper()
		var out []bool
		if err := s.db.Raw(`SELECT complete FROM tasker_tasks WHERE task_id = ANY(?::bigint[]) ORDER BY task_id`,
			database.Array[int64](tasks)).Scan(&out).Error; err != nil {
			t.Fatal(err)
		}
		return out
	}
	move := func(bulk bool, to string, ids ...int64) {
		t.Helper()
		if err := s.Tx(context.Background(), func(tx *Store) error {
			if bulk {
				if err := tx.db.Exec(`SELECT set_config('tasker.bulk_load', 'on', true)`).Error; err != nil {
					return err
				}
			}
			if err := tx.db.Exec(`UPDATE tasker_task_transitions SET most_recent = false
				WHERE task_id = ANY(?::bigint[]) AND most_recent`, database.Array[int64](ids)).Error; err != nil {
				return err
			}
			return tx.db.Exec(`INSERT INTO tasker_task_transitions (task_id, to_state, sort_key, most_recent)
				SELECT o.id, ?, coalesce((SELECT max(sort_key) FROM tasker_task_transitions WHERE task_id = o.id), 0) + 1, true
				FROM unnest(?::bigint[]) AS o(id)`, to, database.Array[int64](ids)).Error
		}); err != nil {
			t.Fatal(err)
		}
	}
	if got := flags(); !slices.Equal(got, []bool{false, false, false}) {
		t.Fatalf("fresh tasks have complete %v, want false", got)
	}
	move(false, "in_progress", tasks...)
	if got := flags(); !slices.Equal(got, []bool{false, false, false}) {
		t.Errorf("after moves to in_progress: complete %v, want false", got)
	}
	move(false, "complete", tasks[0])
	move(true, "complete", tasks[1])
	if got := flags(); !slices.Equal(got, []bool{true, false, false}) {
		t.Errorf("after a move to complete of the first task and a bulk-loaded one of the second: complete %v, want true, false, false", got)
	}
}
