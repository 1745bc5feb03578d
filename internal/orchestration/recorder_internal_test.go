package orchestration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/taskerhq/tasker/internal/database"
	"github.com/taskerhq/tasker/internal/handler"
	"github.com/taskerhq/tasker/internal/models"
	"github.com/taskerhq/tasker/internal/store"
	"github.com/taskerhq/tasker/internal/testkit/dbtest"
	"github.com/taskerhq/tasker/internal/testkit/sqllog"
)

type noHandlers struct{}

func (noHandlers) StepHandler(context.Context, *store.Store, int64, string) (handler.Handler, time.Duration, error) {
	return nil, 0, ErrNoHandler
}

// outcomes is an Observer that keeps the last outcome of each step.
type outcomes struct {
	discardObserver
	mu  sync.Mutex
	got map[string]string
}

func (o *outcomes) StepFinished(step, outcome string, _ time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.got[step] = outcome
}

// TestFlushRecordsEachAttemptAloneWhenTheBatchFails puts a result the database refuses (valid
// JSON, but jsonb cannot hold a NUL character) in one batch with a good one: the batch fails,
// and the good result is then recorded on its own. Only the good one's move to complete is
// left among the engine's own completions.
func TestFlushRecordsEachAttemptAloneWhenTheBatchFails(t *testing.T) {
	t.Parallel()
	db := dbtest.New(t)
	seedChains(t, db, 2, 0)
	obs := &outcomes{got: map[string]string{}}
	e, err := New(NewService(db, nil), nil, noHandlers{}, Config{Observer: obs}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	steps, err := e.claim(ctx, 2)
	if err != nil || len(steps) != 2 {
		t.Fatalf("claimed %d steps (%v), want 2", len(steps), err)
	}
	defer closeRuns(steps)
	e.rec.flush([]result{
		{step: steps[0].s, name: "bad", out: handler.Output{Results: json.RawMessage(`{"text": "\u0000"}`)}, log: e.log},
		{step: steps[1].s, name: "good", out: handler.Output{Results: json.RawMessage(`{"ok": true}`)}, log: e.log},
	}, 0, true)
	if obs.got["bad"] != OutcomeRecordFailed || obs.got["good"] != OutcomeComplete {
		t.Fatalf("outcomes %v, want bad %s and good %s", obs.got, OutcomeRecordFailed, OutcomeComplete)
	}
	var rows []struct {
		WorkflowStepID int64
		Processed      bool
		InProcess      bool
		State          string
	}
	if err := db.Raw(`SELECT s.workflow_step_id, s.processed, s.in_process, t.to_state AS state
		FROM tasker_workflow_steps s JOIN tasker_workflow_step_transitions t
		  ON t.workflow_step_id = s.workflow_step_id AND t.most_recent
		WHERE s.workflow_step_id IN (?, ?) ORDER BY s.workflow_step_id = ? DESC`,
		steps[0].s.StepID, steps[1].s.StepID, steps[0].s.StepID).Scan(&rows).Error; err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || rows[0].Processed || !rows[0].InProcess || rows[0].State != "in_progress" ||
		!rows[1].Processed || rows[1].InProcess || rows[1].State != "complete" {
		t.Fatalf("steps after the flush %+v: want the bad one still claimed in_progress, the good one complete", rows)
	}
	// The move to complete of the good one was written: its notification would be the
	// engine's own (see ownCompletions); the bad one's was never written, so a move of it by
	// anyone else must still wake the dispatcher.
	if bad, good := e.own.take(steps[0].s.StepID), e.own.take(steps[1].s.StepID); bad || !good {
		t.Errorf("own completions after the flush: bad %v, good %v; want only the good one, whose move was written", bad, good)
	}
}

// settingsStatements counts the statements among stmts that set settings.
func settingsStatements(stmts []string) (n int) {
	for _, q := range stmts {
		if strings.Contains(q, "set_config(") || strings.HasPrefix(q, "set ") {
			n++
		}
	}
	return n
}

// TestEngineTransactionsOnTheEnginePoolSetNothing drives an engine through a claim, the
// recording of the claimed batch with the claim of the next steps (a busy engine's one
// transaction) and the read of the next retry time: with the engine's own pool, those
// transactions run there, with the engine's settings (read through them), and no statement
// of either pool sets a setting; over one pool, each of them spends one statement on it.
func TestEngineTransactionsOnTheEnginePoolSetNothing(t *testing.T) {
	t.Parallel()
	url := dbtest.NewURL(t)
	ctx := context.Background()
	seedChainRows(t, dbtest.Open(t, url), 20, 0)
	mainLog, engineLog := &sqllog.Log{}, &sqllog.Log{}
	db, err := database.Open(ctx, url, database.Options{MaxOpenConns: 4, Tracer: mainLog})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = database.Close(db) })
	pool, err := database.OpenEngine(ctx, url, database.Options{MaxOpenConns: PoolConns, Tracer: engineLog}, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pool.Close() })
	var session string
	if err := pool.DB.Raw(`SELECT concat_ws(',', current_setting('jit'), current_setting('enable_seqscan'),
		current_setting('enable_bitmapscan'), current_setting('synchronous_commit'), current_setting('plan_cache_mode'))`).
		Row().Scan(&session); err != nil {
		t.Fatal(err)
	}
	if want := "off,off,off,off,force_generic_plan"; session != want {
		t.Errorf("the engine pool's session settings %s, want %s", session, want)
	}
	engineLog.Take()
	if _, err := New(NewService(db, nil), nil, noopHandlers{}, Config{Pool: pool}, nil); err == nil ||
		!strings.Contains(err.Error(), "AsyncCommit is false but its pool was opened with asynchronous commit true") {
		t.Errorf("an engine whose commit mode is not its pool's: %v", err)
	}
	for _, withPool := range []bool{true, false} {
		cfg := Config{WorkerID: "settings", AsyncCommit: true}
		if withPool {
			cfg.Pool = pool
		}
		e, err := New(NewService(db, nil), nil, noopHandlers{}, cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		e.handlerCtx, e.cancelHandlers = context.WithCancel(ctx)
		mainLog.Take()
		engineLog.Take()
		_, batch := claimedResults(t, e, 4)
		if _, _, err := e.recordBatch(ctx, batch, 0, true); err != nil {
			t.Fatal(err)
		}
		next, err := e.claim(ctx, 2)
		if err != nil {
			t.Fatal(err)
		}
		if len(next) != 2 {
			t.Errorf("the claim took %d steps, want 2", len(next))
		}
		closeRuns(next)
		if _, _, err := e.nextRetryIn(ctx); err != nil {
			t.Fatal(err)
		}
		e.cancelHandlers()
		mainAll, engineAll := mainLog.Take(), engineLog.Take()
		mainSettings, engineSettings := settingsStatements(mainAll), settingsStatements(engineAll)
		t.Logf("pool %v: %d statements on the main pool, %d on the engine's", withPool, len(mainAll), len(engineAll))
		if withPool {
			if mainSettings+engineSettings != 0 {
				t.Errorf("with the engine pool, %d settings statements were sent:\nmain %q\nengine %q",
					mainSettings+engineSettings, mainAll, engineAll)
			}
			if len(engineAll) == 0 {
				t.Error("no statement ran on the engine pool")
			}
		} else if mainSettings != 4 || len(engineAll) != 0 {
			t.Errorf("over one pool: %d settings statements on it (want one per engine transaction, 4), %d on the engine pool",
				mainSettings, len(engineAll))
		}
	}
}

