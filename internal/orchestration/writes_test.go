package orchestration_test

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/taskerhq/tasker/internal/database"
	"github.com/taskerhq/tasker/internal/events"
	"github.com/taskerhq/tasker/internal/orchestration"
	"github.com/taskerhq/tasker/internal/testkit/fixture"
)

// tableWrites is the rows a table had inserted, updated and deleted.
type tableWrites struct{ Ins, Upd, Del int64 }

// writeStats reads the cumulative row writes of every table and the commits of the current
// database, once every other connection to it has gone (a backend flushes its statistics as
// it exits, so that nothing counted is still pending), except the test's own events hub.
func writeStats(t testing.TB, db *gorm.DB) (map[string]tableWrites, int64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var others int
		if err := db.Raw(`SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND pid <> pg_backend_pid()
			AND application_name <> 'tasker_test_watch'`).Row().Scan(&others); err != nil {
			t.Fatal(err)
		}
		if others == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d other connections to the test database are still open", others)
		}
		time.Sleep(20 * time.Millisecond)
	}
	var rows []struct {
		Relname             string
		NTupIns, NTupUpd, D int64
	}
	if err := db.Transaction(func(tx *gorm.DB) error {
		if err := tx.Exec(`SELECT pg_stat_clear_snapshot()`).Error; err != nil {
			return err
		}
		return tx.Raw(`SELECT relname, n_tup_ins, n_tup_upd, n_tup_del AS d FROM pg_stat_user_tables
			WHERE relname LIKE 'tasker\_%'`).Scan(&rows).Error
	}); err != nil {
		t.Fatal(err)
	}
	out := map[string]tableWrites{}
	for _, r := range rows {
		if r.NTupIns+r.NTupUpd+r.D > 0 {
			out[r.Relname] = tableWrites{r.NTupIns, r.NTupUpd, r.D}
		}
	}
	var commits int64
	if err := db.Raw(`SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()`).
		Row().Scan(&commits); err != nil {
		t.Fatal(err)
	}
	return out, commits
}

