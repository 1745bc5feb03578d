package refresh

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/taskerhq/tasker/internal/database"
	"github.com/taskerhq/tasker/internal/errs"
	"github.com/taskerhq/tasker/internal/models"
	"github.com/taskerhq/tasker/internal/testkit/dbtest"
	"github.com/taskerhq/tasker/internal/testkit/fixture"
)

// lockKeySQL is the advisory lock key of one view's refresh (parameter $1: the view's name),
// written independently of store.TryLockReadModel: every process must use this key.
const lockKeySQL = `hashtextextended('tasker.read_model_refresh:' || $1, 0)`

// The live aggregates, written independently of db/materialized: the current state from the
// highest sort_key rather than the most_recent flag, durations from a self-join on the next
// sort_key rather than a window.
const (
	liveStatusSQL = `
		WITH cur AS (
			SELECT t.task_id, t.named_task_id, t.requested_at,
			       coalesce((SELECT to_state FROM tasker_task_transitions x WHERE x.task_id = t.task_id
			                 ORDER BY sort_key DESC LIMIT 1), 'pending') AS state,
			       (SELECT created_at FROM tasker_task_transitions x WHERE x.task_id = t.task_id
			        ORDER BY sort_key DESC LIMIT 1) AS since
			FROM tasker_tasks t
		)
		SELECT nt.named_task_id, nt.task_namespace_id, ns.name AS namespace_name, nt.name AS task_name, nt.version,
		       (SELECT count(*) FROM cur WHERE cur.named_task_id = nt.named_task_id AND state = 'pending') AS pending_count,
		       (SELECT count(*) FROM cur WHERE cur.named_task_id = nt.named_task_id AND state = 'in_progress') AS in_progress_count,
		       (SELECT count(*) FROM cur WHERE cur.named_task_id = nt.named_task_id AND state = 'complete') AS complete_count,
		       (SELECT count(*) FROM cur WHERE cur.named_task_id = nt.named_task_id AND state = 'error') AS error_count,
		       (SELECT count(*) FROM cur WHERE cur.named_task_id = nt.named_task_id AND state = 'cancelled') AS cancelled_count,
		       (SELECT count(*) FROM cur WHERE cur.named_task_id = nt.named_task_id AND state = 'resolved_manually') AS resolved_manually_count,
		       (SELECT count(*) FROM cur WHERE cur.named_task_id = nt.named_task_id) AS total_count,
		       (SELECT min(requested_at) FROM cur WHERE cur.named_task_id = nt.named_task_id AND state = 'pending') AS oldest_pending_requested_at,
		       (SELECT min(since) FROM cur WHERE cur.named_task_id = nt.named_task_id AND state = 'in_progress') AS oldest_in_progress_since
		FROM tasker_named_tasks nt JOIN tasker_task_namespaces ns USING (task_namespace_id)
		ORDER BY nt.named_task_id`

	livePerformanceSQL = `
		WITH steps AS (
			SELECT ws.workflow_step_id, ws.named_step_id, nt.task_namespace_id
			FROM tasker_workflow_steps ws JOIN tasker_tasks t USING (task_id) JOIN tasker_named_tasks nt USING (named_task_id)
		), runs AS (
			SELECT s.task_namespace_id, s.named_step_id,
			       extract(epoch FROM b.created_at - a.created_at) * 1000 AS ms
			FROM steps s
			JOIN tasker_workflow_step_transitions a ON a.workflow_step_id = s.workflow_step_id AND a.to_state = 'in_progress'
			JOIN tasker_workflow_step_transitions b ON b.workflow_step_id = a.workflow_step_id
			     AND b.sort_key = a.sort_key + 1 AND b.to_state IN ('complete', 'error')
		), counts AS (
			SELECT s.task_namespace_id, s.named_step_id,
			       sum((tr.to_state = 'in_progress')::int) AS executions,
			       sum((tr.to_state = 'complete')::int) AS successes,
			       sum((tr.to_state = 'error')::int) AS failures,
			       sum((tr.from_state = 'error' AND tr.to_state = 'pending')::int) AS retries
			FROM steps s LEFT JOIN tasker_workflow_step_transitions tr ON tr.workflow_step_id = s.workflow_step_id
			GROUP BY 1, 2
		)
		SELECT c.task_namespace_id, c.named_step_id, ns.name AS namespace_name, n.name AS step_name,
		       d.name AS dependent_system_name,
		       coalesce(c.executions, 0) AS executions, coalesce(c.successes, 0) AS successes,
		       coalesce(c.failures, 0) AS failures, coalesce(c.retries, 0) AS retries,
		       coalesce(round(c.failures::numeric / nullif(c.executions, 0), 4), 0)::float8 AS error_rate,
		       (SELECT avg(ms) FROM runs r WHERE r.task_namespace_id = c.task_namespace_id AND r.named_step_id = c.named_step_id)::float8 AS avg_duration_ms,
		       (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) FROM runs r WHERE r.task_namespace_id = c.task_namespace_id AND r.named_step_id = c.named_step_id) AS p50_duration_ms,
		       (SELECT percentile_cont(0.95) WITHIN GROUP (ORDER BY ms) FROM runs r WHERE r.task_namespace_id = c.task_namespace_id AND r.named_step_id = c.named_step_id) AS p95_duration_ms,
		       (SELECT max(ms) FROM runs r WHERE r.task_namespace_id = c.task_namespace_id AND r.named_step_id = c.named_step_id)::float8 AS max_duration_ms
		FROM counts c
		JOIN tasker_task_namespaces ns ON ns.task_namespace_id = c.task_namespace_id
		JOIN tasker_named_steps n ON n.named_step_id = c.named_step_id
		JOIN tasker_dependent_systems d ON d.dependent_system_id = n.dependent_system_id
		ORDER BY 1, 2`

	liveThroughputSQL = `
		WITH hours AS (
			SELECT date_trunc('hour', created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS hour FROM tasker_tasks
			UNION SELECT date_trunc('hour', created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' FROM tasker_task_transitions WHERE to_state IN ('complete', 'error')
			UNION SELECT date_trunc('hour', created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' FROM tasker_workflow_step_transitions WHERE to_state IN ('complete', 'error')
		)
		SELECT h.hour,
		       (SELECT count(*) FROM tasker_tasks x WHERE x.created_at >= h.hour AND x.created_at < h.hour + interval '1 hour') AS tasks_created,
		       (SELECT count(*) FROM tasker_task_transitions x WHERE x.to_state = 'complete' AND x.created_at >= h.hour AND x.created_at < h.hour + interval '1 hour') AS tasks_completed,
		       (SELECT count(*) FROM tasker_task_transitions x WHERE x.to_state = 'error' AND x.created_at >= h.hour AND x.created_at < h.hour + interval '1 hour') AS tasks_failed,
		       (SELECT count(*) FROM tasker_workflow_step_transitions x WHERE x.to_state = 'complete' AND x.created_at >= h.hour AND x.created_at < h.hour + interval '1 hour') AS steps_completed,
		       (SELECT count(*) FROM tasker_workflow_step_transitions x WHERE x.to_state = 'error' AND x.created_at >= h.hour AND x.created_at < h.hour + interval '1 hour') AS steps_failed
		FROM hours h ORDER BY h.hour`
)

