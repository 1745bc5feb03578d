package server_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/taskerhq/tasker/internal/models"
	"github.com/taskerhq/tasker/internal/statemachine"
	"github.com/taskerhq/tasker/internal/store"
	"github.com/taskerhq/tasker/internal/testkit/dbtest"
	"github.com/taskerhq/tasker/internal/testkit/fixture"
	"github.com/taskerhq/tasker/internal/testkit/wait"
)

// BenchmarkSubscriptionLatency measures how long a step transition takes to reach a
// subscriber: each operation commits one transition through internal/statemachine on a second
// pool (another process as far as the server knows) and reads the event from a
// stepTransitions subscription over a real websocket (graphql-transport-ws, the handler on an
// httptest server, the events hub listening on PostgreSQL). The latency of one operation runs
// from the moment the committing call returns to the moment the client has decoded the
// event; p50-ms and p95-ms are its percentiles, time/op the whole round (transition plus
// delivery). The step cycles in_progress → error → pending, so the benchmark runs any number
// of operations on one task.
//
//	go test ./graph/server -run '^$' -bench SubscriptionLatency -benchtime 200x
func BenchmarkSubscriptionLatency(b *testing.B) {
	e := newEnv(b)
	tk := e.fx.Task(fixture.FourStep)
	step := tk.Step("one") // the root: no parent guards its start
	other := store.New(dbtest.Open(b, e.url))
	c := e.dialWS(b, "graphql-transport-ws")
	c.subscribe("1", stepSub, map[string]any{"task": id(tk.ID)})
	wait.Until(b, 10*time.Second, "1 live subscriptions", func() bool { return e.api.Subscribers() == 1 })

	ctx := context.Background()
	cycle := []models.State{models.StateInProgress, models.StateError, models.StatePending}
	var latencies []time.Duration
	for b.Loop() {
		to := cycle[len(latencies)%len(cycle)]
		tr, err := statemachine.TransitionStep(ctx, other, step, to, nil)
		committed := time.Now()
		if err != nil {
			b.Fatalf("moving step %d to %s: %v", step, to, err)
		}
		got := c.event("1", "stepTransitions")
		latencies = append(latencies, time.Since(committed))
		if got.ID != id(tr.ID) || got.StepID != id(step) {
			b.Fatalf("event = %+v, want transition %d of step %d", got, tr.ID, step)
		}
	}
	if len(latencies) == 0 {
		b.Fatal("no transition was delivered")
	}
	slices.Sort(latencies)
	pct := func(p float64) float64 {
		i := min(len(latencies)-1, int(p*float64(len(latencies))))
		return float64(latencies[i]) / float64(time.Millisecond)
	}
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.95), "p95-ms")
}
