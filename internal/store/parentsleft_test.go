package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/taskerhq/tasker/internal/testkit/dbtest"
)

// seedShape creates, through InsertSteps (the task creation's write), tasks tasks of the steps
// names (named steps of one named task), with the edges parents[i] → i (indexes into names),
// each step with its number of parents and its depth (its index, enough for these tests), and
// returns each task's step ids in the order of names.
func seedShape(t *testing.T, s *Store, tasks int, names []string, edges [][2]int) [][]int64 {
	t.Helper()
	seed(t, s,
		`INSERT INTO tasker_dependent_systems (name) VALUES ('shape')`,
		`INSERT INTO tasker_named_tasks (task_namespace_id, name) VALUES (1, 'shape')`,
		fmt.Sprintf(`INSERT INTO tasker_tasks (named_task_id) SELECT named_task_id FROM tasker_named_tasks, generate_series(1, %d)`, tasks))
	var taskIDs []int64
	if err := s.db.Raw(`SELECT task_id FROM tasker_tasks ORDER BY task_id`).Scan(&taskIDs).Error; err != nil {
		t.Fatal(err)
	}
	named := make([]int64, len(names))
	for i, n := range names {
		if err := s.db.Raw(`INSERT INTO tasker_named_steps (dependent_system_id, name)
			SELECT dependent_system_id, ? FROM tasker_dependent_systems RETURNING named_step_id`, n).Row().Scan(&named[i]); err != nil {
			t.Fatal(err)
		}
	}
	parents := make([]int32, len(names))
	for _, e := range edges {
		parents[e[1]]++
	}
	var st NewSteps
	var e NewEdges
	for _, task := range taskIDs {
		for i, n := range named {
			st.TaskIDs, st.NamedStepIDs = append(st.TaskIDs, task), append(st.NamedStepIDs, n)
			st.Retryable, st.Skippable = append(st.Retryable, true), append(st.Skippable, false)
			st.RetryLimits, st.Inputs = append(st.RetryLimits, 3), append(st.Inputs, "")
			st.Levels, st.Mins = append(st.Levels, int32(i)), append(st.Mins, int32(i))
			st.Parents = append(st.Parents, parents[i])
		}
		for _, edge := range edges {
			e.TaskIDs = append(e.TaskIDs, task)
			e.FromNamed, e.ToNamed = append(e.FromNamed, named[edge[0]]), append(e.ToNamed, named[edge[1]])
		}
	}
	if _, err := s.InsertSteps(context.Background(), st, e); err != nil {
		t.Fatal(err)
	}
	seed(t, s, `ANALYZE`)
	out := make([][]int64, len(taskIDs))
	for k, task := range taskIDs {
		if err := s.db.Raw(`SELECT workflow_step_id FROM tasker_workflow_steps WHERE task_id = ? ORDER BY named_step_id`,
			task).Scan(&out[k]).Error; err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// seedChains creates tasks chains of length steps each, every step after the one before
// (seedShape).
func seedChains(t *testing.T, s *Store, tasks, length int) [][]int64 {
	t.Helper()
	names := make([]string, length)
	var edges [][2]int
	for i := range names {
		names[i] = fmt.Sprintf("n%d", i+1)
		if i > 0 {
			edges = append(edges, [2]int{i - 1, i})
		}
	}
	return seedShape(t, s, tasks, names, edges)
}

// parentsLeft reads the parents_left of steps, in their order.
func parentsLeft(t *testing.T, s *Store, steps ...int64) []int {
	t.Helper()
	out := make([]int, len(steps))
	for i, id := range steps {
		if err := s.db.Raw(`SELECT parents_left FROM tasker_workflow_steps WHERE workflow_step_id = ?`, id).Row().Scan(&out[i]); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// TestClaimWalksOnlyStepsWhoseParentsAreDone: in a queue of four chains, the claim's walk
// passes only the steps whose parents are done (migration 00070), so its candidates are the
// four ready steps whether the chains have 5 steps or 400 (it walked all 1,600 steps
// before); after the engine records the first steps, the second steps are the candidates,
// and the claim still claims exactly what the readiness view says is ready.
func TestClaimWalksOnlyStepsWhoseParentsAreDone(t *testing.T) {
	t.Parallel()
	for _, length := range []int{5, 400} {
		s, _ := open(t)
		chains := seedChains(t, s, 4, length)
		if got := parentsLeft(t, s, chains[0][0], chains[0][1], chains[0][length-1]); !slices.Equal(got, []int{0, 1, 1}) {
			t.Fatalf("chains of %d: new steps wait for %v parents (first, second, last), want [0 1 1]", length, got)
		}
		for round := 0; round < 2; round++ {
			walk := explainWalk(t, s, "tasker_workflow_steps_runnable_idx", claimSQL, claimParams(20, "explain", 60000))
			if walk.Candidates != 4 {
				t.Errorf("chains of %d, round %d: the claim walked %d candidates, want the 4 ready steps (%+v)",
					length, round, walk.Candidates, walk)
			}
			ready := readySteps(t, s)
			claimed := claimSteps(t, s, 20, "chains")
			var ids []int64
			for _, c := range claimed {
				ids = append(ids, c.StepID)
			}
			if want := []int64{chains[0][round], chains[1][round], chains[2][round], chains[3][round]}; !slices.Equal(ids, want) || !slices.Equal(ready, want) {
				t.Fatalf("chains of %d, round %d: claimed %v, view ready %v, want %v", length, round, ids, ready, want)
			}
			recordReading(t, s, claimed, "chains", Busy{})
			if got := parentsLeft(t, s, chains[2][round+1], chains[2][round+2]); !slices.Equal(got, []int{0, 1}) {
				t.Errorf("chains of %d, round %d: after the recording the next two steps wait for %v parents, want [0 1]",
					length, round, got)
			}
		}
	}
}

// TestParentsLeftCountsDownEachFinishedParent: a step after two parents waits for 2; a parent
// recorded complete by the engine counts it down to 1, one resolved by an operator's move to
// resolved_manually to 0; a parent that fails counts nothing. Two transactions that finish
// the two parents of one step at the same time, without any other lock, count it down to 0
// together (the second update reads the first's row). An edge deleted sets the count of the
// step it led to back to 0.
func TestParentsLeftCountsDownEachFinishedParent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := dbtest.NewURL(t)
	s, _ := openAt(t, url)
	// Three tasks of three steps: a and b, then c after both.
	ids := seedShape(t, s, 3, []string{"a", "b", "c"}, [][2]int{{0, 2}, {1, 2}})
	step := func(task int, name int) int64 { return ids[task][name] }
	if got := parentsLeft(t, s, step(0, 0), step(0, 1), step(0, 2)); !slices.Equal(got, []int{0, 0, 2}) {
		t.Fatalf("new steps a, b, c wait for %v parents, want [0 0 2]", got)
	}

	// Task 1: the engine claims a and b, records a complete and b failed, then an operator
	// resolves b.
	claimed := claimSteps(t, s, 2, "join")
	if len(claimed) != 2 || claimed[0].StepID != step(0, 0) || claimed[1].StepID != step(0, 1) {
		t.Fatalf("claimed %+v, want task 1's a and b", claimed)
	}
	tasks, outcomes := firstSuccesses(claimed, "join")
	outcomes[1].Success, outcomes[1].ToState = false, "error"
	outcomes[1].Results = json.RawMessage(`{"error": "failed"}`)
	outcomes[1].Metadata = json.RawMessage(`{"event": "failed", "worker_id": "join", "attempt": 1}`)
	if err := s.EngineTx(ctx, false, func(tx *Store) error {
		_, err := tx.RecordAndSettle(ctx, tasks, outcomes, Busy{})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if got := parentsLeft(t, s, step(0, 2)); got[0] != 1 {
		t.Errorf("c after a complete and b in error waits for %d parents, want 1", got[0])
	}
	seed(t, s, fmt.Sprintf(`WITH cleared AS (
		    UPDATE tasker_workflow_step_transitions SET most_recent = false
		    WHERE workflow_step_id = %[1]d AND most_recent RETURNING sort_key)
		INSERT INTO tasker_workflow_step_transitions (workflow_step_id, to_state, from_state, sort_key, most_recent)
		SELECT %[1]d, 'resolved_manually', 'error', sort_key + 1, true FROM cleared`, step(0, 1)))
	if got := parentsLeft(t, s, step(0, 2)); got[0] != 0 {
		t.Errorf("c after a complete and b resolved waits for %d parents, want 0", got[0])
	}
	if ready := readySteps(t, s); !slices.Contains(ready, step(0, 2)) {
		t.Errorf("the view's ready steps %v do not hold task 1's c", ready)
	}

	// Task 2: its a and b finish in two transactions at once, on connections of their own;
	// neither holds the task's lock.
	a, b, c := step(1, 0), step(1, 1), step(1, 2)
	finish := func(tx *sql.Tx, id int64) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO tasker_workflow_step_transitions (workflow_step_id, to_state, sort_key, most_recent)
			VALUES ($1, 'complete', 1, true)`, id)
		return err
	}
	begin := func() *sql.Tx {
		other, _ := openAt(t, url)
		sqlDB, err := other.db.DB()
		if err != nil {
			t.Fatal(err)
		}
		tx, err := sqlDB.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = tx.Rollback() })
		return tx
	}
	tx1, tx2 := begin(), begin()
	if err := finish(tx1, a); err != nil {
		t.Fatal(err)
	}
	second := make(chan error, 1)
	go func() {
		err := finish(tx2, b)
		if err == nil {
			err = tx2.Commit()
		}
		second <- err
	}()
	// The second transaction waits for the first's lock on c before it can count c down.
	waiting := false
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && !waiting; time.Sleep(10 * time.Millisecond) {
		if err := s.db.Raw(`SELECT count(*) > 0 FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`).
			Row().Scan(&waiting); err != nil {
			t.Fatal(err)
		}
	}
	if !waiting {
		t.Fatal("the second transaction never waited for the first's row lock on c")
	}
	if err := tx1.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := <-second; err != nil {
		t.Fatal(err)
	}
	if got := parentsLeft(t, s, c); got[0] != 0 {
		t.Errorf("c after a and b finished at once waits for %d parents, want 0", got[0])
	}

	// Task 3: deleting the edge a -> c lets c be walked again, though b has not run.
	seed(t, s, fmt.Sprintf(`DELETE FROM tasker_workflow_step_edges WHERE from_step_id = %d`, step(2, 0)))
	if got := parentsLeft(t, s, step(2, 2)); got[0] != 0 {
		t.Errorf("c after its edge from a was deleted waits for %d parents, want 0", got[0])
	}
}
