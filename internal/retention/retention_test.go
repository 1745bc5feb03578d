package retention

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/taskerhq/tasker/internal/errs"
	"github.com/taskerhq/tasker/internal/models"
	"github.com/taskerhq/tasker/internal/refresh"
	"github.com/taskerhq/tasker/internal/testkit/dbtest"
	"github.com/taskerhq/tasker/internal/testkit/fixture"
)

func TestParsePolicy(t *testing.T) {
	t.Parallel()
	good := map[string]string{
		"":                      "*=forever",
		"billing=30d,*=90d":     "billing=30d,*=90d",
		" a = 36h , b=forever ": "a=36h0m0s,b=forever,*=forever",
		"*=1d":                  "*=1d",
	}
	for in, want := range good {
		p, err := ParsePolicy(in)
		if err != nil || p.String() != want {
			t.Errorf("ParsePolicy(%q) = %q, %v; want %q", in, p.String(), err, want)
		}
	}
	for _, bad := range []string{"billing", "billing=", "=30d", "a=30d,a=1d", "a=-1d", "a=0d", "a=soon", "a=30x"} {
		if _, err := ParsePolicy(bad); !errs.Is(err, errs.Invalid) || !strings.Contains(err.Error(), "bad retention policy") {
			t.Errorf("ParsePolicy(%q) = %v, want a bad retention policy (errs.Invalid)", bad, err)
		}
	}
	if _, err := ConfigFromEnv(func(k string) string {
		return map[string]string{"TASKER_RETENTION": "*=30d", "TASKER_RETENTION_SCHEDULE": "every now and then"}[k]
	}); !errs.Is(err, errs.Invalid) || !strings.Contains(err.Error(), "bad retention policy") {
		t.Errorf("a bad schedule: %v", err)
	}
	if _, err := ConfigFromEnv(func(k string) string {
		return map[string]string{"TASKER_RETENTION_BATCH": "0"}[k]
	}); !errs.Is(err, errs.Invalid) || !strings.Contains(err.Error(), "bad retention policy") {
		t.Errorf("a bad batch size: %v", err)
	}
	for in, want := range map[string]int{"": 0, "25": 25, "25%": 25, " 100% ": 100, "1": 1} {
		cfg, err := ConfigFromEnv(func(k string) string { return map[string]string{"TASKER_RETENTION_DUTY": in}[k] })
		if err != nil || cfg.Duty != want {
			t.Errorf("TASKER_RETENTION_DUTY=%q: duty %d, %v; want %d", in, cfg.Duty, err, want)
		}
	}
	for _, bad := range []string{"0", "101", "-5", "half", "25%%", "0.5"} {
		if _, err := ConfigFromEnv(func(k string) string {
			return map[string]string{"TASKER_RETENTION_DUTY": bad}[k]
		}); !errs.Is(err, errs.Invalid) || !strings.Contains(err.Error(), "TASKER_RETENTION_DUTY") {
			t.Errorf("TASKER_RETENTION_DUTY=%q: %v, want an errs.Invalid error naming the variable", bad, err)
		}
	}
	for _, duty := range []int{-1, 101} {
		if _, err := New(&gorm.DB{}, Config{Duty: duty}, slog.New(slog.DiscardHandler)); !errs.Is(err, errs.Invalid) {
			t.Errorf("New with duty %d: %v, want errs.Invalid", duty, err)
		}
	}
}

const (
	IP = models.StateInProgress
	C  = models.StateComplete
	E  = models.StateError
	X  = models.StateCancelled
	R  = models.StateResolvedManually
	P  = models.StatePending
)

