package refresh

import (
	"context"
	"testing"
	"time"

	"github.com/taskerhq/tasker/internal/models"
	"github.com/taskerhq/tasker/internal/testkit/dbtest"
	"github.com/taskerhq/tasker/internal/testkit/fixture"
)

// A refresher that starts refreshes only the views written since their last refresh: fresh
// views cost one index-driven check each and are not refreshed.
func TestStartRefreshesOnlyViewsWrittenSinceTheirRefresh(t *testing.T) {
	t.Parallel()
	url := dbtest.NewURL(t)
	db := dbtest.Open(t, url)
	ctx := context.Background()
	tk := fixture.New(t, db).Task(fixture.Linear)

	// Refreshed by hand after the task was written: every view is fresh.
	manual := newRefresher(t, db, nil, Config{Schedules: offSchedules()})
	for _, v := range Views {
		if _, err := manual.Refresh(ctx, v.Name); err != nil {
			t.Fatal(err)
		}
	}
	for _, v := range Views {
		if !manual.fresh(ctx, manual.views[v.Name]) {
			t.Fatalf("%s is not fresh right after its refresh", v.Name)
		}
	}

	// A step transition written while nobody listens: the views that read step transitions
	// are no longer fresh; the task status summaries are.
	writeStepTransition(t, db, tk.Step(stepNames(fixture.Linear)[0]), models.StateInProgress)
	want := map[string]bool{TaskStatusSummaries: true, StepPerformance: false, HourlyThroughput: false}
	for name, fresh := range want {
		if got := manual.fresh(ctx, manual.views[name]); got != fresh {
			t.Fatalf("%s fresh = %v after a step transition, want %v", name, got, fresh)
		}
	}

	// A refresher starting now refreshes the two stale views, and not the fresh one.
	var t0 time.Time
	mustScan(t, db, &t0, `SELECT clock_timestamp()`)
	r := newRefresher(t, db, startHub(t, url), Config{Debounce: 50 * time.Millisecond, MinInterval: time.Millisecond, Schedules: offSchedules()})
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the stale views to be refreshed", func() bool {
		var n int64
		mustScan(t, db, &n, `SELECT count(DISTINCT view_name) FROM tasker_read_model_refreshes
			WHERE view_name IN (?, ?) AND trigger = 'event' AND started_at >= ? AND error IS NULL`, StepPerformance, HourlyThroughput, t0)
		return n == 2
	})
	stopCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := r.Stop(stopCtx); err != nil { // waits for every freshness check
		t.Fatal(err)
	}
	var n int64
	mustScan(t, db, &n, `SELECT count(*) FROM tasker_read_model_refreshes WHERE view_name = ? AND started_at >= ?`, TaskStatusSummaries, t0)
	var st models.ReadModelState
	if err := db.Where("name = ?", TaskStatusSummaries).Take(&st).Error; err != nil {
		t.Fatal(err)
	}
	if n != 0 || st.StaleSince != nil {
		t.Fatalf("the fresh %s was refreshed %d times and marked stale since %v at start-up, want neither", TaskStatusSummaries, n, st.StaleSince)
	}
}