// TestBothRecordingPathsWriteTheSameHistory: the busy engine records a batch in one call
// (tasker_engine_record), which moves each step from the in_progress transition its claim
// left current, without a statement of the engine's reading it; a recording told not to trust
// that (the retry of a refused batch) goes statement by statement through the state machine,
// which reads the steps' current transitions. Both write the same history: the same states,
// sort keys, current rows and metadata (but for the attempts' durations).
func TestBothRecordingPathsWriteTheSameHistory(t *testing.T) {
	t.Parallel()
	url := dbtest.NewURL(t)
	ctx := context.Background()
	seedChainRows(t, dbtest.Open(t, url), 8, 0)
	e, db, log := loggedEngine(t, url, "known")
	runs, batch := claimedResults(t, e, 8)
	batch[1].runErr = handler.Retryable(errors.New("failing once"), 2*time.Second)
	batch[5].runErr = handler.Retryable(errors.New("failing once"), 2*time.Second)
	count := func(stmts []string, part string) (n int) {
		for _, s := range stmts {
			if strings.Contains(strings.Join(strings.Fields(strings.ToLower(s)), " "), part) {
				n++
			}
		}
		return n
	}
	const readsCurrent = "from tasker_workflow_step_transitions t where t.workflow_step_id = o.id and t.most_recent"
	for i, known := range []bool{true, false} {
		log.Take()
		kept, _, err := e.recordBatch(ctx, batch[4*i:4*i+4], 0, known)
		if err != nil || len(kept) != 4 {
			t.Fatalf("known %v: recorded %d of 4 (%v)", known, len(kept), err)
		}
		stmts := log.Take()
		calls, reads := count(stmts, "tasker_engine_record("), count(stmts, readsCurrent)
		if want := map[bool][2]int{true: {1, 0}, false: {0, 1}}[known]; calls != want[0] || reads != want[1] {
			t.Errorf("known %v: %d calls of tasker_engine_record and %d reads of the steps' current transitions, want %d and %d:\n%s",
				known, calls, reads, want[0], want[1], strings.Join(stmts, "\n"))
		}
	}
	ids := make([]int64, len(runs))
	for i, r := range runs {
		ids[i] = r.s.StepID
	}
	var histories []string
	if err := db.Raw(`SELECT string_agg(coalesce(t.from_state, '') || '>' || t.to_state || '@' || t.sort_key
		       || CASE WHEN t.most_recent THEN '*' ELSE '' END || ' ' || (t.metadata - 'duration_ms')::text, '; ' ORDER BY t.sort_key)
		FROM tasker_workflow_step_transitions t WHERE t.workflow_step_id = ANY(?::bigint[])
		GROUP BY t.workflow_step_id ORDER BY t.workflow_step_id`, database.Array[int64](ids)).Scan(&histories).Error; err != nil {
		t.Fatal(err)
	}
	if len(histories) != 8 {
		t.Fatalf("histories of %d steps, want 8", len(histories))
	}
	for i := range 4 {
		if histories[i] != histories[i+4] {
			t.Errorf("step %d of its batch: the busy path wrote\n%s\nthe state machine\n%s", i, histories[i], histories[i+4])
		}
	}
	if !strings.Contains(histories[0], `>in_progress@1 {"event": "execution_requested"`) ||
		!strings.Contains(histories[0], `in_progress>complete@2* {"event": "completed"`) ||
		!strings.Contains(histories[1], `in_progress>error@2* {"error": "retryable failure (retry after 2s): failing once"`) {
		t.Errorf("histories %q, want a completed step and a failed one", histories[:2])
	}
}

