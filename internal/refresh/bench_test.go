package refresh

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/taskerhq/tasker/internal/models"
	"github.com/taskerhq/tasker/internal/testkit/bench"
	"github.com/taskerhq/tasker/internal/testkit/dbtest"
)

// loadBenchData writes steps workflow steps, 10 per task, with plain set-based SQL: 4
// namespaces of 5 named tasks, 10 named steps, tasks spread over the last week, and a history
// per step: 60% ran and completed, 20% failed once then completed after a retry, 10% failed,
// 10% never ran; a quarter of the tasks each pending, in progress, complete and in error. The
// notification triggers are off while loading (nobody listens to this database).
func loadBenchData(b testing.TB, db *gorm.DB, steps int) {
	b.Helper()
	began := time.Now()
	tasks := steps / 10
	for _, q := range []string{
		`ALTER TABLE tasker_tasks DISABLE TRIGGER USER`,
		`ALTER TABLE tasker_task_transitions DISABLE TRIGGER USER`,
		`ALTER TABLE tasker_workflow_step_transitions DISABLE TRIGGER USER`,
		`INSERT INTO tasker_task_namespaces (name) SELECT 'bench_ns_' || g FROM generate_series(1, 4) g`,
		`INSERT INTO tasker_dependent_systems (name) VALUES ('bench')`,
		`INSERT INTO tasker_named_tasks (task_namespace_id, name)
			SELECT ns.task_namespace_id, 'bench_task_' || g
			FROM tasker_task_namespaces ns, generate_series(1, 5) g WHERE ns.name LIKE 'bench_ns_%'`,
		`INSERT INTO tasker_named_steps (dependent_system_id, name)
			SELECT d.dependent_system_id, 'bench_step_' || g FROM tasker_dependent_systems d, generate_series(1, 10) g
			WHERE d.name = 'bench'`,
	} {
		mustExec(b, db, q)
	}
	mustExec(b, db, `
		WITH nt AS (SELECT array_agg(named_task_id ORDER BY named_task_id) AS ids FROM tasker_named_tasks WHERE name LIKE 'bench_task_%')
		INSERT INTO tasker_tasks (named_task_id, requested_at, created_at, updated_at)
		SELECT nt.ids[1 + g % 20], at, at, at
		FROM nt, generate_series(1, ?) g,
		     LATERAL (SELECT now() - make_interval(hours => g % 168, secs => g % 3600) AS at) x`, tasks)
	mustExec(b, db, `
		INSERT INTO tasker_workflow_steps (task_id, named_step_id)
		SELECT t.task_id, s.named_step_id FROM tasker_tasks t
		CROSS JOIN tasker_named_steps s WHERE s.name LIKE 'bench_step_%'`)
	// Histories by class; created_at = task creation + a + b * d seconds, d in 1..97.
	mustExec(b, db, `
		WITH pat(cls, sk, from_state, to_state, a, b, last) AS (VALUES
			('ok', 1, NULL, 'in_progress', 60, 0, false), ('ok', 2, 'in_progress', 'complete', 60, 1, true),
			('retry', 1, NULL, 'in_progress', 60, 0, false), ('retry', 2, 'in_progress', 'error', 60, 1, false),
			('retry', 3, 'error', 'pending', 61, 1, false), ('retry', 4, 'pending', 'in_progress', 62, 1, false),
			('retry', 5, 'in_progress', 'complete', 62, 3, true),
			('fail', 1, NULL, 'in_progress', 60, 0, false), ('fail', 2, 'in_progress', 'error', 60, 2, true)
		), classed AS (
			SELECT ws.workflow_step_id, t.created_at, 1 + ws.workflow_step_id % 97 AS d,
			       CASE WHEN ws.workflow_step_id % 10 < 6 THEN 'ok' WHEN ws.workflow_step_id % 10 < 8 THEN 'retry'
			            WHEN ws.workflow_step_id % 10 = 8 THEN 'fail' ELSE 'none' END AS cls
			FROM tasker_workflow_steps ws JOIN tasker_tasks t USING (task_id)
		)
		INSERT INTO tasker_workflow_step_transitions
			(workflow_step_id, to_state, from_state, sort_key, most_recent, created_at, updated_at)
		SELECT c.workflow_step_id, p.to_state, p.from_state, p.sk, p.last,
		       c.created_at + make_interval(secs => p.a + p.b * c.d), c.created_at + make_interval(secs => p.a + p.b * c.d)
		FROM classed c JOIN pat p USING (cls)`)
	mustExec(b, db, `
		WITH pat(cls, sk, from_state, to_state, last) AS (VALUES
			(1, 1, NULL, 'in_progress', true),
			(2, 1, NULL, 'in_progress', false), (2, 2, 'in_progress', 'complete', true),
			(3, 1, NULL, 'in_progress', false), (3, 2, 'in_progress', 'error', true)
		)
		INSERT INTO tasker_task_transitions (task_id, to_state, from_state, sort_key, most_recent, created_at, updated_at)
		SELECT t.task_id, p.to_state, p.from_state, p.sk, p.last,
		       t.created_at + make_interval(mins => p.sk * 10), t.created_at + make_interval(mins => p.sk * 10)
		FROM tasker_tasks t JOIN pat p ON p.cls = t.task_id % 4`)
	for _, q := range []string{
		`ALTER TABLE tasker_tasks ENABLE TRIGGER USER`,
		`ALTER TABLE tasker_task_transitions ENABLE TRIGGER USER`,
		`ALTER TABLE tasker_workflow_step_transitions ENABLE TRIGGER USER`,
		`ANALYZE`,
	} {
		mustExec(b, db, q)
	}
	var n int64
	mustScan(b, db, &n, `SELECT count(*) FROM tasker_workflow_steps`)
	b.Logf("loaded %d steps (%d tasks) in %s", n, tasks, time.Since(began).Round(time.Millisecond))
}

