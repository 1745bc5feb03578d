package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/taskerhq/tasker/internal/database"
	"github.com/taskerhq/tasker/internal/testkit/dbtest"
	"github.com/taskerhq/tasker/internal/testkit/plantest"
)

// transactionReads returns how many sequential scans of the growing tables
// (plantest.GrowingTables) the connection of tx has run and how many of their rows its scans
// returned (sequential and index scans), as its statistics not yet reported
// (pg_stat_xact_user_tables) count them: the statements inside functions are counted too.
// Only a difference between two readings in one transaction is meaningful.
func transactionReads(t *testing.T, ctx context.Context, tx *Store) (seqScans, rows int64) {
	t.Helper()
	if err := tx.conn(ctx).Raw(`SELECT coalesce(sum(seq_scan), 0), coalesce(sum(seq_tup_read + coalesce(idx_tup_fetch, 0)), 0)
		FROM pg_stat_xact_user_tables WHERE relname = ANY(?::text[])`, database.Array[string](plantest.GrowingTables)).Row().Scan(&seqScans, &rows); err != nil {
		t.Fatal(err)
	}
	return seqScans, rows
}

// TestEngineCallsReadOnlyTheRowsOfTheirBatch: the engine's calls (migration 00066) run
// their statements inside the database, where EXPLAIN does not reach. In a table of 10,000
// one-step tasks whose last 16 are ready, a claim of 8 that starts them (ClaimAndStart), then
// the recording of their attempts with the settling of their tasks (RecordAndSettle), each in
// an engine transaction, must scan no growing table sequentially and read a few rows of them
// per step: not the steps or transitions older than the batch, which a join planned from the
// statistics (a merge join along a primary key, a hash join over a whole table) would read.
// This holds first with the statistics of the empty tables (analysed before they were
// filled, as a fresh database's are), then, for the next 8 on the same connection (whose
// cached plans stay), analysed. The calls must also have done their work: the claimed steps
// started, their attempts recorded, and every task complete in the end.
func TestEngineCallsReadOnlyTheRowsOfTheirBatch(t *testing.T) {
	t.Parallel()
	s, _ := open(t)
	seedOneStepTasks(t, s, 10000, 16)
	drainEightReading(t, s, "statistics of empty tables")
	seed(t, s, `ANALYZE`)
	drainEightReading(t, s, "analysed")
	var complete int
	if err := s.db.Raw(`SELECT count(*) FROM tasker_tasks t
		WHERE t.complete AND (SELECT string_agg(to_state, ',' ORDER BY sort_key) FROM tasker_task_transitions tt
		                      WHERE tt.task_id = t.task_id) = 'in_progress,complete'`).Scan(&complete).Error; err != nil {
		t.Fatal(err)
	}
	if complete != 10000 {
		t.Errorf("%d tasks complete with their whole history, want all 10,000", complete)
	}
}

// seedOneStepTasks fills s with total one-step tasks whose last ready steps are ready and the
// others complete (with their histories), the tables analysed while they were empty, as a
// fresh database's are.
func seedOneStepTasks(t testing.TB, s *Store, total, ready int) {
	t.Helper()
	done := total - ready
	seed(t, s,
		`INSERT INTO tasker_dependent_systems (name) VALUES ('calls')`,
		`INSERT INTO tasker_named_tasks (task_namespace_id, name) VALUES (1, 'calls_one')`,
		`INSERT INTO tasker_named_steps (dependent_system_id, name) SELECT dependent_system_id, 'only' FROM tasker_dependent_systems`,
		`ANALYZE`,
		fmt.Sprintf(`INSERT INTO tasker_tasks (named_task_id) SELECT named_task_id FROM tasker_named_tasks, generate_series(1, %d)`, total),
		fmt.Sprintf(`INSERT INTO tasker_workflow_steps (task_id, named_step_id, processed, attempts)
		 SELECT t.task_id, ns.named_step_id, t.task_id <= %[1]d, CASE WHEN t.task_id <= %[1]d THEN 1 ELSE 0 END
		 FROM tasker_tasks t, tasker_named_steps ns ORDER BY t.task_id`, done))
	seed(t, s, finishedHistories(0, done)...)
}

