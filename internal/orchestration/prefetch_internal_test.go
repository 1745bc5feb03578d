package orchestration

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/taskerhq/tasker/internal/events"
	"github.com/taskerhq/tasker/internal/handler"
	"github.com/taskerhq/tasker/internal/store"
	"github.com/taskerhq/tasker/internal/testkit/dbtest"
	"github.com/taskerhq/tasker/internal/testkit/eventstest"
	"github.com/taskerhq/tasker/internal/testkit/wait"
)

func TestPrefetchDepthKeepsTheWaitForAWorkerShort(t *testing.T) {
	t.Parallel()
	cases := []struct {
		workers, limit int
		avg            time.Duration
		want           int
	}{
		{32, 32, 0, 0},                       // no handler timed yet: none
		{32, 0, time.Millisecond, 0},         // prefetching off
		{32, 32, time.Millisecond, 32},       // fast handlers: up to the limit
		{32, 32, 100 * time.Millisecond, 16}, // 32 workers start 16 steps in 50ms
		{4, 8, 100 * time.Millisecond, 2},
		{32, 32, 2 * time.Second, 0}, // slow handlers: the steps stay in the database
		{1, 4, 60 * time.Millisecond, 0},
	}
	for _, c := range cases {
		if got := prefetchDepth(c.workers, c.limit, c.avg); got != c.want {
			t.Errorf("prefetchDepth(%d workers, limit %d, avg %s) = %d, want %d", c.workers, c.limit, c.avg, got, c.want)
		}
	}
}

func TestHandlerTimesAverageMovesAnEighthAtATimeAndGrowsWithALongHandler(t *testing.T) {
	t.Parallel()
	var h handlerTimes
	if h.average() != 0 {
		t.Fatalf("average before any handler: %s, want 0", h.average())
	}
	h.add(80 * time.Millisecond)
	if got := h.average(); got != 80*time.Millisecond {
		t.Fatalf("after one handler of 80ms: %s", got)
	}
	h.add(0) // a handler that took no measurable time counts as 1ns
	if got, want := h.average(), 80*time.Millisecond-(80*time.Millisecond-1)/8; got != want {
		t.Fatalf("after a handler of 0: %s, want %s", got, want)
	}
	// The estimate is the average, or how long the oldest handler running has run, whichever
	// is longer: handlers grown long stop the prefetching before the first of them returns.
	if got := h.estimate(time.Millisecond); got != h.average() {
		t.Fatalf("estimate with a handler running for 1ms: %s, want the average %s", got, h.average())
	}
	if got := h.estimate(time.Second); got != time.Second {
		t.Fatalf("estimate with a handler running for 1s: %s, want 1s", got)
	}
	var none handlerTimes
	if got := none.estimate(time.Second); got != 0 {
		t.Fatalf("estimate before any handler returned: %s, want 0", got)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 1000 {
				h.add(time.Millisecond)
			}
		}()
	}
	wg.Wait()
	if got := h.average(); got < time.Millisecond || got > time.Millisecond+time.Microsecond {
		t.Fatalf("after 8,000 handlers of 1ms from 8 goroutines: %s, want about 1ms", got)
	}
}

// probe runs every step with a handler that takes d (or waits for release, when set, from its
// block-th call on), and notes, as each handler starts, how many handlers run at once and how
// many steps the engine holds (claimed and not yet recorded or released).
type probe struct {
	e       *Engine
	d       time.Duration
	block   int32 // from this call on (counting from 1), handlers wait for release; 0: never
	release chan struct{}

	calls, running atomic.Int32
	mu             sync.Mutex
	maxRunning     int
	maxHeld        int
	tasks          []int64 // the tasks of the handlers called, in call order
}

func (p *probe) StepHandler(context.Context, *store.Store, int64, string) (handler.Handler, time.Duration, error) {
	return handler.HandlerFunc(func(ctx context.Context, in handler.Input) (handler.Output, error) {
		call := p.calls.Add(1)
		running := int(p.running.Add(1))
		defer p.running.Add(-1)
		p.mu.Lock()
		p.tasks = append(p.tasks, in.TaskID)
		p.maxRunning = max(p.maxRunning, running)
		p.maxHeld = max(p.maxHeld, len(p.e.slots))
		p.mu.Unlock()
		if p.block > 0 && call >= p.block {
			select {
			case <-p.release:
			case <-ctx.Done():
				return handler.Output{}, ctx.Err()
			}
		}
		time.Sleep(p.d)
		return handler.Output{Results: json.RawMessage(`{}`)}, nil
	}), time.Minute, nil
}

func (p *probe) held() (running, held int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.maxRunning, p.maxHeld
}

// startProbe starts an engine of workers workers that may prefetch up to prefetch steps, with
// p's handlers, on db, with events from hub (nil: none).
func startProbe(t *testing.T, db *gorm.DB, hub *events.Hub, p *probe, workers, prefetch int, obs Observer) *Engine {
	t.Helper()
	e, err := New(NewService(db, nil), hub, p, Config{Workers: workers, Prefetch: prefetch, Observer: obs,
		PollInterval: 50 * time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	p.e = e
	if err := e.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Stop(context.Background()) })
	return e
}