// loggedEngine returns an engine named worker over a pool of url whose statements log records
// (no engine pool: its transactions run on that pool), and the pool. Its handlers' context is
// cancelled when the test ends.
func loggedEngine(t *testing.T, url, worker string) (*Engine, *gorm.DB, *sqllog.Log) {
	t.Helper()
	log := &sqllog.Log{}
	db, err := database.Open(context.Background(), url, database.Options{MaxOpenConns: 4, Tracer: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = database.Close(db) })
	e, err := New(NewService(db, nil), nil, noopHandlers{}, Config{WorkerID: worker}, nil)
	if err != nil {
		t.Fatal(err)
	}
	e.handlerCtx, e.cancelHandlers = context.WithCancel(context.Background())
	t.Cleanup(e.cancelHandlers)
	return e, db, log
}

// claimedResults claims n steps with e (it fails t unless it claims all n), stops
// watching their claims, and returns each as a successful attempt ready to record, with the
// runs they came from.
func claimedResults(t *testing.T, e *Engine, n int) ([]*run, []result) {
	t.Helper()
	runs, err := e.claim(context.Background(), n)
	if err != nil || len(runs) != n {
		t.Fatalf("claimed %d steps (%v), want %d", len(runs), err, n)
	}
	batch := make([]result, len(runs))
	for i, r := range runs {
		r.close()
		batch[i] = result{step: r.s, name: r.in.Name, out: handler.Output{Results: json.RawMessage(`{}`)}, log: e.log}
	}
	return runs, batch
}