// finishedHistories are the statements that give the tasks with ids in (after, upTo], and
// their steps, the history of a finished one-step task: in_progress, then complete.
func finishedHistories(after, upTo int) []string {
	return []string{
		fmt.Sprintf(`INSERT INTO tasker_workflow_step_transitions (workflow_step_id, to_state, from_state, sort_key, most_recent)
		 SELECT s.workflow_step_id, x.to_state, x.from_state, x.sort_key, x.sort_key = 2
		 FROM tasker_workflow_steps s, (VALUES ('in_progress', NULL, 1), ('complete', 'in_progress', 2)) AS x(to_state, from_state, sort_key)
		 WHERE s.task_id > %d AND s.task_id <= %d`, after, upTo),
		fmt.Sprintf(`INSERT INTO tasker_task_transitions (task_id, to_state, from_state, sort_key, most_recent)
		 SELECT t.task_id, x.to_state, x.from_state, x.sort_key, x.sort_key = 2
		 FROM tasker_tasks t, (VALUES ('in_progress', NULL, 1), ('complete', 'in_progress', 2)) AS x(to_state, from_state, sort_key)
		 WHERE t.task_id > %d AND t.task_id <= %d`, after, upTo),
	}
}

// TestRecordingFindsEachOutcomesStepByKey: the recording's first statement (the body of
// tasker_record_held_outcomes, migration 00068) matches each outcome to its step by key, so
// that its work grows with its batch, not with the batch's square. EXPLAIN ANALYZE of it, for
// a batch of 64 steps claimed among 10,000 one-step tasks, under the engine's settings and a
// generic plan, must find no pair of rows refused by a join filter (comparing every outcome
// with every step refuses 64 × 63 = 4,032) and read a few rows of the steps per step: first
// with the statistics of empty tables, then analysed while no step was claimed (statistics
// under which a plain join of the outcomes to the steps was planned as a walk of every step).
// The statement must also have recorded the 64 attempts.
func TestRecordingFindsEachOutcomesStepByKey(t *testing.T) {
	t.Parallel()
	s, _ := open(t)
	seedOneStepTasks(t, s, 10000, 128)
	ctx := context.Background()
	var body string
	if err := s.db.Raw(`SELECT prosrc FROM pg_proc WHERE proname = 'tasker_record_held_outcomes'`).Row().Scan(&body); err != nil {
		t.Fatal(err)
	}
	_, query, ok := strings.Cut(body, "RETURN QUERY")
	query, _, _ = strings.Cut(query, ";")
	if !ok {
		t.Fatalf("tasker_record_held_outcomes has no RETURN QUERY:\n%s", body)
	}
	query = regexp.MustCompile(`\boutcomes\b`).ReplaceAllString(regexp.MustCompile(`\btask_ids\b`).ReplaceAllString(query, "$$1"), "$$2")
	errRollBack := errors.New("rolled back")
	for _, phase := range []string{"statistics of empty tables", "analysed"} {
		if phase == "analysed" {
			seed(t, s, `ANALYZE`)
		}
		const batch = 64
		var claimed []ClaimedStep
		if err := s.EngineTx(ctx, false, func(tx *Store) error {
			var err error
			claimed, err = tx.ClaimAndStart(ctx, ClaimRequest{N: batch, Worker: "calls", Lease: time.Minute, Start: startMeta("calls")})
			return err
		}); err != nil || len(claimed) != batch {
			t.Fatalf("%s: claimed %d steps (%v), want %d", phase, len(claimed), err, batch)
		}
		tasks, outcomes := firstSuccesses(claimed, "calls")
		payload, err := json.Marshal(outcomes)
		if err != nil {
			t.Fatal(err)
		}
		ids, err := plantest.Literal(database.Array[int64](tasks))
		if err != nil {
			t.Fatal(err)
		}
		err = s.EngineTx(ctx, false, func(tx *Store) error {
			// A prepared statement outlives the transaction: it is deallocated before it ends.
			if err := tx.conn(ctx).Exec(`PREPARE record_held(bigint[], jsonb) AS ` + query).Error; err != nil {
				return err
			}
			var raw string
			err := tx.conn(ctx).Raw(`EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE record_held(` + ids + `, '` +
				strings.ReplaceAll(string(payload), "'", "''") + `')`).Row().Scan(&raw)
			if err := errors.Join(err, tx.conn(ctx).Exec(`DEALLOCATE record_held`).Error); err != nil {
				return err
			}
			plan, err := plantest.Parse(raw)
			if err != nil {
				return err
			}
			if refused := plan.JoinFilterRemoved(); refused > 0 {
				t.Errorf("%s: the recording's joins refused %.0f pairs of rows, want none:\n%s", phase, refused, raw)
			}
			if read := plan.RowsRead()["tasker_workflow_steps"]; read > 4*batch {
				t.Errorf("%s: the recording read %.0f rows of the steps for %d outcomes, want at most %d:\n%s",
					phase, read, batch, 4*batch, raw)
			}
			if plan.ActualRows != batch {
				t.Errorf("%s: the recording wrote %.0f attempts, want %d", phase, plan.ActualRows, batch)
			}
			return errRollBack
		})
		if !errors.Is(err, errRollBack) {
			t.Fatalf("%s: %v", phase, err)
		}
		// The claims end for real, so that the analysed phase's statistics see none.
		if err := s.EngineTx(ctx, false, func(tx *Store) error {
			kept, err := tx.RecordAndSettle(ctx, tasks, outcomes, Busy{})
			if err == nil && len(kept) != batch {
				err = fmt.Errorf("recorded %d attempts, want %d", len(kept), batch)
			}
			return err
		}); err != nil {
			t.Fatalf("%s: %v", phase, err)
		}
	}
}

