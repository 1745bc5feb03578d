package refresh

import (
	"context"
	"log/slog"
	"math"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/taskerhq/tasker/internal/events"
	"github.com/taskerhq/tasker/internal/models"
	"github.com/taskerhq/tasker/internal/testkit/eventstest"
	"github.com/taskerhq/tasker/internal/testkit/fixture"
)

func testLog(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// newRefresher builds a refresher over gdb, stopped when t ends.
func newRefresher(t testing.TB, gdb *gorm.DB, hub *events.Hub, cfg Config) *Refresher {
	t.Helper()
	r, err := New(gdb, hub, cfg, testLog(t))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := r.Stop(ctx); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	return r
}

// offSchedules disables every view's schedule.
func offSchedules() map[string]string {
	m := map[string]string{}
	for _, v := range Views {
		m[v.Name] = "off"
	}
	return m
}

// startHub runs an events hub on url until t ends.
func startHub(t *testing.T, url string) *events.Hub {
	t.Helper()
	return eventstest.Start(t, url, testLog(t))
}

// waitFor polls cond every 20ms until it holds or the deadline passes.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func mustExec(t testing.TB, db *gorm.DB, sql string, args ...any) {
	t.Helper()
	if err := db.Exec(sql, args...).Error; err != nil {
		t.Fatalf("exec %q: %v", sql, err)
	}
}

func mustScan(t testing.TB, db *gorm.DB, dst any, sql string, args ...any) {
	t.Helper()
	if err := db.Raw(sql, args...).Scan(dst).Error; err != nil {
		t.Fatalf("query %q: %v", sql, err)
	}
}

// refreshLog reads the refresh log rows of view, oldest first.
func refreshLog(t testing.TB, db *gorm.DB, view string) []models.ReadModelRefresh {
	t.Helper()
	var rows []models.ReadModelRefresh
	if err := db.Where("view_name = ?", view).Order("started_at, id").Find(&rows).Error; err != nil {
		t.Fatalf("reading refresh log: %v", err)
	}
	return rows
}

// The task and step states, abbreviated for the histories the tests write.
const (
	P  = models.StatePending
	IP = models.StateInProgress
	C  = models.StateComplete
	E  = models.StateError
	X  = models.StateCancelled
	R  = models.StateResolvedManually
)

// buildHistory writes a varied history with the fixture: tasks of three shapes in every task
// state, steps completed, failed, retried and cancelled with distinct durations, a second
// namespace and a named task without tasks.
func buildHistory(t *testing.T, db *gorm.DB) {
	t.Helper()
	b := fixture.New(t, db)
	st := func(s ...models.State) []models.State { return s }
	taskPaths := [][]models.State{
		nil, nil,
		st(IP), st(IP),
		st(IP, C), st(IP, C), st(IP, C),
		st(IP, E), st(IP, E, P),
		st(X), st(IP, E, R),
	}
	shapes := []fixture.Shape{fixture.FourStep, fixture.Linear, fixture.Diamond}
	for i, path := range taskPaths {
		tk := b.Task(shapes[i%len(shapes)])
		if len(path) > 0 {
			tk.TaskTransition(time.Duration(i+1)*time.Hour, path...)
		}
		for j, name := range stepNames(shapes[i%len(shapes)]) {
			base := time.Duration(2+i)*time.Hour + time.Duration(j)*time.Minute
			d := time.Duration(1+(i*7+j*3)%11) * time.Second
			switch (i + j) % 6 {
			case 0: // ran and completed
				tk.Transition(name, base, IP)
				tk.Transition(name, base-d, C)
			case 1: // failed, retried, completed
				tk.Transition(name, base, IP)
				tk.Transition(name, base-d, E, P)
				tk.Transition(name, base-2*d, IP)
				tk.Transition(name, base-5*d, C)
			case 2: // failed
				tk.Transition(name, base, IP)
				tk.Transition(name, base-d, E)
			case 3: // still running
				tk.Transition(name, base, IP)
			case 4: // cancelled while running, then nothing
				tk.Transition(name, base, IP, X)
			case 5: // never ran
			}
		}
	}
	// A second namespace with a named task and one task, and a named task without tasks.
	mustExec(t, db, `INSERT INTO tasker_task_namespaces (name) VALUES ('billing')`)
	mustExec(t, db, `INSERT INTO tasker_named_tasks (task_namespace_id, name, version)
		SELECT task_namespace_id, 'invoice', '1.2.0' FROM tasker_task_namespaces WHERE name = 'billing'`)
	mustExec(t, db, `INSERT INTO tasker_named_tasks (task_namespace_id, name, version)
		SELECT task_namespace_id, 'unused', '0.1.0' FROM tasker_task_namespaces WHERE name = 'billing'`)
	mustExec(t, db, `INSERT INTO tasker_tasks (named_task_id, requested_at)
		SELECT named_task_id, now() - interval '3 days' FROM tasker_named_tasks WHERE name = 'invoice'`)
}

func stepNames(s fixture.Shape) []string {
	out := make([]string, len(s.Steps))
	for i, st := range s.Steps {
		out[i] = st.Name
	}
	return out
}

func floatsEqual(a, b *float64) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return math.Abs(*a-*b) < 1e-6
}

// PercentileBound is the documented relative error of the incremental percentiles.
const PercentileBound = 0.01

// withinBound reports whether the approximate percentile got is within PercentileBound
// (relative) of the exact one, or both are nil.
func withinBound(got, exact *float64) bool {
	if got == nil || exact == nil {
		return got == nil && exact == nil
	}
	return math.Abs(*got-*exact) <= PercentileBound*math.Abs(*exact)+1e-9
}

func timesEqual(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return a.Equal(*b)
}

// checkStatusRow fails t unless the task status summary row i read as got equals want: its
// times equal to the microsecond (timesEqual), every other column exactly.
func checkStatusRow(t *testing.T, i int, gotName string, got models.TaskStatusSummary, wantName string, want models.TaskStatusSummary) {
	t.Helper()
	if !timesEqual(want.OldestPendingRequestedAt, got.OldestPendingRequestedAt) ||
		!timesEqual(want.OldestInProgressSince, got.OldestInProgressSince) {
		t.Errorf("status row %d times: %s %v/%v, %s %v/%v", i, gotName, got.OldestPendingRequestedAt,
			got.OldestInProgressSince, wantName, want.OldestPendingRequestedAt, want.OldestInProgressSince)
	}
	got.OldestPendingRequestedAt, got.OldestInProgressSince = nil, nil
	want.OldestPendingRequestedAt, want.OldestInProgressSince = nil, nil
	if got != want {
		t.Errorf("status row %d:\n %-12s %+v\n %-12s %+v", i, gotName, got, wantName, want)
	}
}

// checkThroughputRow fails t unless the hourly throughput row i read as got equals want: the
// same hour (as an instant), every other column exactly.
func checkThroughputRow(t *testing.T, i int, gotName string, got models.HourlyThroughput, wantName string, want models.HourlyThroughput) {
	t.Helper()
	if !want.Hour.Equal(got.Hour) {
		t.Errorf("throughput row %d: hour %s, %s %s", i, got.Hour, wantName, want.Hour)
	}
	got.Hour, want.Hour = time.Time{}, time.Time{}
	if got != want {
		t.Errorf("throughput row %d:\n %-12s %+v\n %-12s %+v", i, gotName, got, wantName, want)
	}
}