// waitSteps waits until want steps of db satisfy cond (a condition on tasker_workflow_steps).
func waitSteps(t *testing.T, db *gorm.DB, cond string, want int) {
	t.Helper()
	var n int
	wait.Until(t, time.Minute, fmt.Sprintf("%d steps where %s", want, cond), func() bool {
		if err := db.Raw(`SELECT count(*) FROM tasker_workflow_steps WHERE ` + cond).Row().Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == want
	})
}

// Short handlers: the engine holds more steps than it has workers (the prefetched ones wait
// for a worker), never runs more handlers at once than it has workers, and never holds more
// steps than its workers and the depth its handlers' times allow. Long handlers: it holds
// only the few steps its workers start within prefetchWait. Either way every step runs once.
func TestAnEnginePrefetchesWhileItsHandlersAreShort(t *testing.T) {
	t.Parallel()
	const workers, prefetch, chains = 2, 3, 12
	for _, c := range []struct {
		name     string
		d        time.Duration
		maxHeld  int // at most
		prefetch bool
	}{
		{"short handlers", 2 * time.Millisecond, workers + prefetch, true},
		// 2 workers × 50ms / 60ms: one step prefetched at most.
		{"long handlers", 60 * time.Millisecond, workers + 1, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			db := dbtest.New(t)
			seedChains(t, db, chains, 0) // 12 chains of 5 steps, one ready step each at a time
			p := &probe{d: c.d}
			startProbe(t, db, nil, p, workers, prefetch, nil)
			waitSteps(t, db, `processed`, chains*5)
			running, held := p.held()
			if got := int(p.calls.Load()); got != chains*5 {
				t.Errorf("%d handler calls for %d steps", got, chains*5)
			}
			if running != workers {
				t.Errorf("at most %d handlers ran at once, want %d", running, workers)
			}
			if held > c.maxHeld || (c.prefetch && held <= workers) {
				t.Errorf("the engine held up to %d steps (workers %d, prefetch %d); want at most %d, and more than %d: %v",
					held, workers, prefetch, c.maxHeld, workers, c.prefetch)
			}
			checkChainHistories(t, db, chains)
		})
	}
}

// checkChainHistories checks that every step of chains chains went pending -> in_progress ->
// complete, once.
func checkChainHistories(t *testing.T, db *gorm.DB, chains int) {
	t.Helper()
	var exact int
	if err := db.Raw(`SELECT count(*) FROM (
		SELECT workflow_step_id FROM tasker_workflow_step_transitions GROUP BY workflow_step_id
		HAVING array_agg(to_state::text ORDER BY sort_key) = ARRAY['in_progress', 'complete']) s`).Row().Scan(&exact); err != nil {
		t.Fatal(err)
	}
	if exact != chains*5 {
		t.Errorf("%d exact step histories, want %d", exact, chains*5)
	}
}

// Until a handler of the engine has returned, it does not know how long its handlers take: it
// prefetches nothing, and holds only the steps its workers run.
func TestAnEngineWithNoHandlerTimedPrefetchesNothing(t *testing.T) {
	t.Parallel()
	const workers = 1
	db := dbtest.New(t)
	seedChains(t, db, 4, 0)
	p := &probe{block: 1, release: make(chan struct{})}
	e := startProbe(t, db, nil, p, workers, 4, nil)
	waitSteps(t, db, `in_process`, 1)
	time.Sleep(300 * time.Millisecond) // time for a claim that should not happen
	var claimed int
	if err := db.Raw(`SELECT count(*) FROM tasker_workflow_steps WHERE in_process`).Row().Scan(&claimed); err != nil {
		t.Fatal(err)
	}
	if claimed != workers || len(e.slots) != workers {
		t.Fatalf("%d steps claimed, the engine holds %d, while its first handler runs; want %d", claimed, len(e.slots), workers)
	}
	close(p.release)
	waitSteps(t, db, `processed`, 20)
	checkChainHistories(t, db, 4)
}

// claimLost notes the steps whose attempts ended with their claims lost.
type claimLost struct {
	outcomes
	lost chan string
}

func (c *claimLost) StepFinished(step, outcome string, took time.Duration) {
	if outcome == OutcomeClaimLost {
		c.lost <- step
	}
}