// TestRecordingLeavesTasksWithAStepInProcessUncounted: a recording counts no step of a task
// with a step in process (RecordAndSettle's busy tasks) or with a step ready among its newest
// (migration 00069). A task of two steps is claimed whole; recording its
// first step with the second as the witness of a step in process leaves the task in_progress,
// and recording the second with the first as witness (no longer in process) counts the task
// and settles it: complete. Then a task of 1,000 steps, two of them claimed: recording one
// with the other as witness, then the other with a witness no longer in process (its newest
// steps are ready), each reads a few rows of the growing tables, not the task's 1,000 steps,
// and leaves it in_progress (998 to run).
func TestRecordingLeavesTasksWithAStepInProcessUncounted(t *testing.T) {
	t.Parallel()
	s, _ := open(t)
	seed(t, s,
		`INSERT INTO tasker_dependent_systems (name) VALUES ('busy')`,
		`INSERT INTO tasker_named_tasks (task_namespace_id, name) VALUES (1, 'busy_pair'), (1, 'busy_wide')`,
		`INSERT INTO tasker_named_steps (dependent_system_id, name)
		 SELECT dependent_system_id, 'n' || i FROM tasker_dependent_systems, generate_series(1, 1000) AS i`,
		`INSERT INTO tasker_tasks (named_task_id) SELECT named_task_id FROM tasker_named_tasks ORDER BY name`,
		`INSERT INTO tasker_workflow_steps (task_id, named_step_id)
		 SELECT t.task_id, ns.named_step_id FROM tasker_tasks t JOIN tasker_named_tasks nt USING (named_task_id), tasker_named_steps ns
		 WHERE nt.name = 'busy_wide' OR ns.name IN ('n1', 'n2') ORDER BY t.task_id, ns.named_step_id`,
		`ANALYZE`)
	// claimTwo claims the two oldest ready steps, of one task.
	claimTwo := func() []ClaimedStep {
		t.Helper()
		claimed := claimSteps(t, s, 2, "busy")
		if len(claimed) != 2 || claimed[0].TaskID != claimed[1].TaskID {
			t.Fatalf("claimed %+v, want two steps of one task", claimed)
		}
		return claimed
	}
	// record records the attempt of one, telling the call that witness is a step of its task
	// in process, and returns the rows of the growing tables it read.
	record := func(one, witness ClaimedStep) int64 {
		t.Helper()
		return recordReading(t, s, []ClaimedStep{one}, "busy", Busy{Tasks: []int64{one.TaskID}, Steps: []int64{witness.StepID}})
	}
	state := func(task int64) string { return taskState(t, s, task) }

	pair := claimTwo()
	record(pair[0], pair[1])
	if got := state(pair[0].TaskID); got != "in_progress" {
		t.Errorf("the pair's task after its first step, its second in process: %s, want in_progress", got)
	}
	record(pair[1], pair[0])
	if got := state(pair[0].TaskID); got != "complete" {
		t.Errorf("the pair's task after both steps, the witness no longer in process: %s, want complete", got)
	}

	wide := claimTwo()
	if read := record(wide[0], wide[1]); read > 100 {
		t.Errorf("recording a step of the wide task with another in process read %d rows, want a few", read)
	}
	if read := record(wide[1], wide[0]); read > 100 {
		t.Errorf("recording a step of the wide task with ready steps, its witness no longer in process, read %d rows, want a few", read)
	}
	if got := state(wide[0].TaskID); got != "in_progress" {
		t.Errorf("the wide task with 998 steps to run: %s, want in_progress", got)
	}
}