func TestRefreshedViewsEqualLiveAggregates(t *testing.T) {
	t.Parallel()
	db := dbtest.New(t)
	buildHistory(t, db)
	r := newRefresher(t, db, nil, Config{})
	ctx := context.Background()
	for _, name := range ViewNames() {
		out, err := r.Refresh(ctx, name)
		if err != nil || out.Status != StatusRefreshed {
			t.Fatalf("Refresh(%s) = %+v, %v", name, out, err)
		}
	}

	t.Run("task status summaries", func(t *testing.T) {
		var live, mat []models.TaskStatusSummary
		mustScan(t, db, &live, liveStatusSQL)
		if err := db.Order("named_task_id").Find(&mat).Error; err != nil {
			t.Fatal(err)
		}
		if len(live) < 5 || len(mat) != len(live) {
			t.Fatalf("got %d materialized rows and %d live rows; want the same, at least 5", len(mat), len(live))
		}
		var sawInProgress, sawPending bool
		for i := range live {
			checkStatusRow(t, i, "materialized", mat[i], "live", live[i])
			l := live[i]
			sawInProgress = sawInProgress || l.InProgressCount > 0
			sawPending = sawPending || l.PendingCount > 0
		}
		if !sawInProgress || !sawPending {
			t.Fatal("the history has no pending or no in-progress task: the comparison proves little")
		}
	})

	t.Run("step performance", func(t *testing.T) {
		var live, mat []models.StepPerformance
		mustScan(t, db, &live, livePerformanceSQL)
		if err := db.Order("task_namespace_id, named_step_id").Find(&mat).Error; err != nil {
			t.Fatal(err)
		}
		if len(live) < 10 || len(mat) != len(live) {
			t.Fatalf("got %d materialized rows and %d live rows; want the same, at least 10", len(mat), len(live))
		}
		var retries, withDurations int64
		for i := range live {
			l, m := live[i], mat[i]
			same := l.TaskNamespaceID == m.TaskNamespaceID && l.NamedStepID == m.NamedStepID &&
				l.NamespaceName == m.NamespaceName && l.StepName == m.StepName &&
				l.DependentSystemName == m.DependentSystemName && l.Executions == m.Executions &&
				l.Successes == m.Successes && l.Failures == m.Failures && l.Retries == m.Retries &&
				floatsEqual(&l.ErrorRate, &m.ErrorRate) && floatsEqual(l.AvgDurationMs, m.AvgDurationMs) &&
				withinBound(m.P50DurationMs, l.P50DurationMs) && withinBound(m.P95DurationMs, l.P95DurationMs) &&
				floatsEqual(l.MaxDurationMs, m.MaxDurationMs)
			if !same {
				t.Errorf("row %d:\n materialized %s\n live         %s", i, fmtPerf(m), fmtPerf(l))
			}
			retries += l.Retries
			if l.P95DurationMs != nil && *l.P95DurationMs > 0 {
				withDurations++
			}
		}
		if retries == 0 || withDurations == 0 {
			t.Fatalf("history has %d retries and %d rows with durations: the comparison proves little", retries, withDurations)
		}
	})

	t.Run("hourly throughput", func(t *testing.T) {
		var live, mat []models.HourlyThroughput
		mustScan(t, db, &live, liveThroughputSQL)
		if err := db.Order("hour").Find(&mat).Error; err != nil {
			t.Fatal(err)
		}
		if len(live) < 5 || len(mat) != len(live) {
			t.Fatalf("got %d materialized rows and %d live rows; want the same, at least 5", len(mat), len(live))
		}
		for i := range live {
			checkThroughputRow(t, i, "materialized", mat[i], "live", live[i])
		}
	})
}