// A prefetched step whose task is cancelled while it waits for a worker never runs its
// handler: its claim is lost before a worker is free.
func TestAPrefetchedStepCancelledWhileItWaitsNeverRuns(t *testing.T) {
	t.Parallel()
	url := dbtest.NewURL(t)
	db := dbtest.Open(t, url)
	// Three one-step tasks: the chains' first steps, the rest of each chain resolved away.
	seedChains(t, db, 3, 0)
	if err := db.Exec(`DELETE FROM tasker_workflow_steps s USING tasker_named_steps ns
		WHERE ns.named_step_id = s.named_step_id AND ns.name <> 's1'`).Error; err != nil {
		t.Fatal(err)
	}
	var ids []int64
	if err := db.Raw(`SELECT task_id FROM tasker_tasks ORDER BY task_id`).Scan(&ids).Error; err != nil || len(ids) != 3 {
		t.Fatalf("tasks %v: %v", ids, err)
	}
	// The first task's step returns at once (the engine then knows its handlers are short);
	// of the other two, claimed after it (by one claim or two), one runs and waits for
	// release, and the other is prefetched behind it.
	p := &probe{block: 2, release: make(chan struct{})}
	obs := &claimLost{lost: make(chan string, 4)}
	e := startProbe(t, db, eventstest.Start(t, url, nil), p, 1, 2, obs)
	waitSteps(t, db, fmt.Sprintf(`in_process AND task_id IN (%d, %d)`, ids[1], ids[2]), 2)
	wait.Until(t, time.Minute, "the second handler to start", func() bool { return p.calls.Load() == 2 })
	p.mu.Lock()
	waiting := ids[1] + ids[2] - p.tasks[1]
	p.mu.Unlock()
	if err := e.svc.CancelTask(context.Background(), waiting, map[string]any{"by": "operator"}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-obs.lost:
	case <-time.After(20 * time.Second):
		t.Fatal("the cancelled prefetched step's run did not end")
	}
	close(p.release)
	waitSteps(t, db, `processed`, 2)
	if got := p.calls.Load(); got != 2 {
		t.Fatalf("%d handler calls, want 2: the cancelled step's handler must not run", got)
	}
	var history []string
	if err := db.Raw(`SELECT t.to_state FROM tasker_workflow_step_transitions t
		JOIN tasker_workflow_steps s ON s.workflow_step_id = t.workflow_step_id
		WHERE s.task_id = ? ORDER BY t.sort_key`, waiting).Scan(&history).Error; err != nil {
		t.Fatal(err)
	}
	if len(history) != 2 || history[0] != "in_progress" || history[1] != "cancelled" {
		t.Fatalf("cancelled step's history %v, want [in_progress cancelled]", history)
	}
}

// The workers go to the runs in the order they were added; a run whose context ends while it
// waits leaves the line without one; longest follows the run that has had its worker longest.
func TestWorkerPoolGivesWorkersInClaimOrder(t *testing.T) {
	t.Parallel()
	p := newWorkerPool(1)
	waiting, leave := context.WithCancelCause(context.Background())
	a, b, c := &run{ctx: context.Background()}, &run{ctx: waiting}, &run{ctx: context.Background()}
	p.add([]*run{a, b, c})
	if !p.wait(a) {
		t.Fatal("the first run did not get the idle worker")
	}
	time.Sleep(5 * time.Millisecond)
	if got := p.longest(); got < 5*time.Millisecond {
		t.Fatalf("longest %s after 5ms, want at least 5ms", got)
	}
	leave(errClaimLost)
	if p.wait(b) {
		t.Fatal("a run whose context ended while it waited got a worker")
	}
	select {
	case <-c.turn:
		t.Fatal("the third run got a worker while the first held the only one")
	default:
	}
	p.done(a)
	select {
	case <-c.turn:
	default:
		t.Fatal("the first run's worker did not go to the next run in line")
	}
	if !p.wait(c) || p.longest() > time.Second {
		t.Fatalf("the third run: longest %s", p.longest())
	}
	p.done(c)
	if p.idle != 1 || len(p.queue) != 0 || len(p.running) != 0 || p.longest() != 0 {
		t.Fatalf("after every run: %d idle, %d in line, %d running, longest %s; want 1, 0, 0, 0",
			p.idle, len(p.queue), len(p.running), p.longest())
	}
}

// Stop drains the prefetched steps like the running ones: claiming stops, and every step the
// engine holds runs and is recorded; none is released unrun.
func TestStopRunsThePrefetchedSteps(t *testing.T) {
	t.Parallel()
	db := dbtest.New(t)
	seedChains(t, db, 8, 0)
	p := &probe{d: 20 * time.Millisecond}
	e := startProbe(t, db, nil, p, 1, 3, nil)
	// Once a handler has returned, the engine prefetches (1 worker × 50ms / 20ms: 2 steps).
	wait.Until(t, time.Minute, "the engine to hold a prefetched step", func() bool { return len(e.slots) > 1 })
	if err := e.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	var row struct{ Claimed, Processed, Released int }
	if err := db.Raw(`SELECT count(*) FILTER (WHERE in_process) AS claimed, count(*) FILTER (WHERE processed) AS processed,
		(SELECT count(*) FROM tasker_workflow_step_transitions WHERE metadata->>'reason' = 'worker_stopped') AS released
		FROM tasker_workflow_steps`).Scan(&row).Error; err != nil {
		t.Fatal(err)
	}
	if calls := int(p.calls.Load()); row.Claimed != 0 || row.Released != 0 || row.Processed != calls || calls < 2 {
		t.Fatalf("after Stop: %d steps claimed, %d released unrun, %d processed, %d handler calls; "+
			"want 0, 0 and every step whose handler ran (at least 2)", row.Claimed, row.Released, row.Processed, calls)
	}
}