// TestRecordingLeavesAChainUncountedWhileItsNextStepIsReady: a chain of 300 steps has one step
// ready at a time, its newest steps waiting for it; recording its first step makes the second
// ready, and the recording (migration 00069) finds that child ready and counts none of the
// chain's steps: a few rows of the growing tables read, not 300. The chain stays in_progress
// and its second step is the next claimed.
func TestRecordingLeavesAChainUncountedWhileItsNextStepIsReady(t *testing.T) {
	t.Parallel()
	s, _ := open(t)
	seed(t, s,
		`INSERT INTO tasker_dependent_systems (name) VALUES ('chain')`,
		`INSERT INTO tasker_named_tasks (task_namespace_id, name) VALUES (1, 'chain')`,
		`INSERT INTO tasker_named_steps (dependent_system_id, name)
		 SELECT dependent_system_id, 'n' || i FROM tasker_dependent_systems, generate_series(1, 300) AS i`,
		`INSERT INTO tasker_tasks (named_task_id) SELECT named_task_id FROM tasker_named_tasks`,
		`INSERT INTO tasker_workflow_steps (task_id, named_step_id)
		 SELECT t.task_id, ns.named_step_id FROM tasker_tasks t, tasker_named_steps ns ORDER BY ns.named_step_id`,
		`INSERT INTO tasker_workflow_step_edges (from_step_id, to_step_id, name)
		 SELECT a.workflow_step_id, b.workflow_step_id, 'provides'
		 FROM tasker_workflow_steps a JOIN tasker_named_steps na ON na.named_step_id = a.named_step_id,
		      tasker_workflow_steps b JOIN tasker_named_steps nb ON nb.named_step_id = b.named_step_id
		 WHERE nb.name = 'n' || (substr(na.name, 2)::int + 1)`,
		`ANALYZE`)
	claimOne := func() ClaimedStep {
		t.Helper()
		claimed := claimSteps(t, s, 2, "chain")
		if len(claimed) != 1 {
			t.Fatalf("claimed %+v, want the chain's one ready step", claimed)
		}
		return claimed[0]
	}
	first := claimOne()
	read := recordReading(t, s, []ClaimedStep{first}, "chain", Busy{})
	if read > 100 {
		t.Errorf("recording the chain's first step read %d rows of the growing tables, want a few (not its 300 steps)", read)
	}
	if state := taskState(t, s, first.TaskID); state != "in_progress" {
		t.Errorf("the chain after its first step: %s, want in_progress", state)
	}
	if next := claimOne(); next.StepID <= first.StepID {
		t.Errorf("the chain's next claimed step is %d, want the one after %d", next.StepID, first.StepID)
	}
}

// claimSteps claims and starts up to n ready steps for worker, in an engine transaction.
func claimSteps(t *testing.T, s *Store, n int, worker string) []ClaimedStep {
	t.Helper()
	claimed, _ := claimReading(t, s, ClaimRequest{N: n, Worker: worker, Lease: time.Minute, Start: startMeta(worker)})
	return claimed
}