// oldTask creates a linear task created 60 days ago whose steps and task end in the given
// states, the task's last transition ago before now.
func oldTask(t *testing.T, b *fixture.Builder, db *gorm.DB, ago time.Duration, task []models.State, steps ...models.State) *fixture.Task {
	t.Helper()
	tk := b.Task(fixture.Linear)
	names := fixture.Linear.Steps
	for i, st := range names {
		switch s := stepState(steps, i); s {
		case C:
			tk.Transition(st.Name, ago+time.Hour, IP, C)
		case E:
			tk.Transition(st.Name, ago+time.Hour, IP, E)
		case X, R:
			tk.Transition(st.Name, ago+time.Hour, s)
		case IP:
			tk.Transition(st.Name, ago+time.Hour, IP)
		}
	}
	if len(task) > 0 {
		tk.TaskTransition(ago, task...)
	}
	if err := db.Exec(`UPDATE tasker_tasks SET created_at = now() - interval '60 days' WHERE task_id = ?`, tk.ID).Error; err != nil {
		t.Fatal(err)
	}
	return tk
}

func stepState(steps []models.State, i int) models.State {
	if len(steps) == 0 {
		return C
	}
	if i < len(steps) {
		return steps[i]
	}
	return steps[len(steps)-1]
}

func newRetainer(t *testing.T, db *gorm.DB, policy string, cfg Config) *Retainer {
	t.Helper()
	p, err := ParsePolicy(policy)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Policy = p
	r, err := New(db, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func refreshAll(t *testing.T, db *gorm.DB) {
	t.Helper()
	r, err := refresh.New(db, nil, refresh.Config{Schedules: map[string]string{
		refresh.TaskStatusSummaries: "off", refresh.StepPerformance: "off", refresh.HourlyThroughput: "off"}},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range refresh.ViewNames() {
		if out, err := r.Refresh(context.Background(), v); err != nil || out.Pending {
			t.Fatalf("refreshing %s: %+v, %v", v, out, err)
		}
	}
}

func exists(t *testing.T, db *gorm.DB, taskID int64) bool {
	t.Helper()
	var n int64
	if err := db.Raw(`SELECT count(*) FROM tasker_tasks WHERE task_id = ?`, taskID).Scan(&n).Error; err != nil {
		t.Fatal(err)
	}
	return n == 1
}

type dashboard struct {
	status []models.TaskStatusSummary
	perf   []models.StepPerformance
	hours  []models.HourlyThroughput
}

func readDashboard(t *testing.T, db *gorm.DB) dashboard {
	t.Helper()
	var d dashboard
	for _, q := range []struct {
		sql string
		dst any
	}{
		{`SELECT named_task_id, pending_count, in_progress_count, complete_count, error_count, cancelled_count,
			resolved_manually_count, total_count FROM tasker_task_status_summaries ORDER BY named_task_id`, &d.status},
		{`SELECT * FROM tasker_step_performance ORDER BY task_namespace_id, named_step_id`, &d.perf},
		{`SELECT * FROM tasker_hourly_throughput ORDER BY hour`, &d.hours},
	} {
		if err := db.Raw(q.sql).Scan(q.dst).Error; err != nil {
			t.Fatal(err)
		}
	}
	return d
}

// Only finished tasks past their namespace's period, whose rows every read model has folded
// in, are deleted, with their steps, edges and transitions; the dashboards keep counting them.
func TestRunDeletesOnlyOldFinishedFoldedInTasks(t *testing.T) {
	t.Parallel()
	db := dbtest.New(t)
	b := fixture.New(t, db)
	day := 24 * time.Hour
	done := oldTask(t, b, db, 40*day, []models.State{IP, C})
	cancelled := oldTask(t, b, db, 40*day, []models.State{X}, X)
	resolved := oldTask(t, b, db, 40*day, []models.State{IP, E, R}, C, R)
	recent := oldTask(t, b, db, 10*day, []models.State{IP, C})
	running := oldTask(t, b, db, 40*day, []models.State{IP}, C, IP)
	failed := oldTask(t, b, db, 40*day, []models.State{IP, E}, C, E)
	resolvedWithError := oldTask(t, b, db, 40*day, []models.State{IP, E, R}, C, E)
	pending := oldTask(t, b, db, 40*day, nil, P)
	refreshAll(t, db)
	before := readDashboard(t, db)

	r := newRetainer(t, db, "*=30d", Config{BatchSize: 2})
	res, err := r.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if res.Tasks != 3 || res.Batches < 2 {
		t.Fatalf("run deleted %+v; want 3 tasks in at least 2 batches of 2", res)
	}
	for _, tk := range []*fixture.Task{done, cancelled, resolved} {
		if exists(t, db, tk.ID) {
			t.Errorf("finished task %d was kept", tk.ID)
		}
	}
	for name, tk := range map[string]*fixture.Task{"recent": recent, "running": running, "failed": failed,
		"resolved with a step in error": resolvedWithError, "pending": pending} {
		if !exists(t, db, tk.ID) {
			t.Errorf("%s task %d was deleted", name, tk.ID)
		}
	}
	var orphans int64
	if err := db.Raw(`SELECT (SELECT count(*) FROM tasker_workflow_steps WHERE task_id IN ?)
		+ (SELECT count(*) FROM tasker_workflow_step_transitions st WHERE workflow_step_id IN ?)
		+ (SELECT count(*) FROM tasker_task_transitions WHERE task_id IN ?)
		+ (SELECT count(*) FROM tasker_rm_task_states WHERE task_id IN ?)`,
		[]int64{done.ID, cancelled.ID, resolved.ID}, append(append(done.StepIDs(names()...), cancelled.StepIDs(names()...)...), resolved.StepIDs(names()...)...),
		[]int64{done.ID, cancelled.ID, resolved.ID}, []int64{done.ID, cancelled.ID, resolved.ID}).Scan(&orphans).Error; err != nil {
		t.Fatal(err)
	}
	if orphans != 0 {
		t.Fatalf("%d rows of deleted tasks are left", orphans)
	}
	// The dashboards still count the deleted tasks, before and after the next refresh.
	refreshAll(t, db)
	after := readDashboard(t, db)
	if len(after.status) != len(before.status) || len(after.perf) != len(before.perf) || len(after.hours) != len(before.hours) {
		t.Fatalf("dashboard sizes changed: %d/%d/%d, were %d/%d/%d", len(after.status), len(after.perf),
			len(after.hours), len(before.status), len(before.perf), len(before.hours))
	}
	for i := range before.status {
		if before.status[i] != after.status[i] {
			t.Errorf("status summary changed:\n before %+v\n after  %+v", before.status[i], after.status[i])
		}
	}
	for i := range before.perf {
		if before.perf[i].Executions != after.perf[i].Executions || before.perf[i].Successes != after.perf[i].Successes {
			t.Errorf("step performance changed: before %+v after %+v", before.perf[i], after.perf[i])
		}
	}
	for i := range before.hours {
		if before.hours[i] != after.hours[i] {
			t.Errorf("throughput changed: before %+v after %+v", before.hours[i], after.hours[i])
		}
	}
	// A finished task whose rows a read model has not folded in yet waits for the refresh.
	notFolded := oldTask(t, b, db, 40*day, []models.State{IP, C})
	if res, err := r.Run(context.Background()); err != nil || res.Tasks != 0 || !exists(t, db, notFolded.ID) {
		t.Fatalf("run before the refresh: %+v, %v; want the task kept", res, err)
	}
	refreshAll(t, db)
	if res, err := r.Run(context.Background()); err != nil || res.Tasks != 1 || exists(t, db, notFolded.ID) {
		t.Fatalf("run after the refresh: %+v, %v; want the task deleted", res, err)
	}
	// Per namespace: a namespace kept forever keeps its old tasks.
	oldTask(t, b, db, 40*day, []models.State{IP, C})
	refreshAll(t, db)
	keep := newRetainer(t, db, fixture.Namespace+"=forever,*=1d", Config{})
	if res, err := keep.Run(context.Background()); err != nil || res.Tasks != 0 {
		t.Fatalf("run with the fixture namespace kept forever: %+v, %v", res, err)
	}
}

func names() []string {
	out := make([]string, len(fixture.Linear.Steps))
	for i, s := range fixture.Linear.Steps {
		out[i] = s.Name
	}
	return out
}

// Retention never waits on the engine's locks for long, and leaves alone a task whose work
// resumes while it runs: a task locked by the engine is skipped; a task whose step the engine
// holds is deleted only if it is still finished once the engine lets go.
func TestRunRacesWithTheEngine(t *testing.T) {
	t.Parallel()
	url := dbtest.NewURL(t)
	db := dbtest.Open(t, url)
	b := fixture.New(t, db)
	day := 24 * time.Hour
	lockedTask := oldTask(t, b, db, 40*day, []models.State{IP, C})
	resumed := oldTask(t, b, db, 40*day, []models.State{IP, E, R}, C, R)
	refreshAll(t, db)
	r := newRetainer(t, db, "*=30d", Config{LockTimeout: 5 * time.Second})

	// The engine holds the first task's row (recording a batch): retention skips it.
	engine := dbtest.Open(t, url).Begin()
	t.Cleanup(func() { engine.Rollback() })
	if err := engine.Exec(`SELECT 1 FROM tasker_tasks WHERE task_id = ? FOR UPDATE`, lockedTask.ID).Error; err != nil {
		t.Fatal(err)
	}
	// An operator holds a step of the second task and moves its task back to work.
	op := dbtest.Open(t, url).Begin()
	t.Cleanup(func() { op.Rollback() })
	step := resumed.Step(names()[5])
	if err := op.Exec(`SELECT 1 FROM tasker_workflow_steps WHERE workflow_step_id = ? FOR UPDATE`, step).Error; err != nil {
		t.Fatal(err)
	}
	type outcome struct {
		res Result
		err error
	}
	ch := make(chan outcome, 1)
	go func() {
		res, err := r.Run(context.Background())
		ch <- outcome{res, err}
	}()
	// Retention now waits for the step; the operator retries it (resolved_manually -> the
	// step moves back to pending in this test's history) and commits.
	deadline := time.Now().Add(4 * time.Second)
	for {
		var waiting bool
		if err := db.Raw(`SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE datname = current_database()
			AND wait_event_type = 'Lock' AND query LIKE '%FOR UPDATE%')`).Scan(&waiting).Error; err != nil {
			t.Fatal(err)
		}
		if waiting {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("retention did not wait for the held step")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := op.Exec(`
		WITH prev AS (UPDATE tasker_workflow_step_transitions SET most_recent = false
			WHERE workflow_step_id = ? AND most_recent RETURNING to_state)
		INSERT INTO tasker_workflow_step_transitions (workflow_step_id, to_state, from_state, sort_key, most_recent)
		SELECT ?, 'pending', (SELECT to_state FROM prev),
		       (SELECT max(sort_key) FROM tasker_workflow_step_transitions WHERE workflow_step_id = ?) + 1, true`,
		step, step, step).Error; err != nil {
		t.Fatal(err)
	}
	if err := op.Commit().Error; err != nil {
		t.Fatal(err)
	}
	var out outcome
	select {
	case out = <-ch:
	case <-time.After(10 * time.Second):
		t.Fatal("retention did not finish")
	}
	if out.err != nil || out.res.Tasks != 0 {
		t.Fatalf("run: %+v, %v; want nothing deleted", out.res, out.err)
	}
	if !exists(t, db, lockedTask.ID) || !exists(t, db, resumed.ID) {
		t.Fatal("a task the engine held, or whose work resumed, was deleted")
	}
	// Once the engine lets go, the finished task goes; the resumed one stays.
	if err := engine.Rollback().Error; err != nil {
		t.Fatal(err)
	}
	res, err := r.Run(context.Background())
	if err != nil || res.Tasks != 1 || exists(t, db, lockedTask.ID) || !exists(t, db, resumed.ID) {
		t.Fatalf("second run: %+v, %v", res, err)
	}
}

// A run with a duty cycle waits, after each batch that leaves work, (100-Duty)/Duty times the
// batch's duration, and still deletes every finished task and nothing else; a run whose
// context ends while it waits stops there, keeping what it deleted. Duty 100 never waits.
func TestRunWithADutyCycle(t *testing.T) {
	t.Parallel()
	db := dbtest.New(t)
	b := fixture.New(t, db)
	day := 24 * time.Hour
	var finished []*fixture.Task
	for range 3 {
		finished = append(finished, oldTask(t, b, db, 40*day, []models.State{IP, C}))
	}
	finished = append(finished, oldTask(t, b, db, 40*day, []models.State{X}, X))
	kept := map[string]*fixture.Task{
		"recent":                        oldTask(t, b, db, 10*day, []models.State{IP, C}),
		"running":                       oldTask(t, b, db, 40*day, []models.State{IP}, C, IP),
		"failed":                        oldTask(t, b, db, 40*day, []models.State{IP, E}, C, E),
		"resolved with a step in error": oldTask(t, b, db, 40*day, []models.State{IP, E, R}, C, E),
		"pending":                       oldTask(t, b, db, 40*day, nil, P),
	}
	refreshAll(t, db)

	// A clock that moves 100 ms per reading: every batch takes 100 ms.
	clock := func(r *Retainer) *[]time.Duration {
		var at time.Time
		var waits []time.Duration
		r.now = func() time.Time { at = at.Add(100 * time.Millisecond); return at }
		r.sleep = func(ctx context.Context, d time.Duration) error {
			waits = append(waits, d)
			if len(waits) == 2 && ctx.Value(stopKey{}) != nil {
				return context.Canceled
			}
			return nil
		}
		return &waits
	}

	// Duty 25 with batches of one task, stopped while it waits after its second batch.
	r := newRetainer(t, db, "*=30d", Config{BatchSize: 1, Duty: 25})
	waits := clock(r)
	res, err := r.Run(context.WithValue(context.Background(), stopKey{}, true))
	if !errors.Is(err, context.Canceled) || res.Tasks != 2 || len(*waits) != 2 {
		t.Fatalf("run stopped while waiting: %+v, %v, waits %v; want 2 tasks deleted, context.Canceled", res, err, *waits)
	}
	// The next run goes on to the end: three candidates (the two finished tasks left and the
	// resolved task whose step is in error, which stays) give a wait after each batch that
	// found a full batch, 300 ms each.
	*waits = nil
	res, err = r.Run(context.Background())
	if err != nil || res.Tasks != 2 || res.Batches != 2 {
		t.Fatalf("second run: %+v, %v; want the 2 finished tasks left deleted in 2 batches", res, err)
	}
	if len(*waits) != 3 || res.Paused != 900*time.Millisecond {
		t.Fatalf("second run waited %v (total %s); want 3 waits of 300ms", *waits, res.Paused)
	}
	for _, w := range *waits {
		if w != 300*time.Millisecond {
			t.Fatalf("waits %v; want 300ms each (a 100 ms batch at duty 25%%)", *waits)
		}
	}
	for _, tk := range finished {
		if exists(t, db, tk.ID) {
			t.Errorf("finished task %d was kept", tk.ID)
		}
	}
	for name, tk := range kept {
		if !exists(t, db, tk.ID) {
			t.Errorf("%s task %d was deleted", name, tk.ID)
		}
	}

	// Duty 100 never waits.
	oldTask(t, b, db, 40*day, []models.State{IP, C})
	oldTask(t, b, db, 40*day, []models.State{IP, C})
	refreshAll(t, db)
	full := newRetainer(t, db, "*=30d", Config{BatchSize: 1, Duty: 100})
	waits = clock(full)
	if res, err := full.Run(context.Background()); err != nil || res.Tasks != 2 || len(*waits) != 0 || res.Paused != 0 {
		t.Fatalf("run at duty 100: %+v, %v, waits %v; want 2 tasks deleted without waiting", res, err, *waits)
	}
}

type stopKey struct{}
