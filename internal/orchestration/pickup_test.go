package orchestration_test

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/taskerhq/tasker/internal/events"
	"github.com/taskerhq/tasker/internal/orchestration"
	"github.com/taskerhq/tasker/internal/testkit/fixture"
)

// pickupWatch reports, through its own events hub (like another process), when a task's first
// step moves to in_progress.
type pickupWatch struct {
	mu      sync.Mutex
	started map[int64]time.Time // task id → when its first in_progress event arrived
	arrived chan struct{}
}

func newPickupWatch(t testing.TB, url string) *pickupWatch {
	t.Helper()
	w := &pickupWatch{started: map[int64]time.Time{}, arrived: make(chan struct{}, 1)}
	hub := events.NewHub(url, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = hub.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-hub.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("events hub did not connect")
	}
	// The filter runs on the hub's goroutine as each notification is decoded: the time it
	// records is the arrival of the in_progress transition, not a later poll.
	sub := hub.Subscribe(func(ev events.Event) bool {
		if ev.Channel != events.ChannelStepTransitions || ev.To != "in_progress" {
			return false
		}
		w.mu.Lock()
		if _, ok := w.started[ev.TaskID]; !ok {
			w.started[ev.TaskID] = time.Now()
		}
		w.mu.Unlock()
		select {
		case w.arrived <- struct{}{}:
		default:
		}
		return false
	})
	t.Cleanup(sub.Close)
	return w
}

// wait returns when task's first step started, failing after timeout.
func (w *pickupWatch) wait(t testing.TB, task int64, timeout time.Duration) time.Time {
	t.Helper()
	deadline := time.After(timeout)
	for {
		w.mu.Lock()
		at, ok := w.started[task]
		w.mu.Unlock()
		if ok {
			return at
		}
		select {
		case <-w.arrived:
		case <-deadline:
			t.Fatalf("the first step of task %d did not start within %s", task, timeout)
		}
	}
}

// TestIdleEngineStartsANewTaskOnItsNotification: an idle engine whose poll interval is an hour
// starts the first step of a new task well within the poll: the task's creation publishes
// tasker_tasks_created at commit, and the claim loop wakes on it.
func TestIdleEngineStartsANewTaskOnItsNotification(t *testing.T) {
	h := newHarness(t, nil, fixture.NoopOneYAML)
	watch := newPickupWatch(t, h.url)
	h.engine(orchestration.Config{PollInterval: time.Hour, Workers: 4})
	for range 3 { // the engine goes back to sleep between tasks
		id := h.create("bench", "noop_one", "")
		watch.wait(t, id, 30*time.Second)
		h.waitTasks("complete", 30*time.Second, id)
	}
}

// BenchmarkPickup measures how soon an idle engine starts a new task: one one-step task at a
// time is created through CreateTask, and the time from CreateTask returning to its step's
// in_progress transition arriving at another process's events hub is recorded. The next task
// is created once the previous one is complete, so the engine is idle each time. It reports
// the median and the 99th percentile in milliseconds.
func BenchmarkPickup(b *testing.B) {
	h := newHarness(b, nil, fixture.NoopOneYAML)
	watch := newPickupWatch(b, h.url)
	h.engine(orchestration.Config{PollInterval: time.Hour})
	const tasks = 200
	lat := make([]time.Duration, 0, tasks*b.N)
	b.ResetTimer()
	for range b.N {
		for range tasks {
			id := h.create("bench", "noop_one", "")
			created := time.Now()
			lat = append(lat, watch.wait(b, id, 30*time.Second).Sub(created))
			b.StopTimer()
			h.waitTasks("complete", 30*time.Second, id)
			b.StartTimer()
		}
	}
	b.StopTimer()
	slices.Sort(lat)
	pct := func(p float64) float64 {
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(0, "ns/op")
}