// liveDashboard computes the same three dashboard answers as the materialized reads, from the
// tables: each read model's exact definition (the *_exact view) run as a query.
type liveDashboard struct{ status, perf, throughput string }

func newLiveDashboard(b *testing.B, db *gorm.DB) liveDashboard {
	b.Helper()
	def := func(view string) string {
		var sql string
		mustScan(b, db, &sql, `SELECT pg_get_viewdef(?::regclass, true)`, view+"_exact")
		return strings.TrimSuffix(strings.TrimSpace(sql), ";")
	}
	return liveDashboard{
		status: `SELECT * FROM (` + def(TaskStatusSummaries) + `) v ORDER BY namespace_name, task_name, version`,
		perf: `SELECT * FROM (` + def(StepPerformance) + `) v
			ORDER BY executions DESC, namespace_name, step_name, named_step_id LIMIT 100`,
		throughput: `SELECT s.hour, coalesce(h.tasks_created, 0) AS tasks_created,
			coalesce(h.tasks_completed, 0) AS tasks_completed, coalesce(h.tasks_failed, 0) AS tasks_failed,
			coalesce(h.steps_completed, 0) AS steps_completed, coalesce(h.steps_failed, 0) AS steps_failed
			FROM generate_series(date_trunc('hour', now(), 'UTC') - interval '71 hours',
			                     date_trunc('hour', now(), 'UTC'), interval '1 hour') AS s(hour)
			LEFT JOIN (` + def(HourlyThroughput) + `) h ON h.hour = s.hour ORDER BY s.hour`,
	}
}

// BenchmarkReadModels measures, in a database of each size of TASKER_BENCH_STEPS steps
// (sub-benchmarks steps=N/...): the dashboard (status summaries, top 100 steps, 72 hours of
// throughput) read from the incremental read models and computed live from the tables, and
// one refresh of each read model after 1,000 new transitions (written outside the timer).
// The read and the refresh should cost the same at every size.
func BenchmarkReadModels(b *testing.B) {
	for _, steps := range bench.Sizes(b, "TASKER_BENCH_STEPS", "10000", 10) {
		benchReadModels(b, steps)
	}
}