// drainWrites creates n one-step noop tasks, then runs one engine (workers workers) until
// they are all complete, and returns the rows the engine wrote per table and the commits
// of the database meanwhile (the engine's, its pool's and its events hub's connection set-up
// included). Completion is watched through another events hub, so that the test itself
// writes and commits nothing meanwhile.
func drainWrites(t testing.TB, n, workers int) (map[string]tableWrites, int64) {
	t.Helper()
	h := newHarness(t, nil, fixture.NoopOneYAML)
	for range n {
		h.create("bench", "noop_one", "")
	}
	if err := database.Close(h.db); err != nil { // flush the statistics of the set-up
		t.Fatal(err)
	}
	stats := openDB(t, h.url)
	completed := make(chan struct{}, n)
	hub := events.NewHub(h.url+"&application_name=tasker_test_watch", slog.New(slog.DiscardHandler))
	hubCtx, stopHub := context.WithCancel(context.Background())
	hubDone := make(chan struct{})
	go func() { defer close(hubDone); _ = hub.Run(hubCtx) }()
	defer func() { stopHub(); <-hubDone }()
	<-hub.Ready()
	sub := hub.Subscribe(func(ev events.Event) bool {
		if ev.Channel == events.ChannelTaskTransitions && ev.To == "complete" {
			completed <- struct{}{}
		}
		return false
	})
	defer sub.Close()

	before, commitsBefore := writeStats(t, stats)
	db, err := database.Open(context.Background(), h.url, database.Options{MaxOpenConns: 10})
	if err != nil {
		t.Fatal(err)
	}
	engHub := events.NewHub(h.url, slog.New(slog.DiscardHandler))
	engHubCtx, stopEngHub := context.WithCancel(context.Background())
	engHubDone := make(chan struct{})
	go func() { defer close(engHubDone); _ = engHub.Run(engHubCtx) }()
	<-engHub.Ready()
	eng, err := orchestration.New(orchestration.NewService(db, nil), engHub, orchestration.NewConfiguredHandlers(h.handlers),
		orchestration.Config{Workers: workers, PollInterval: time.Hour}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := eng.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	timeout := time.After(2 * time.Minute)
	for i := range n {
		select {
		case <-completed:
		case <-timeout:
			t.Fatalf("%d of %d tasks complete after 2 minutes", i, n)
		}
	}
	if err := eng.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	stopEngHub()
	<-engHubDone
	if err := database.Close(db); err != nil {
		t.Fatal(err)
	}
	after, commitsAfter := writeStats(t, stats)
	delta := map[string]tableWrites{}
	for table, a := range after {
		b := before[table]
		if d := (tableWrites{a.Ins - b.Ins, a.Upd - b.Upd, a.Del - b.Del}); d != (tableWrites{}) {
			delta[table] = d
		}
	}
	return delta, commitsAfter - commitsBefore
}

func formatWrites(w map[string]tableWrites, n int) string {
	var b strings.Builder
	var ins, upd, del int64
	for _, table := range slices.Sorted(maps.Keys(w)) {
		d := w[table]
		fmt.Fprintf(&b, "  %s: %d inserted, %d updated, %d deleted\n", table, d.Ins, d.Upd, d.Del)
		ins, upd, del = ins+d.Ins, upd+d.Upd, del+d.Del
	}
	fmt.Fprintf(&b, "  per step: %.2f inserted, %.2f updated, %.2f deleted",
		float64(ins)/float64(n), float64(upd)/float64(n), float64(del)/float64(n))
	return b.String()
}

// TestRowsWrittenPerOneStepTask pins the rows the engine writes to run a one-step task, so
// that the write path cannot grow unnoticed: per task, the step row is updated by its claim
// and by its outcome; the step gets its in_progress and complete transitions, the task its
// in_progress and complete transitions, each new transition clearing most_recent on the
// previous one of its step or task; the task row is marked complete.
func TestRowsWrittenPerOneStepTask(t *testing.T) {
	const n = 20
	got, commits := drainWrites(t, n, 4)
	want := map[string]tableWrites{
		"tasker_workflow_steps":            {Upd: 2 * n},
		"tasker_workflow_step_transitions": {Ins: 2 * n, Upd: n},
		"tasker_task_transitions":          {Ins: 2 * n, Upd: n},
		"tasker_tasks":                     {Upd: n},
	}
	if !maps.Equal(got, want) {
		t.Errorf("rows written for %d one-step tasks:\n%s\nwant:\n%s", n, formatWrites(got, n), formatWrites(want, n))
	}
	t.Logf("rows written for %d one-step tasks:\n%s\ncommits: %d (%.2f per step)", n, formatWrites(got, n),
		commits, float64(commits)/n)
}

// oneStepHistoriesSQL selects, over every step, the count of exact one-step histories
// (pending -> in_progress -> complete: histories) and of steps whose transitions were all
// written by one transaction (one_transaction).
const oneStepHistoriesSQL = `
	(SELECT count(*) FROM (
	     SELECT workflow_step_id FROM tasker_workflow_step_transitions
	     GROUP BY workflow_step_id
	     HAVING array_agg(coalesce(from_state, '-') || '>' || to_state ORDER BY sort_key)
	            = ARRAY['->in_progress', 'in_progress>complete']) h) AS histories,
	(SELECT count(*) FROM (
	     SELECT workflow_step_id FROM tasker_workflow_step_transitions
	     GROUP BY workflow_step_id HAVING count(DISTINCT created_xid) < 2) o) AS one_transaction`

// TestBusyEngineClaimsInTheRecordingTransaction drains one-step tasks with a few workers,
// claiming in the recordings' transactions: with Claims at ClaimsInRecording
// (TASKER_CLAIM_BESIDE=off), and with ClaimsAuto while another engine holds a live claim (a
// step of another task, claimed by another worker id, its lease unexpired). It reads, from the
// transactions that wrote the step transitions (created_xid), where each step was started:
// only the claims that fill the engine's idle workers and its room to prefetch run on their
// own (workers + prefetch steps in all); every later step is claimed in the transaction that
// recorded the steps whose slots it takes over. The
// histories stay exact: every step went pending -> in_progress -> complete, with its two
// transitions written by two different transactions.
func TestBusyEngineClaimsInTheRecordingTransaction(t *testing.T) {
	t.Parallel()
	t.Run("off", func(t *testing.T) {
		t.Parallel()
		claimsInRecordings(t, orchestration.ClaimsInRecording, false)
	})
	t.Run("auto, another engine claiming", func(t *testing.T) {
		t.Parallel()
		claimsInRecordings(t, orchestration.ClaimsAuto, true)
	})
}

func claimsInRecordings(t *testing.T, claims orchestration.ClaimPlacement, otherEngine bool) {
	const n, workers, prefetch = 40, 4, 4
	h := newHarness(t, nil, fixture.NoopOneYAML)
	if otherEngine {
		other := h.create("bench", "noop_one", "")
		if err := h.db.Exec(`UPDATE tasker_workflow_steps SET in_process = true, claimed_by = 'another-engine',
			claim_token = gen_random_uuid(), claim_expires_at = now() + interval '1 hour' WHERE task_id = ?`, other).Error; err != nil {
			t.Fatal(err)
		}
	}
	for range n {
		h.create("bench", "noop_one", "")
	}
	h.engine(orchestration.Config{Workers: workers, Prefetch: prefetch, Claims: claims})
	waitAllComplete(t, h, n, time.Minute)
	var row struct {
		Started, StartedAlone, Histories, OneTransaction int
	}
	if err := h.db.Raw(`
		WITH started AS (
		    SELECT s.workflow_step_id, s.created_xid,
		           NOT EXISTS (SELECT 1 FROM tasker_workflow_step_transitions c
		                       WHERE c.created_xid = s.created_xid AND c.to_state = 'complete') AS alone
		    FROM tasker_workflow_step_transitions s
		    WHERE s.to_state = 'in_progress'
		)
		SELECT (SELECT count(*) FROM started) AS started,
		       (SELECT count(*) FROM started WHERE alone) AS started_alone, ` + oneStepHistoriesSQL).
		Scan(&row).Error; err != nil {
		t.Fatal(err)
	}
	if row.Started != n || row.StartedAlone > workers+prefetch || row.Histories != n || row.OneTransaction != 0 {
		t.Fatalf("%d steps started, %d of them by claims that recorded nothing (want at most %d), %d exact histories "+
			"(want %d), %d steps started and finished in one transaction (want 0)",
			row.Started, row.StartedAlone, workers+prefetch, row.Histories, n, row.OneTransaction)
	}
	t.Logf("%d of %d steps claimed in a recording transaction", row.Started-row.StartedAlone, n)
}

// TestABusyEngineClaimsBesideItsRecording: an engine with ClaimsBeside (what ClaimsAuto, the
// default, does alone on its database with batches of claimBesideMin attempts or more) claims
// the next steps for the workers of a batch in a transaction of its own, at the same time as
// it records the batch, and runs them as soon as that claim commits. The
// recording of the first task's step is held back here (another transaction holds the task's
// row, which the recording locks first); steps of the later tasks must still be claimed and
// started meanwhile, on the slots of the batch being recorded. Once the row is free, every
// task completes with an exact history: each step went pending -> in_progress -> complete, its
// two transitions written by two transactions.
func TestABusyEngineClaimsBesideItsRecording(t *testing.T) {
	t.Parallel()
	const n, workers = 6, 2
	h := newHarness(t, nil, fixture.NoopOneYAML)
	tasks := make([]int64, n)
	for i := range tasks {
		tasks[i] = h.create("bench", "noop_one", "")
	}
	holder := h.db.Begin()
	if err := holder.Exec(`SELECT 1 FROM tasker_tasks WHERE task_id = ? FOR UPDATE`, tasks[0]).Error; err != nil {
		t.Fatal(err)
	}
	defer holder.Rollback()
	h.engine(orchestration.Config{Workers: workers, Claims: orchestration.ClaimsBeside})
	// The first claim takes the first two tasks' steps; the recording of the first waits for
	// its task's row.
	started := func(ids []int64) (count int) {
		t.Helper()
		if err := h.db.Raw(`SELECT count(*) FROM tasker_workflow_step_transitions st
			JOIN tasker_workflow_steps s USING (workflow_step_id)
			WHERE s.task_id IN ? AND st.to_state = 'in_progress'`, ids).Row().Scan(&count); err != nil {
			t.Fatal(err)
		}
		return count
	}
	deadline := time.Now().Add(20 * time.Second)
	for started(tasks[workers:]) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no step of tasks %v started while the recording of task %d's step waited for its row",
				tasks[workers:], tasks[0])
		}
		time.Sleep(10 * time.Millisecond)
	}
	var recorded int
	if err := h.db.Raw(`SELECT count(*) FROM tasker_workflow_step_transitions st
		JOIN tasker_workflow_steps s USING (workflow_step_id)
		WHERE s.task_id = ? AND st.to_state = 'complete'`, tasks[0]).Row().Scan(&recorded); err != nil {
		t.Fatal(err)
	}
	if recorded != 0 {
		t.Fatalf("task %d's step was recorded while another transaction held the task's row", tasks[0])
	}
	holder.Rollback()
	waitAllComplete(t, h, n, time.Minute)
	var row struct{ Histories, OneTransaction int }
	if err := h.db.Raw(`SELECT ` + oneStepHistoriesSQL).
		Scan(&row).Error; err != nil {
		t.Fatal(err)
	}
	if row.Histories != n || row.OneTransaction != 0 {
		t.Fatalf("%d exact histories (want %d), %d steps started and finished in one transaction (want 0)",
			row.Histories, n, row.OneTransaction)
	}
}
