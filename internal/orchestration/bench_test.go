package orchestration_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/taskerhq/tasker/internal/orchestration"
	"github.com/taskerhq/tasker/internal/seed"
	"github.com/taskerhq/tasker/internal/shape"
	"github.com/taskerhq/tasker/internal/testkit/dbtest"
	"github.com/taskerhq/tasker/internal/testkit/fixture"
)

// BenchmarkThroughput measures end-to-end throughput of noop steps: N tasks of five steps
// (a small diamond) are created, then 1 or 2 engines (separate pools, like processes, with the
// default configuration: 32 workers each) drain them. It reports steps/s and the seconds to drain all N tasks. N is
// TASKER_BENCH_TASKS (default 200; make bench runs 10000).
//
// TASKER_BENCH_STUCK=N writes, before the N tasks, that many old tasks of the diamond shape
// that cannot run (internal/seed): TASKER_BENCH_STUCK_KIND failed (the default: tasks in
// error with exhausted steps and pending steps behind them) or backoff (tasks in_progress
// with a step waiting out an hour's backoff and pending steps behind it).
//
// stats=stale runs the same drain on the worst statistics: the tables were analysed while
// empty and autovacuum is off for them, so the planner sees the N tasks through statistics
// of an empty database (a fresh database, or autovacuum at the wrong moment).
func BenchmarkThroughput(b *testing.B) {
	n := 200
	if v := os.Getenv("TASKER_BENCH_TASKS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 {
			b.Fatalf("TASKER_BENCH_TASKS=%q is not a positive number", v)
		}
	}
	stuck := 0
	if v := os.Getenv("TASKER_BENCH_STUCK"); v != "" {
		var err error
		if stuck, err = strconv.Atoi(v); err != nil || stuck < 0 {
			b.Fatalf("TASKER_BENCH_STUCK=%q is not a non-negative number", v)
		}
	}
	mix := seed.Mix{Failed: 1}
	switch k := os.Getenv("TASKER_BENCH_STUCK_KIND"); k {
	case "", "failed":
	case "backoff":
		mix = seed.Mix{Backoff: 1}
	default:
		b.Fatalf("TASKER_BENCH_STUCK_KIND=%q is neither failed nor backoff", k)
	}
	for _, stale := range []bool{false, true} {
		for _, engines := range []int{1, 2} {
			name := fmt.Sprintf("engines=%d/tasks=%d", engines, n)
			if stale {
				name = fmt.Sprintf("stats=stale/engines=%d/tasks=%d", engines, n)
			}
			b.Run(name, func(b *testing.B) {
				var total time.Duration
				for range b.N {
					b.StopTimer()
					h := newHarness(b, nil, fixture.NoopDiamondYAML)
					if stuck > 0 {
						if _, err := seed.Run(context.Background(), h.db, 1, seed.Batch{Shape: shape.Diamond,
							Tasks: stuck, Mix: mix, Frontier: -1}); err != nil {
							b.Fatal(err)
						}
						if err := h.db.Exec(`VACUUM ANALYZE`).Error; err != nil {
							b.Fatal(err)
						}
					}
					if stale {
						orchestration.AnalyseEmpty(b, h.db)
					}
					for range n {
						h.create("bench", "noop_five", "")
					}
					b.StartTimer()
					begin := time.Now()
					for e := range engines {
						h.engine(orchestration.Config{WorkerID: fmt.Sprintf("bench-%d", e)})
					}
					waitAllComplete(b, h, n, 30*time.Minute)
					total += time.Since(begin)
					b.StopTimer()
				}
				secs := total.Seconds() / float64(b.N)
				b.ReportMetric(float64(n*5)/secs, "steps/s")
				b.ReportMetric(secs, "s/drain")
				b.ReportMetric(0, "ns/op")
			})
		}
	}
}

func waitAllComplete(b testing.TB, h *harness, n int, timeout time.Duration) {
	b.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var done int
		if err := h.db.Raw(`SELECT count(*) FROM tasker_task_transitions WHERE most_recent AND to_state = 'complete'`).
			Row().Scan(&done); err != nil {
			b.Fatal(err)
		}
		if done == n {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d tasks complete after %s", done, n, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// BenchmarkCreateTasks measures task creation through CreateTasks: batches of MaxBatch
// five-step diamond tasks (noop_five), half of them with an idempotency key, into one
// database. It reports steps/s and tasks/s created: checked, as the test databases' owner (the
// foreign keys checked), and trusted, as the server's administrator (who may skip them:
// migration 00051).
func BenchmarkCreateTasks(b *testing.B) {
	for _, trusted := range []bool{false, true} {
		b.Run(map[bool]string{false: "checked", true: "trusted"}[trusted], func(b *testing.B) {
			h := newHarness(b, nil, fixture.NoopDiamondYAML)
			svc := h.svc
			if trusted {
				svc = orchestration.NewService(openDB(b, dbtest.AsServerAdmin(b, h.url)), h.reg)
			}
			reqs := make([]orchestration.CreateTaskRequest, orchestration.MaxBatch)
			ctx := context.Background()
			b.ResetTimer()
			begin := time.Now()
			for i := range b.N {
				for j := range reqs {
					reqs[j] = orchestration.CreateTaskRequest{Namespace: "bench", Name: "noop_five",
						Context: json.RawMessage(`{"n": 1}`)}
					if j%2 == 0 {
						reqs[j].IdempotencyKey = fmt.Sprintf("bench-%d-%d", i, j)
					}
				}
				res, err := svc.CreateTasks(ctx, reqs)
				if err != nil || len(res.Errors) > 0 || res.Created() != len(reqs) {
					b.Fatalf("CreateTasks: %d created, %v, %v", res.Created(), res.Errors, err)
				}
			}
			secs := time.Since(begin).Seconds()
			tasks := float64(b.N * len(reqs))
			b.ReportMetric(tasks*5/secs, "steps/s")
			b.ReportMetric(tasks/secs, "tasks/s")
		})
	}
}