func fmtPerf(p models.StepPerformance) string {
	f := func(v *float64) any {
		if v == nil {
			return nil
		}
		return *v
	}
	return fmt.Sprintf("%s/%s exec=%d ok=%d fail=%d retry=%d rate=%v avg=%v p50=%v p95=%v max=%v",
		p.NamespaceName, p.StepName, p.Executions, p.Successes, p.Failures, p.Retries, p.ErrorRate,
		f(p.AvgDurationMs), f(p.P50DurationMs), f(p.P95DurationMs), f(p.MaxDurationMs))
}

func TestTwoRefreshersNeverRefreshOneViewAtOnce(t *testing.T) {
	t.Parallel()
	url := dbtest.NewURL(t)
	dbA, dbB, dbC := dbtest.Open(t, url), dbtest.Open(t, url), dbtest.Open(t, url)
	buildHistory(t, dbC)
	rA := newRefresher(t, dbA, nil, Config{ProcessID: "process-a", Schedules: offSchedules()})
	rB := newRefresher(t, dbB, nil, Config{ProcessID: "process-b", Schedules: offSchedules()})
	ctx := context.Background()
	view := StepPerformance

	// While a third session holds the view's lock, both skip and log nothing.
	before := len(refreshLog(t, dbC, view))
	conn, err := dbC.DB()
	if err != nil {
		t.Fatal(err)
	}
	held, err := conn.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := held.ExecContext(ctx, `SELECT pg_advisory_lock(`+lockKeySQL+`)`, view); err != nil {
		t.Fatal(err)
	}
	for _, r := range []*Refresher{rA, rB} {
		out, err := r.Refresh(ctx, view)
		if err != nil || out.Status != StatusSkippedLocked {
			t.Fatalf("%s with the lock held elsewhere: %+v, %v; want skipped_locked", r.cfg.ProcessID, out, err)
		}
	}
	if n := len(refreshLog(t, dbC, view)); n != before {
		t.Fatalf("skipped refreshes logged %d rows", n-before)
	}
	if _, err := held.ExecContext(ctx, `SELECT pg_advisory_unlock(`+lockKeySQL+`)`, view); err != nil {
		t.Fatal(err)
	}
	_ = held.Close()

	// Both hammer the view until each goroutine has refreshed it 3 times; every logged refresh
	// starts after the previous one finished.
	var wg sync.WaitGroup
	var mu sync.Mutex
	refreshed := map[string]int{}
	deadline := time.Now().Add(30 * time.Second)
	for _, r := range []*Refresher{rA, rB, rA, rB} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for done := 0; done < 3; {
				if time.Now().After(deadline) {
					t.Errorf("%s refreshed only %d times before the deadline", r.cfg.ProcessID, done)
					return
				}
				out, err := r.Refresh(ctx, view)
				if err != nil {
					t.Errorf("%s: %v", r.cfg.ProcessID, err)
					return
				}
				if out.Status == StatusRefreshed {
					done++
					mu.Lock()
					refreshed[r.cfg.ProcessID]++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	rows := refreshLog(t, dbC, view)[before:]
	if len(rows) != refreshed["process-a"]+refreshed["process-b"] || len(rows) == 0 {
		t.Fatalf("logged %d refreshes, outcomes say %v", len(rows), refreshed)
	}
	by := map[string]int{}
	for i, row := range rows {
		by[row.RefreshedBy]++
		if row.Error != nil {
			t.Errorf("refresh %d failed: %s", row.ID, *row.Error)
		}
		if i > 0 && row.StartedAt.Before(rows[i-1].FinishedAt) {
			t.Errorf("refresh %d by %s started at %s, before refresh %d by %s finished at %s",
				row.ID, row.RefreshedBy, row.StartedAt, rows[i-1].ID, rows[i-1].RefreshedBy, rows[i-1].FinishedAt)
		}
	}
	if by["process-a"] == 0 || by["process-b"] == 0 {
		t.Fatalf("refreshes by process: %v; want both to have refreshed", by)
	}
}

func TestBurstOfWritesCostsAtMostTwoRefreshes(t *testing.T) {
	t.Parallel()
	url := dbtest.NewURL(t)
	db := dbtest.Open(t, url)
	hub := startHub(t, url)
	tk := fixture.New(t, db).Task(fixture.Linear)
	// A generous debounce: the burst is meant to land inside one window even on a loaded machine.
	const debounce = 6 * time.Second
	r := newRefresher(t, db, hub, Config{Debounce: debounce, MinInterval: time.Millisecond, Schedules: offSchedules()})
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	view := StepPerformance
	var t0 time.Time
	mustScan(t, db, &t0, `SELECT clock_timestamp()`)

	// 100 step transitions, each its own single-statement transaction: in_progress, error,
	// pending, ... per step.
	cycle := []models.State{models.StateInProgress, models.StateError, models.StatePending}
	names := stepNames(fixture.Linear)
	began := time.Now()
	var last time.Time
	for i := range 100 {
		last = writeStepTransition(t, db, tk.Step(names[i%len(names)]), cycle[(i/len(names))%len(cycle)])
	}
	took := time.Since(began)
	if took >= debounce {
		t.Fatalf("100 writes took %s; the test needs them within the %s debounce", took, debounce)
	}

	// Quiet: the last write was marked, a refresh after it cleared the mark, nothing pending.
	vr := r.views[view]
	waitFor(t, 20*time.Second, "the burst to be refreshed", func() bool {
		var st models.ReadModelState
		if err := db.Where("name = ?", view).Take(&st).Error; err != nil {
			t.Fatal(err)
		}
		vr.mu.Lock()
		idle := vr.timer == nil && !vr.dirty
		vr.mu.Unlock()
		return idle && len(vr.sem) == 0 && st.MarkedAt != nil && st.MarkedAt.After(last) && st.StaleSince == nil
	})
	var n int64
	mustScan(t, db, &n, `SELECT count(*) FROM tasker_read_model_refreshes
		WHERE view_name = ? AND trigger = 'event' AND started_at >= ? AND error IS NULL`, view, t0)
	if n < 1 || n > 2 {
		t.Fatalf("100 writes in %s caused %d refreshes; want 1 or 2", took, n)
	}
	// The refreshed view holds the burst: 6 steps, 100 transitions of which 36 (6 rounds of 6 steps) into in_progress.
	var executions int64
	mustScan(t, db, &executions, `SELECT sum(executions) FROM tasker_step_performance`)
	if executions != 36 {
		t.Fatalf("step performance counts %d executions after the burst, want 36", executions)
	}
	t.Logf("100 writes in %s: %d refresh(es)", took, n)
}

// writeStepTransition appends one transition to a step's history in one statement (one
// transaction, one notification) and returns its created_at.
func writeStepTransition(t *testing.T, db *gorm.DB, stepID int64, to models.State) time.Time {
	t.Helper()
	var at time.Time
	mustScan(t, db, &at, `
		WITH prev AS (
			UPDATE tasker_workflow_step_transitions SET most_recent = false
			WHERE workflow_step_id = ? AND most_recent RETURNING to_state, sort_key
		)
		INSERT INTO tasker_workflow_step_transitions (workflow_step_id, to_state, from_state, sort_key, most_recent)
		SELECT ?, ?, (SELECT to_state FROM prev),
		       coalesce((SELECT max(sort_key) FROM tasker_workflow_step_transitions WHERE workflow_step_id = ?), 0) + 1, true
		RETURNING created_at`, stepID, stepID, string(to), stepID)
	return at
}

// lockAndWaitForRefresh holds an ACCESS EXCLUSIVE lock on a table that view reads, starts a
// refresh of view and returns once that refresh, folding changes into the view's aggregate
// tables, waits on the lock. release lets the refresh go on.
func lockAndWaitForRefresh(t *testing.T, r *Refresher, view, table string) (done <-chan Outcome, release func()) {
	t.Helper()
	ctx := context.Background()
	sqlDB := database.SQL(r.db)
	tx, err := sqlDB.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.ExecContext(ctx, `LOCK TABLE `+table+` IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	ch := make(chan Outcome, 1)
	go func() {
		out, _ := r.Refresh(ctx, view)
		ch <- out
	}()
	waitFor(t, 10*time.Second, "the refresh to wait on the table lock", func() bool {
		var waiting bool
		err := sqlDB.QueryRowContext(ctx, `SELECT EXISTS (
			SELECT 1 FROM pg_stat_activity a
			JOIN pg_locks l ON l.pid = a.pid AND l.relation = $1::regclass AND NOT l.granted
			WHERE a.datname = current_database() AND a.wait_event_type = 'Lock'
			  AND a.query LIKE '%created_xid%')`, table).Scan(&waiting)
		if err != nil {
			t.Fatal(err)
		}
		return waiting
	})
	var once sync.Once
	release = func() { once.Do(func() { _ = tx.Rollback() }) }
	t.Cleanup(release)
	return ch, release
}

func TestReadsAreNotBlockedByAConcurrentRefresh(t *testing.T) {
	t.Parallel()
	db := dbtest.New(t)
	buildHistory(t, db)
	r := newRefresher(t, db, nil, Config{Schedules: offSchedules()})
	ctx := context.Background()
	if out, err := r.Refresh(ctx, StepPerformance); err != nil || out.Status != StatusRefreshed {
		t.Fatalf("first refresh: %+v, %v", out, err)
	}
	done, release := lockAndWaitForRefresh(t, r, StepPerformance, "tasker_workflow_step_transitions")

	// The refresh is in progress (it holds its lock on the view); reading the view answers.
	readCtx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	got, err := models.ReadStepPerformance(readCtx, db, "", 100)
	if err != nil {
		t.Fatalf("reading during a refresh: %v", err)
	}
	if len(got.Rows) == 0 || got.RefreshedAt == nil {
		t.Fatalf("read during a refresh returned %d rows, refreshed at %v", len(got.Rows), got.RefreshedAt)
	}
	select {
	case out := <-done:
		t.Fatalf("refresh finished while the table was locked: %+v", out)
	default:
	}
	release()
	select {
	case out := <-done:
		if out.Status != StatusRefreshed {
			t.Fatalf("refresh after the lock was released: %+v", out)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("refresh did not finish after the lock was released")
	}
}

func TestFailedRefreshIsRecordedAndTheNextSucceeds(t *testing.T) {
	t.Parallel()
	db := dbtest.New(t)
	buildHistory(t, db)
	r := newRefresher(t, db, nil, Config{Timeout: 300 * time.Millisecond, Schedules: offSchedules()})
	ctx := context.Background()
	view := TaskStatusSummaries
	first, err := r.Refresh(ctx, view)
	if err != nil {
		t.Fatal(err)
	}
	var rowsBefore int64
	mustScan(t, db, &rowsBefore, `SELECT count(*) FROM tasker_task_status_summaries`)

	// A lock on a table the view reads outlasts the statement timeout.
	done, release := lockAndWaitForRefresh(t, r, view, "tasker_tasks")
	var failed Outcome
	select {
	case failed = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("refresh did not time out")
	}
	release()
	if failed.Status != StatusFailed || failed.Err == nil || !strings.Contains(failed.Err.Error(), "statement timeout") {
		t.Fatalf("refresh under a lock: %+v; want failed with a statement timeout", failed)
	}
	log := refreshLog(t, db, view)
	lastRow := log[len(log)-1]
	if lastRow.Error == nil || !strings.Contains(*lastRow.Error, "statement timeout") || lastRow.RowCount != nil ||
		lastRow.Trigger != "manual" || lastRow.RefreshedBy != r.cfg.ProcessID {
		t.Fatalf("logged failure: %+v", lastRow)
	}
	statuses, err := models.ReadModelStatuses(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	st := statusOf(t, statuses, view)
	if st.LastError == nil || !strings.Contains(*st.LastError, "statement timeout") {
		t.Fatalf("status after a failure: last_error %v", st.LastError)
	}
	if st.LastRefreshedAt == nil || !st.LastRefreshedAt.Equal(first.FinishedAt) {
		t.Fatalf("status after a failure: last_refreshed_at %v, want the previous success %v", st.LastRefreshedAt, first.FinishedAt)
	}
	var rowsAfter int64
	mustScan(t, db, &rowsAfter, `SELECT count(*) FROM tasker_task_status_summaries`)
	if rowsAfter != rowsBefore {
		t.Fatalf("the failed refresh changed the view: %d rows, had %d", rowsAfter, rowsBefore)
	}

	next, err := r.Refresh(ctx, view)
	if err != nil || next.Status != StatusRefreshed {
		t.Fatalf("refresh after the failure: %+v, %v", next, err)
	}
	statuses, err = models.ReadModelStatuses(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	st = statusOf(t, statuses, view)
	if st.LastError != nil || st.LastRefreshedAt == nil || !st.LastRefreshedAt.Equal(next.FinishedAt) || st.Stale {
		t.Fatalf("status after recovery: %+v", st)
	}
}

func statusOf(t *testing.T, statuses []models.ReadModelStatus, name string) models.ReadModelStatus {
	t.Helper()
	for _, s := range statuses {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no status for %s in %+v", name, statuses)
	return models.ReadModelStatus{}
}

func TestScheduleRefreshesAndLifecycleIsIdempotent(t *testing.T) {
	t.Parallel()
	db := dbtest.New(t)
	sched := offSchedules()
	sched[HourlyThroughput] = "@every 1s"
	r := newRefresher(t, db, nil, Config{Schedules: sched})
	ctx := context.Background()
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.Start(ctx); err != nil {
		t.Fatalf("second Start: %v", err)
	}
	waitFor(t, 10*time.Second, "a scheduled refresh in the log", func() bool {
		var n int64
		mustScan(t, db, &n, `SELECT count(*) FROM tasker_read_model_refreshes
			WHERE view_name = ? AND trigger = 'schedule' AND error IS NULL`, HourlyThroughput)
		return n > 0
	})
	var others int64
	mustScan(t, db, &others, `SELECT count(*) FROM tasker_read_model_refreshes
		WHERE view_name <> ? AND trigger = 'schedule'`, HourlyThroughput)
	if others != 0 {
		t.Fatalf("views with schedule off were refreshed %d times", others)
	}
	stopCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := r.Stop(stopCtx); err != nil {
		t.Fatal(err)
	}
	if err := r.Stop(stopCtx); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if err := r.Start(ctx); !errors.Is(err, ErrStopped) {
		t.Fatalf("Start after Stop: %v, want ErrStopped", err)
	}
	// On-demand refreshes still work on a stopped refresher.
	if out, err := r.Refresh(ctx, HourlyThroughput); err != nil || out.Status != StatusRefreshed {
		t.Fatalf("Refresh after Stop: %+v, %v", out, err)
	}
}

func TestBadInputIsRefusedWithAClearError(t *testing.T) {
	t.Parallel()
	db := dbtest.New(t)
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

	cfg, err := ConfigFromEnv(env(map[string]string{
		"TASKER_REFRESH_SCHEDULE":                   "*/5 * * * *",
		"TASKER_REFRESH_SCHEDULE_STEP_PERFORMANCE":  "@every 30s",
		"TASKER_REFRESH_DEBOUNCE":                   "2s",
		"TASKER_REFRESH_MIN_INTERVAL":               "20s",
		"TASKER_REFRESH_TIMEOUT":                    "1m",
		"TASKER_REFRESH_SCHEDULE_HOURLY_THROUGHPUT": "off",
	}))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{TaskStatusSummaries: "*/5 * * * *", StepPerformance: "@every 30s", HourlyThroughput: "off"}
	for k, v := range want {
		if cfg.Schedules[k] != v {
			t.Errorf("schedule of %s = %q, want %q", k, cfg.Schedules[k], v)
		}
	}
	if cfg.Debounce != 2*time.Second || cfg.MinInterval != 20*time.Second || cfg.Timeout != time.Minute {
		t.Errorf("durations: %+v", cfg)
	}

	for key, val := range map[string]string{
		"TASKER_REFRESH_SCHEDULE_TASK_STATUS_SUMMARIES": "every minute",
		"TASKER_REFRESH_DEBOUNCE":                       "-1s",
		"TASKER_REFRESH_TIMEOUT":                        "soon",
	} {
		_, err := ConfigFromEnv(env(map[string]string{key: val}))
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("%s=%q: error %v, want one naming the variable", key, val, err)
		}
	}
	if _, err := New(nil, nil, Config{}, testLog(t)); err == nil {
		t.Error("New without a database succeeded")
	}
	if _, err := New(db, nil, Config{Schedules: map[string]string{"tasker_nope": "@hourly"}}, testLog(t)); err == nil ||
		!strings.Contains(err.Error(), "tasker_nope") {
		t.Errorf("schedule of an unknown view: %v", err)
	}
	r := newRefresher(t, db, nil, Config{})
	if _, err := r.Refresh(context.Background(), "tasker_nope"); !errs.Is(err, errs.NotFound) ||
		!strings.Contains(err.Error(), "tasker_nope") {
		t.Errorf("Refresh of an unknown view: %v", err)
	}
	var n int64
	mustScan(t, db, &n, `SELECT count(*) FROM tasker_read_model_refreshes WHERE trigger <> 'migration'`)
	if n != 0 {
		t.Errorf("refused input logged %d refreshes", n)
	}
}

func TestDashboardReadsTheMaterializedViews(t *testing.T) {
	t.Parallel()
	db := dbtest.New(t)
	ctx := context.Background()

	// A fresh database reports every view as refreshed by the migration that created it.
	statuses, err := models.ReadModelStatuses(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	names := make([]string, len(statuses))
	for i, s := range statuses {
		names[i] = s.Name
		if s.LastRefreshedAt == nil || s.Stale || s.LastError != nil || s.RowCount == nil {
			t.Errorf("fresh database: %+v", s)
		}
	}
	want := ViewNames()
	sort.Strings(want)
	if strings.Join(names, ",") != strings.Join(want, ",") {
		t.Fatalf("read models %v, want %v", names, want)
	}

	buildHistory(t, db)
	r := newRefresher(t, db, nil, Config{Schedules: offSchedules()})
	for _, name := range ViewNames() {
		if _, err := r.Refresh(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	sum, err := models.ReadTaskStatusSummaries(ctx, db, "billing")
	if err != nil {
		t.Fatal(err)
	}
	if len(sum.Rows) != 2 || sum.Rows[0].TaskName != "invoice" || sum.Rows[0].PendingCount != 1 ||
		sum.Rows[1].TaskName != "unused" || sum.Rows[1].TotalCount != 0 || sum.RefreshedAt == nil {
		t.Fatalf("billing summaries: %+v", sum)
	}
	age := sum.Rows[0].OldestPendingAge(time.Now())
	if age == nil || *age < 71*time.Hour || *age > 73*time.Hour {
		t.Fatalf("oldest pending age %v, want about 72h", age)
	}
	perf, err := models.ReadStepPerformance(ctx, db, fixture.Namespace, 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(perf.Rows) != 3 || perf.Rows[0].Executions < perf.Rows[2].Executions {
		t.Fatalf("top 3 steps: %+v", perf.Rows)
	}
	thr, err := models.ReadHourlyThroughput(ctx, db, 48)
	if err != nil {
		t.Fatal(err)
	}
	var created int64
	for i, row := range thr.Rows {
		created += row.TasksCreated
		if i > 0 && !row.Hour.Equal(thr.Rows[i-1].Hour.Add(time.Hour)) {
			t.Fatalf("hours are not consecutive at %d: %s after %s", i, row.Hour, thr.Rows[i-1].Hour)
		}
	}
	if len(thr.Rows) != 48 || created != 12 {
		t.Fatalf("48 hours of throughput: %d rows, %d tasks created; want 48 rows, 12 tasks", len(thr.Rows), created)
	}
	for _, bad := range []int{0, -1, models.MaxStepPerformanceLimit + 1} {
		if _, err := models.ReadStepPerformance(ctx, db, "", bad); !errs.Is(err, errs.Invalid) {
			t.Errorf("limit %d: %v", bad, err)
		}
	}
	if _, err := models.ReadHourlyThroughput(ctx, db, 0); !errs.Is(err, errs.Invalid) {
		t.Errorf("0 hours: %v", err)
	}
	// Read models refuse writes.
	if err := db.Create(&models.HourlyThroughput{Hour: time.Now()}).Error; !errors.Is(err, models.ErrReadOnly) {
		t.Errorf("creating a throughput row: %v, want ErrReadOnly", err)
	}
}