// TestRecordingKeepsOnlyTheAttemptOfTheHeldClaim: a batch may hold two results of one step,
// one of a claim that was lost (its attempt ran on after recovery took the step back) and one
// of the claim that holds the step now; only the second is recorded, and the step's history
// is the held attempt's.
func TestRecordingKeepsOnlyTheAttemptOfTheHeldClaim(t *testing.T) {
	t.Parallel()
	db := dbtest.New(t)
	seedChains(t, db, 2, 0)
	e, err := New(NewService(db, nil), nil, noopHandlers{}, Config{WorkerID: "held"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	e.handlerCtx, e.cancelHandlers = context.WithCancel(ctx)
	defer e.cancelHandlers()
	_, batch := claimedResults(t, e, 2)
	stale := batch[0]
	stale.step.Token = "00000000-0000-4000-8000-000000000000"
	stale.runErr = handler.Permanent(errors.New("the lost attempt"))
	kept, _, err := e.recordBatch(ctx, append([]result{stale}, batch...), 0, true)
	if err != nil {
		t.Fatal(err)
	}
	if !kept[batch[0].step.Token] || !kept[batch[1].step.Token] || kept[stale.step.Token] {
		t.Fatalf("kept %v: want the two held claims' attempts and not the lost one's", kept)
	}
	var history string
	if err := db.Raw(`SELECT string_agg(to_state, ',' ORDER BY sort_key) FROM tasker_workflow_step_transitions
		WHERE workflow_step_id = ?`, batch[0].step.StepID).Row().Scan(&history); err != nil {
		t.Fatal(err)
	}
	if history != "in_progress,complete" {
		t.Fatalf("history of the step with two results: %s, want in_progress,complete", history)
	}
}

// TestARecordingSettlesAndStartsTasksWithoutStatementsOfTheirOwn: the busy engine, recording
// 4 one-step tasks' attempts and claiming the steps of 4 new tasks for their workers, runs
// exactly these statements: the settings (over one pool), one call that records the attempts,
// moves their steps and settles their tasks (migration 00066), and the claim, which starts
// the claimed steps and their tasks in the same statement (tasker_engine_start). Beside the
// recording (the default: see recorder), the claim has a transaction of its own; with
// ClaimInRecording it follows the recording in the recording's transaction. No separate read
// of the started steps' or tasks' transitions and no update of the completed tasks' flag
// runs; the tasks still end flagged and with whole histories. On the engine's own pool
// (pool=true, as `tasker worker` runs it) no settings statement runs, and the recording and
// the claim beside it, one statement each, run without BEGIN and COMMIT
// (store.EngineStatement): two statements in all where there were six; and a claim in the
// recording's transaction follows it in one pipeline, without them too (store.RecordAndClaim).
func TestARecordingSettlesAndStartsTasksWithoutStatementsOfTheirOwn(t *testing.T) {
	t.Parallel()
	for _, pool := range []bool{false, true} {
		for _, inRecording := range []bool{false, true} {
			t.Run(fmt.Sprintf("pool=%v/in_recording=%v", pool, inRecording), func(t *testing.T) {
				t.Parallel()
				recordingSettlesAndStarts(t, pool, inRecording)
			})
		}
	}
}

func recordingSettlesAndStarts(t *testing.T, pool, inRecording bool) {
	url := dbtest.NewURL(t)
	ctx := context.Background()
	execSeed(t, dbtest.Open(t, url), nil,
		`INSERT INTO tasker_dependent_systems (name) VALUES ('one')`,
		`INSERT INTO tasker_named_tasks (task_namespace_id, name) VALUES (1, 'one')`,
		`INSERT INTO tasker_named_steps (dependent_system_id, name) SELECT dependent_system_id, 'only' FROM tasker_dependent_systems`,
		`INSERT INTO tasker_tasks (named_task_id) SELECT named_task_id FROM tasker_named_tasks, generate_series(1, 8)`,
		`INSERT INTO tasker_workflow_steps (task_id, named_step_id)
		 SELECT t.task_id, ns.named_step_id FROM tasker_tasks t, tasker_named_steps ns ORDER BY t.task_id`)
	e, db, log := loggedEngine(t, url, "trips")
	want := []string{
		"begin",
		"select set_config(",                  // the engine's settings, over one pool
		"select unnest(tasker_engine_record(", // locks, outcomes, the steps' moves, settling the tasks
		"commit",
		"begin",
		"select set_config(",
		"with ready as", // the claim, which starts the claimed steps and their tasks
		"commit",
	}
	if pool {
		log = &sqllog.Log{}
		p, err := database.OpenEngine(ctx, url, database.Options{MaxOpenConns: PoolConns, Tracer: log}, false)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = p.Close() })
		e.st = e.st.WithEngine(p)
		// Beside or in the recording, the same two statements: neither BEGIN nor COMMIT.
		want = []string{"select unnest(tasker_engine_record(", "with ready as"}
	}
	_, batch := claimedResults(t, e, 4)
	log.Take()
	var kept map[string]bool
	var next []*run
	var err error
	if inRecording {
		var c claimed
		kept, c, err = e.recordBatch(ctx, batch, 4, true)
		next = c.runs
		if !pool {
			want = slices.Concat(want[:3], want[6:])
		}
	} else {
		if kept, _, err = e.recordBatch(ctx, batch, 0, true); err == nil {
			next, err = e.claim(ctx, 4)
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	closeRuns(next)
	if len(kept) != 4 || len(next) != 4 {
		t.Fatalf("recorded %d attempts and claimed %d steps, want 4 and 4", len(kept), len(next))
	}
	got := log.Take()
	norm := make([]string, len(got))
	for i, s := range got {
		norm[i] = strings.Join(strings.Fields(s), " ")
	}
	ok := len(norm) == len(want)
	for i := range want {
		ok = ok && strings.HasPrefix(norm[i], want[i])
	}
	if !ok {
		t.Errorf("the recording and the claim ran %d statements, want %d:\n%s", len(norm), len(want), strings.Join(norm, "\n"))
	}
	var tasks []string
	if err := db.Raw(`SELECT t.complete || ':' || string_agg(tt.to_state, ',' ORDER BY tt.sort_key)
		FROM tasker_tasks t JOIN tasker_task_transitions tt USING (task_id)
		GROUP BY t.task_id ORDER BY t.task_id`).Scan(&tasks).Error; err != nil {
		t.Fatal(err)
	}
	wantTasks := []string{"true:in_progress,complete", "true:in_progress,complete", "true:in_progress,complete",
		"true:in_progress,complete", "false:in_progress", "false:in_progress", "false:in_progress", "false:in_progress"}
	if !slices.Equal(tasks, wantTasks) {
		t.Errorf("tasks (complete flag: history) %v, want %v", tasks, wantTasks)
	}
}

// TestAClaimThatMissedATransitionFailsAndWritesNothing: the engine starts claimed steps from
// the current transitions its claim read, without reading them again. A transition committed
// between the claim's snapshot and its lock (an operator cancelling a pending step, retrying
// a failed one) is missing from what the claim read: it is played here by a step locked as
// the claim locks it and given as the claim would have read it before the operator's
// transition, committed, to the claim's start (tasker_engine_start, which the claim
// statement calls with what it read). The start then fails on the history's unique sort keys
// and writes nothing: the step keeps the operator's history, unclaimed.
func TestAClaimThatMissedATransitionFailsAndWritesNothing(t *testing.T) {
	t.Parallel()
	url := dbtest.NewURL(t)
	seedChainRows(t, dbtest.Open(t, url), 2, 0)
	e, db, _ := loggedEngine(t, url, "stale")
	var steps, tasks []int64 // the first steps of the two chains, and their tasks
	if err := db.Raw(`SELECT min(workflow_step_id) FROM tasker_workflow_steps GROUP BY task_id ORDER BY task_id`).
		Scan(&steps).Error; err != nil {
		t.Fatal(err)
	}
	if err := db.Raw(`SELECT task_id FROM tasker_tasks ORDER BY task_id`).Scan(&tasks).Error; err != nil {
		t.Fatal(err)
	}
	history := func(step int64) string {
		t.Helper()
		var h string
		if err := db.Raw(`SELECT coalesce(string_agg(to_state || '@' || sort_key || CASE WHEN most_recent THEN '*' ELSE '' END,
			',' ORDER BY sort_key), '') || ' claimed=' || (SELECT in_process FROM tasker_workflow_steps WHERE workflow_step_id = ?)
			FROM tasker_workflow_step_transitions WHERE workflow_step_id = ?`, step, step).Row().Scan(&h); err != nil {
			t.Fatal(err)
		}
		return h
	}
	insert := `INSERT INTO tasker_workflow_step_transitions (workflow_step_id, to_state, from_state, sort_key, most_recent) VALUES `
	for i, c := range []struct {
		name     string
		history  []string // the step's history when the claim read it, then the operator's move
		read     models.State
		readSort int
	}{
		{"a pending step cancelled", []string{`(@step, 'cancelled', NULL, 1, true)`}, models.StatePending, 0},
		{"a failed step retried", []string{`(@step, 'in_progress', NULL, 1, false), (@step, 'error', 'in_progress', 2, true)`,
			`(@step, 'pending', 'error', 3, true)`}, models.StateError, 2},
	} {
		step := steps[i]
		for j, rows := range c.history {
			stmts := []string{insert + rows}
			if j > 0 {
				stmts = append([]string{`UPDATE tasker_workflow_step_transitions SET most_recent = false WHERE workflow_step_id = @step`}, stmts...)
			}
			execSeed(t, db, map[string]any{"step": step}, stmts...)
		}
		want := history(step)
		var from *string // the claim's read: no state when the step had no transition
		if c.readSort > 0 {
			state := string(c.read)
			from = &state
		}
		err := db.Transaction(func(tx *gorm.DB) error {
			if err := tx.Exec(`SELECT 1 FROM tasker_workflow_steps WHERE workflow_step_id = ? FOR UPDATE`, step).Error; err != nil {
				return err
			}
			return tx.Exec(`SELECT tasker_engine_start(jsonb_build_array(jsonb_build_object(
				'step_id', ?::bigint, 'task_id', ?::bigint, 'task_new', false, 'from_state', ?::varchar, 'sort_key', ?::int,
				'retry_metadata', CASE WHEN ?::varchar = 'error' THEN ?::jsonb END,
				'metadata', ?::jsonb || jsonb_build_object('attempt', 1))), ?::jsonb)`,
				step, tasks[i], from, c.readSort, from, string(e.startMeta.Retry), string(e.startMeta.Step), string(e.startMeta.Task)).Error
		})
		if !errors.Is(err, gorm.ErrDuplicatedKey) {
			t.Errorf("%s: starting the step from the claim's stale read: %v, want a unique violation (the history's sort keys)",
				c.name, err)
		}
		if got := history(step); got != want {
			t.Errorf("%s: the step's history is %q after the failed start, want %q as the operator left it", c.name, got, want)
		}
	}
}

// TestAutoClaimsInTheRecordingOfASmallBatch: with ClaimsAuto, a batch of fewer than
// claimBesideMin attempts claims in its recording, whose claim sees what the recording made
// ready; a larger one claims beside it while no other engine claims (a fresh database) and the
// last claim found a queue of ready steps. An explicit placement is kept whatever the batch.
func TestAutoClaimsInTheRecordingOfASmallBatch(t *testing.T) {
	t.Parallel()
	db := dbtest.New(t)
	place := func(claims ClaimPlacement, batch int) bool {
		t.Helper()
		e, err := New(NewService(db, nil), nil, noHandlers{}, Config{Claims: claims}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return e.rec.placeClaims(batch)
	}
	cases := []struct {
		claims ClaimPlacement
		batch  int
		beside bool
	}{
		{ClaimsAuto, 1, false},
		{ClaimsAuto, claimBesideMin - 1, false},
		{ClaimsAuto, claimBesideMin, true},
		{ClaimsBeside, 1, true},
		{ClaimsInRecording, maxRecordBatch, false},
	}
	for _, c := range cases {
		if got := place(c.claims, c.batch); got != c.beside {
			t.Errorf("placement %d, batch of %d: beside %v, want %v", c.claims, c.batch, got, c.beside)
		}
	}

	// What the last claim found decides a large batch's placement under ClaimsAuto: a claim
	// beside that took less than half its steps found no queue of ready steps (only the
	// recordings make steps ready, as in chains), and the next batches claim in their
	// recordings until one of those claims takes all it asked for.
	e, err := New(NewService(db, nil), nil, noHandlers{}, Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	r, large := e.rec, 2*claimBesideMin
	steps := []struct {
		beside     bool
		asked, got int
		want       bool // placeClaims(large) after the claim
	}{
		{true, 16, 8, true},    // half: a queue
		{true, 16, 7, false},   // less than half: none
		{false, 40, 39, false}, // in the recording, fewer than asked: still none
		{false, 40, 40, true},  // all it asked for: a queue again
		{true, 0, 0, true},     // a claim of nothing tells nothing
	}
	for i, c := range steps {
		r.noteClaim(c.beside, c.asked, c.got)
		if got := r.placeClaims(large); got != c.want {
			t.Errorf("after claim %d (%+v): a batch of %d claims beside %v, want %v", i, c, large, got, c.want)
		}
	}
	if !e.rec.placeClaims(large) || e.rec.placeClaims(claimBesideMin-1) {
		t.Error("with a queue, a large batch claims beside and a small one in its recording")
	}
}