func benchReadModels(b *testing.B, steps int) {
	db := dbtest.New(b)
	loadBenchData(b, db, steps)
	r, err := New(db, nil, Config{Schedules: offSchedules()}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	for _, name := range ViewNames() {
		if out, err := r.Refresh(ctx, name); err != nil {
			b.Fatalf("refreshing %s: %v", name, err)
		} else {
			b.Logf("steps=%d: %s: %d rows, first refresh %s", steps, name, out.RowCount, out.Duration.Round(time.Millisecond))
		}
	}
	live := newLiveDashboard(b, db)
	size := fmt.Sprintf("steps=%d/", steps)

	b.Run(size+"dashboard/incremental", func(b *testing.B) {
		for b.Loop() {
			if _, err := models.ReadTaskStatusSummaries(ctx, db, ""); err != nil {
				b.Fatal(err)
			}
			if _, err := models.ReadStepPerformance(ctx, db, "", 100); err != nil {
				b.Fatal(err)
			}
			if _, err := models.ReadHourlyThroughput(ctx, db, 72); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run(size+"dashboard/live", func(b *testing.B) {
		for b.Loop() {
			var s []models.TaskStatusSummary
			var p []models.StepPerformance
			var h []models.HourlyThroughput
			for _, q := range []struct {
				sql string
				dst any
			}{{live.status, &s}, {live.perf, &p}, {live.throughput, &h}} {
				if err := db.WithContext(ctx).Raw(q.sql).Scan(q.dst).Error; err != nil {
					b.Fatal(err)
				}
			}
			if len(s) == 0 || len(p) == 0 || len(h) != 72 {
				b.Fatalf("live dashboard: %d summaries, %d steps, %d hours", len(s), len(p), len(h))
			}
		}
	})
	round := 0
	for _, name := range ViewNames() {
		b.Run(size+"refresh/"+strings.TrimPrefix(name, "tasker_"), func(b *testing.B) {
			// Catch up, untimed, with what earlier sub-benchmarks wrote.
			if _, err := r.Refresh(ctx, name); err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				b.StopTimer()
				writeNewTransitions(b, db, round)
				round++
				b.StartTimer()
				if out, err := r.Refresh(ctx, name); err != nil || out.Status != StatusRefreshed {
					b.Fatalf("refresh: %+v, %v", out, err)
				}
			}
		})
	}
}

// writeNewTransitions writes 1,000 new transitions, as a busy minute would, in one
// transaction: 450 steps run and finish (900 step transitions, 5 s apart) and 100 tasks
// move (100 task transitions), picked round-robin by round. The rows are appended to the
// histories with sort keys above every earlier one (not flagged most_recent: only the read
// models read them).
func writeNewTransitions(b *testing.B, db *gorm.DB, round int) {
	b.Helper()
	err := db.Transaction(func(tx *gorm.DB) error {
		if err := tx.Exec(`
			WITH s AS (
				SELECT workflow_step_id FROM tasker_workflow_steps ORDER BY workflow_step_id
				OFFSET (? * 450) % (SELECT count(*) FROM tasker_workflow_steps) LIMIT 450
			)
			INSERT INTO tasker_workflow_step_transitions (workflow_step_id, to_state, from_state, sort_key, most_recent, created_at)
			SELECT workflow_step_id, v.to_state, v.from_state, 1000 + 2 * ? + v.k, false, now() - v.ago
			FROM s, (VALUES ('in_progress', 'pending', 0, interval '5 seconds'),
			                ('complete', 'in_progress', 1, interval '0')) AS v(to_state, from_state, k, ago)`,
			round, round).Error; err != nil {
			return err
		}
		return tx.Exec(`
			WITH t AS (
				SELECT task_id FROM tasker_tasks ORDER BY task_id
				OFFSET (? * 100) % (SELECT count(*) FROM tasker_tasks) LIMIT 100
			)
			INSERT INTO tasker_task_transitions (task_id, to_state, sort_key, most_recent)
			SELECT task_id, 'in_progress', 1000 + ?, false FROM t`, round, round).Error
	})
	if err != nil {
		b.Fatalf("writing new transitions: %v", err)
	}
}