// claimReading claims and starts the steps r asks for, in an engine transaction, and returns
// them with the rows of the growing tables the call read.
func claimReading(t *testing.T, s *Store, r ClaimRequest) ([]ClaimedStep, int64) {
	t.Helper()
	ctx := context.Background()
	var claimed []ClaimedStep
	var read int64
	if err := s.EngineTx(ctx, false, func(tx *Store) error {
		_, before := transactionReads(t, ctx, tx)
		var err error
		claimed, err = tx.ClaimAndStart(ctx, r)
		_, after := transactionReads(t, ctx, tx)
		read = after - before
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return claimed, read
}

// recordReading records successful first attempts of claimed, claimed for worker, with
// RecordAndSettle, told of busy, in an engine transaction, fails the test unless every one was
// recorded, and returns the rows of the growing tables the call read.
func recordReading(t *testing.T, s *Store, claimed []ClaimedStep, worker string, busy Busy) int64 {
	t.Helper()
	ctx := context.Background()
	tasks, outcomes := firstSuccesses(claimed, worker)
	var read int64
	if err := s.EngineTx(ctx, false, func(tx *Store) error {
		_, before := transactionReads(t, ctx, tx)
		kept, err := tx.RecordAndSettle(ctx, tasks, outcomes, busy)
		if err == nil && len(kept) != len(claimed) {
			err = fmt.Errorf("recorded %d attempts, want %d", len(kept), len(claimed))
		}
		_, after := transactionReads(t, ctx, tx)
		read = after - before
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return read
}

// taskState is task's current state (pending without a transition).
func taskState(t *testing.T, s *Store, task int64) string {
	t.Helper()
	var st string
	if err := s.db.Raw(`SELECT coalesce((SELECT to_state FROM tasker_task_transitions WHERE task_id = ? AND most_recent), 'pending')`,
		task).Row().Scan(&st); err != nil {
		t.Fatal(err)
	}
	return st
}

// TestEngineCallsLookNoRowUpByPosition: the functions the engine's calls run (migrations 00066
// and 00068) find the rows of their batch by key, or by a binary search of the batch's
// ascending ids (width_bucket), never by array_position, a scan of the batch for each row:
// work that grows with the square of the batch, which reaches workers and prefetch together.
func TestEngineCallsLookNoRowUpByPosition(t *testing.T) {
	t.Parallel()
	s, _ := open(t)
	engineFunctions := []string{"tasker_engine_record", "tasker_engine_start", "tasker_record_held_outcomes",
		"tasker_record_held_attempts", "tasker_tasks_settling", "tasker_lock_tasks_skip_locked", "tasker_tasks_to_settle"}
	var found []struct {
		Proname    string
		ByPosition bool
	}
	if err := s.db.Raw(`SELECT proname, bool_or(prosrc LIKE '%array_position(%') AS by_position FROM pg_proc
		WHERE proname = ANY(?::text[]) GROUP BY proname ORDER BY proname`, database.Array[string](engineFunctions)).Scan(&found).Error; err != nil {
		t.Fatal(err)
	}
	if len(found) != len(engineFunctions) {
		t.Fatalf("found %d of the engine's %d functions: %+v", len(found), len(engineFunctions), found)
	}
	for _, f := range found {
		if f.ByPosition {
			t.Errorf("%s looks rows of its batch up with array_position", f.Proname)
		}
	}
}

// drainEightReading claims 8 ready one-step tasks' steps and starts them, then records their
// attempts, each in an engine transaction, and fails t (naming phase) when either call scans
// a growing table sequentially or reads more than a few rows of them per step.
func drainEightReading(t *testing.T, s *Store, phase string) {
	t.Helper()
	ctx := context.Background()
	const maxRows = 400 // a few index probes per step and task of a batch of 8
	check := func(tx *Store, what string, call func() error) error {
		seqBefore, before := transactionReads(t, ctx, tx)
		if err := call(); err != nil {
			return err
		}
		seqAfter, after := transactionReads(t, ctx, tx)
		if seqScans := seqAfter - seqBefore; seqScans > 0 || after-before > maxRows {
			t.Errorf("%s, %s: %d sequential scans and %d rows read of growing tables, want none and at most %d",
				phase, what, seqScans, after-before, maxRows)
		}
		return nil
	}
	var claimed []ClaimedStep
	err := s.EngineTx(ctx, false, func(tx *Store) error {
		return check(tx, "claiming and starting 8 steps", func() error {
			var err error
			if claimed, err = tx.ClaimAndStart(ctx, ClaimRequest{N: 8, Worker: "calls", Lease: time.Minute, Start: startMeta("calls")}); err == nil && len(claimed) != 8 {
				err = fmt.Errorf("claimed %d steps, want 8", len(claimed))
			}
			return err
		})
	})
	if err != nil {
		t.Fatalf("%s: %v", phase, err)
	}
	tasks, outcomes := firstSuccesses(claimed, "calls")
	err = s.EngineTx(ctx, false, func(tx *Store) error {
		return check(tx, "recording 8 attempts and settling their tasks", func() error {
			kept, err := tx.RecordAndSettle(ctx, tasks, outcomes, Busy{})
			if err == nil && len(kept) != 8 {
				err = fmt.Errorf("recorded %d attempts, want 8", len(kept))
			}
			return err
		})
	})
	if err != nil {
		t.Fatalf("%s: %v", phase, err)
	}
}

// TestRecordingCallSettlesAPendingTaskThroughInProgress: a task whose start the claim skipped
// (another transaction held its row) is still pending when its last step completes. The
// recording call then settles it as FinalizeTask does: to in_progress (reason finalize), then
// to complete with its step counts, in one history with one current row, and flags it
// complete. The other task, started by the claim, goes from in_progress to complete.
func TestRecordingCallSettlesAPendingTaskThroughInProgress(t *testing.T) {
	t.Parallel()
	url := dbtest.NewURL(t)
	s, _ := openAt(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	seed(t, s,
		`INSERT INTO tasker_dependent_systems (name) VALUES ('settle')`,
		`INSERT INTO tasker_named_tasks (task_namespace_id, name) VALUES (1, 'settle_one')`,
		`INSERT INTO tasker_named_steps (dependent_system_id, name) SELECT dependent_system_id, 'only' FROM tasker_dependent_systems`,
		`INSERT INTO tasker_tasks (named_task_id) SELECT named_task_id FROM tasker_named_tasks, generate_series(1, 2)`,
		`INSERT INTO tasker_workflow_steps (task_id, named_step_id)
		 SELECT t.task_id, ns.named_step_id FROM tasker_tasks t, tasker_named_steps ns ORDER BY t.task_id`)
	holder := dbtest.Open(t, url).Begin() // another connection holds the second task's row while the claim runs
	if err := holder.Exec(`SELECT 1 FROM tasker_tasks WHERE task_id = (SELECT max(task_id) FROM tasker_tasks) FOR UPDATE`).Error; err != nil {
		t.Fatal(err)
	}
	var claimed []ClaimedStep
	err := s.EngineTx(ctx, false, func(tx *Store) error {
		var err error
		if claimed, err = tx.ClaimAndStart(ctx, ClaimRequest{N: 2, Worker: "settle", Lease: time.Minute, Start: startMeta("settle")}); err != nil || len(claimed) != 2 {
			return fmt.Errorf("claimed %d steps (%v), want 2", len(claimed), err)
		}
		return nil
	})
	if rbErr := holder.Rollback().Error; rbErr != nil {
		t.Fatal(rbErr)
	}
	if err != nil {
		t.Fatal(err)
	}
	recordReading(t, s, claimed, "settle", Busy{})
	var histories []string
	if err := s.db.Raw(`SELECT t.complete || ' ' || string_agg(coalesce(tt.from_state, '') || '>' || tt.to_state || '@' || tt.sort_key
		       || CASE WHEN tt.most_recent THEN '*' ELSE '' END || ' ' || tt.metadata::text, '; ' ORDER BY tt.sort_key)
		FROM tasker_tasks t JOIN tasker_task_transitions tt USING (task_id) GROUP BY t.task_id ORDER BY t.task_id`).
		Scan(&histories).Error; err != nil {
		t.Fatal(err)
	}
	want := []string{
		`true >in_progress@1 {"event": "start_requested", "worker_id": "settle"}; ` +
			`in_progress>complete@2* {"event": "completed", "total_steps": 1, "completed_steps": 1}`,
		`true >in_progress@1 {"event": "start_requested", "reason": "finalize"}; ` +
			`in_progress>complete@2* {"event": "completed", "total_steps": 1, "completed_steps": 1}`,
	}
	if len(histories) != 2 || histories[0] != want[0] || histories[1] != want[1] {
		t.Errorf("task histories\n%s\nwant\n%s", strings.Join(histories, "\n"), strings.Join(want, "\n"))
	}
}

// startMeta is the metadata of worker's starts, as its engine's state machine encodes them.
func startMeta(worker string) StartMetadata {
	return StartMetadata{
		Step:  json.RawMessage(`{"event": "execution_requested", "worker_id": "` + worker + `"}`),
		Retry: json.RawMessage(`{"event": "retry_requested", "reason": "retry", "worker_id": "` + worker + `"}`),
		Task:  json.RawMessage(`{"event": "start_requested", "worker_id": "` + worker + `"}`),
	}
}

// firstSuccesses returns the tasks of claimed steps and a successful first attempt of each,
// as worker's engine would give them to RecordAndSettle.
func firstSuccesses(claimed []ClaimedStep, worker string) ([]int64, []HeldOutcome) {
	meta := json.RawMessage(`{"event": "completed", "worker_id": "` + worker + `", "attempt": 1}`)
	tasks := make([]int64, len(claimed))
	outcomes := make([]HeldOutcome, len(claimed))
	for i, c := range claimed {
		tasks[i] = c.TaskID
		outcomes[i] = HeldOutcome{StepOutcome: StepOutcome{StepID: c.StepID, Token: c.Token, Success: true, Results: json.RawMessage(`{}`)},
			ToState: "complete", Metadata: meta}
	}
	return tasks, outcomes
}

// BenchmarkRecordAndSettle measures the engine's recording call on batches of 100, 400 and
// 1,600 one-step tasks' attempts, among 10,000 finished tasks: each iteration creates and
// claims a batch (not timed), then records it with the settling of its tasks in one engine
// transaction (timed). It reports the time a recorded step: flat across the batch sizes when
// the call's work grows with its batch (migration 00068), rising with the batch when it grows
// with the batch's square.
func BenchmarkRecordAndSettle(b *testing.B) {
	benchmarkEngineCall(b, false)
}

// BenchmarkClaimAndStart is BenchmarkRecordAndSettle for the claim: each iteration creates a
// batch of ready one-step tasks (not timed), claims and starts them in one engine transaction
// (timed), then records them (not timed). It reports the time a claimed step.
func BenchmarkClaimAndStart(b *testing.B) {
	benchmarkEngineCall(b, true)
}

// benchmarkEngineCall runs BenchmarkClaimAndStart (claim) or BenchmarkRecordAndSettle.
func benchmarkEngineCall(b *testing.B, claim bool) {
	for _, batch := range []int{100, 400, 1600} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			s, _ := open(b)
			seedOneStepTasks(b, s, 10000, 0)
			ctx := context.Background()
			// timed runs call in an engine transaction and, when on, adds its time to elapsed.
			var elapsed time.Duration
			timed := func(on bool, call func(tx *Store) error) {
				began := time.Now()
				if on {
					b.StartTimer()
				}
				err := s.EngineTx(ctx, false, call)
				if on {
					b.StopTimer()
					elapsed += time.Since(began)
				}
				if err != nil {
					b.Fatal(err)
				}
			}
			// round creates n ready tasks, claims and records them, timing the call asked for.
			round := func(n int, timing bool) {
				seed(b, s,
					fmt.Sprintf(`INSERT INTO tasker_tasks (named_task_id) SELECT named_task_id FROM tasker_named_tasks, generate_series(1, %d)`, n),
					`INSERT INTO tasker_workflow_steps (task_id, named_step_id)
					 SELECT t.task_id, ns.named_step_id FROM tasker_tasks t, tasker_named_steps ns
					 WHERE t.task_id > (SELECT max(task_id) FROM tasker_workflow_steps) ORDER BY t.task_id`)
				var claimed []ClaimedStep
				timed(timing && claim, func(tx *Store) error {
					var err error
					claimed, err = tx.ClaimAndStart(ctx, ClaimRequest{N: n, Worker: "bench", Lease: time.Minute, Start: startMeta("bench")})
					if err == nil && len(claimed) != n {
						err = fmt.Errorf("claimed %d steps, want %d", len(claimed), n)
					}
					return err
				})
				tasks, outcomes := firstSuccesses(claimed, "bench")
				timed(timing && !claim, func(tx *Store) error {
					kept, err := tx.RecordAndSettle(ctx, tasks, outcomes, Busy{})
					if err == nil && len(kept) != n {
						err = fmt.Errorf("recorded %d attempts, want %d", len(kept), n)
					}
					return err
				})
			}
			b.StopTimer()
			// An untimed round first: the connection plans and caches the calls' statements
			// once, as an engine's connection does for its whole life.
			round(8, false)
			for range b.N {
				round(batch, true)
			}
			b.ReportMetric(float64(elapsed.Microseconds())/float64(batch*b.N), "µs/step")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// TestEngineCallsKeepToKeysAfterTheTablesGrow: a connection keeps the plans of the engine's
// statements it made while the tables were small (the engine's transactions plan each
// statement once), and the tables then grow without being analysed again: a plan that scans a
// whole index because it was small then reads every row of it at each call afterwards (a
// chain of 1,000 steps, whose history grows at each of its steps, was recorded in time that
// grew with the chain; every drain of 4,000 five-step tasks by an engine with metrics stalled,
// its claims reading every current transition for each claimed step's ready time). A queue of
// 2,000 tasks of two steps (a, then b after it) is analysed before any transition exists, as a
// queue created on a fresh database is; on one connection, 8 claims (with each step's ready
// time, as an engine with metrics asks) and recordings of 2 steps; then 10,000 finished
// one-step tasks are written; then an a is claimed and recorded, and its b (whose ready time
// reads its parent's transition) claimed and recorded: each call must read a few rows of the
// growing tables (the claim's starts fire the transitions' triggers too). With the ready
// time's former join the b's claim read 10,030.
func TestEngineCallsKeepToKeysAfterTheTablesGrow(t *testing.T) {
	t.Parallel()
	s, _ := open(t)
	seed(t, s,
		`INSERT INTO tasker_dependent_systems (name) VALUES ('grow')`,
		`INSERT INTO tasker_named_tasks (task_namespace_id, name) VALUES (1, 'grow_pair')`,
		`INSERT INTO tasker_named_steps (dependent_system_id, name) SELECT dependent_system_id, x FROM tasker_dependent_systems, unnest(ARRAY['a', 'b']) AS x`,
		`INSERT INTO tasker_tasks (named_task_id) SELECT named_task_id FROM tasker_named_tasks, generate_series(1, 2000)`,
		`INSERT INTO tasker_workflow_steps (task_id, named_step_id, parents_left)
		 SELECT t.task_id, ns.named_step_id, CASE ns.name WHEN 'b' THEN 1 ELSE 0 END
		 FROM tasker_tasks t, tasker_named_steps ns ORDER BY t.task_id, ns.name`,
		`INSERT INTO tasker_workflow_step_edges (from_step_id, to_step_id)
		 SELECT a.workflow_step_id, b.workflow_step_id FROM tasker_workflow_steps a, tasker_workflow_steps b
		 WHERE b.task_id = a.task_id AND b.workflow_step_id = a.workflow_step_id + 1 AND a.workflow_step_id % 2 = 1`,
		`ANALYZE`)
	// claim claims and starts up to n steps with their ready time.
	claim := func(n int) ([]ClaimedStep, int64) {
		t.Helper()
		return claimReading(t, s, ClaimRequest{N: n, Worker: "grow", Lease: time.Minute, ReadyFor: true, Start: startMeta("grow")})
	}
	for range 8 {
		claimed, _ := claim(2)
		if len(claimed) != 2 {
			t.Fatalf("claimed %+v, want 2 steps", claimed)
		}
		recordReading(t, s, claimed, "grow", Busy{})
	}
	seed(t, s,
		`INSERT INTO tasker_named_steps (dependent_system_id, name) SELECT dependent_system_id, 'only' FROM tasker_dependent_systems`,
		`INSERT INTO tasker_tasks (named_task_id) SELECT named_task_id FROM tasker_named_tasks, generate_series(1, 10000)`,
		`INSERT INTO tasker_workflow_steps (task_id, named_step_id, processed, attempts)
		 SELECT t.task_id, ns.named_step_id, true, 1 FROM tasker_tasks t, tasker_named_steps ns WHERE t.task_id > 2000 AND ns.name = 'only'`)
	seed(t, s, finishedHistories(2000, 12000)...)
	// The oldest ready step is a task's a (the rounds took a and b in turn); once it is
	// recorded, its b is the oldest, and its ready time reads its parent's transition.
	first, _ := claim(1)
	if len(first) != 1 {
		t.Fatalf("claimed %+v, want one of the a steps left", first)
	}
	if read := recordReading(t, s, first, "grow", Busy{}); read > 100 {
		t.Errorf("recording one step after the tables grew read %d rows of the growing tables, want a few", read)
	}
	claimed, read := claim(1)
	if len(claimed) != 1 || claimed[0].TaskID != first[0].TaskID {
		t.Fatalf("claimed %+v, want the b after %+v", claimed, first[0])
	}
	if read > 100 {
		t.Errorf("claiming a step with a parent after the tables grew read %d rows of the growing tables, want a few", read)
	}
	if read := recordReading(t, s, claimed, "grow", Busy{}); read > 100 {
		t.Errorf("recording a step with a parent after the tables grew read %d rows of the growing tables, want a few", read)
	}
}
