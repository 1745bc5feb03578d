package orchestration

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Prefetching. Every step a worker runs waits, between two handlers, for the claim that gives
// it its next step: a claim of a few tens of steps takes milliseconds, and the workers whose
// steps it claims stay idle that long. So an engine may hold a few claimed steps more than it
// has workers (Config.Prefetch): when a handler returns, the worker starts one of them at once,
// and the claims run while handlers do. A claimed step has started in the database (it is
// in_progress, its lease running and renewed like a running step's), so the time it waits for
// a worker counts as its attempt's. That wait is kept short: an engine prefetches only as
// many steps as its workers start within prefetchWait on average, from its handlers' run
// times (prefetchDepth of handlerTimes.estimate: their moving average, or how long the
// oldest handler running has run when that is longer, so that handlers that have grown long
// stop the prefetching before the first of them returns); none until a handler of this
// engine has returned, and none while handlers take longer than Workers × prefetchWait each. Steps with
// long handlers therefore stay in the database, where any engine with an idle worker claims
// them. Steps prefetched before the handlers grew long wait for them: a workload whose
// handlers switch from milliseconds to minutes is one for TASKER_PREFETCH=0.

// prefetchWait is how long, on average, a prefetched step may wait for a worker.
const prefetchWait = 50 * time.Millisecond

// handlerTimes is a moving average of the run times of an engine's handlers, each new time
// weighing an eighth. It is safe for concurrent use.
type handlerTimes struct {
	avg atomic.Int64 // nanoseconds; 0 while no handler has returned
}

// add counts the run time of one handler.
func (h *handlerTimes) add(d time.Duration) {
	n := max(int64(d), 1)
	for {
		old := h.avg.Load()
		next := n
		if old > 0 {
			next = max(old+(n-old)/8, 1)
		}
		if h.avg.CompareAndSwap(old, next) {
			return
		}
	}
}

// average is the moving average, 0 while no handler has returned.
func (h *handlerTimes) average() time.Duration { return time.Duration(h.avg.Load()) }

// estimate is what prefetching takes a handler's run time to be: the moving average, or
// running, how long the oldest handler running has run, when that is longer (0 while no
// handler has returned).
func (h *handlerTimes) estimate(running time.Duration) time.Duration {
	avg := h.average()
	if avg <= 0 {
		return 0
	}
	return max(avg, running)
}

// prefetchDepth is how many claimed steps may wait for one of workers workers, whose handlers
// take avg on average: as many as they start within prefetchWait (workers × prefetchWait /
// avg), at most limit, and none while avg is unknown (0).
func prefetchDepth(workers, limit int, avg time.Duration) int {
	if limit <= 0 || avg <= 0 {
		return 0
	}
	return int(min(int64(limit), int64(workers)*int64(prefetchWait)/int64(avg)))
}

// claimable is how many steps a claim may take for an engine holding held of its taken slots
// (the recorder's, of the attempts it records): the engine's steps in flight (claimed, not yet
// recorded or released) stay within its workers and its current prefetch depth.
func (e *Engine) claimable(held int) int {
	running := e.pool.longest()
	limit := e.cfg.Workers + prefetchDepth(e.cfg.Workers, e.cfg.Prefetch, e.handlerTimes.estimate(running))
	return max(0, limit-(len(e.slots)-held))
}

// workerPool gives an engine's workers to its runs in the order they were claimed: a run added
// while a worker is idle gets it at once; the others wait in line, and a worker that finishes
// goes to the oldest. A run whose context ends while it waits leaves the line without a
// worker. It is safe for concurrent use.
type workerPool struct {
	mu      sync.Mutex
	idle    int
	queue   []*run             // oldest first
	running map[*run]time.Time // the runs with a worker, and when they got it
}

func newWorkerPool(workers int) *workerPool {
	return &workerPool{idle: workers, running: map[*run]time.Time{}}
}

// add puts runs in line, in order.
func (p *workerPool) add(runs []*run) {
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, r := range runs {
		r.turn, r.queued = make(chan struct{}), now
		if p.idle > 0 && len(p.queue) == 0 {
			p.idle--
			close(r.turn)
			continue
		}
		p.queue = append(p.queue, r)
	}
}

// wait blocks until r has a worker (true), or until its context ends while it waits in line
// (false: it leaves the line). A run given a worker as its context ended has the worker: the
// caller checks the context and frees it (done).
func (p *workerPool) wait(r *run) bool {
	select {
	case <-r.turn:
	case <-r.ctx.Done():
		p.mu.Lock()
		defer p.mu.Unlock()
		if i := slices.Index(p.queue, r); i >= 0 {
			p.queue = slices.Delete(p.queue, i, i+1)
			return false
		}
		// Its turn came as its context ended.
		p.running[r] = time.Now()
		return true
	}
	p.mu.Lock()
	p.running[r] = time.Now()
	p.mu.Unlock()
	return true
}

// longest is how long the run that has had its worker longest has had it (0: none has one).
func (p *workerPool) longest() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	var oldest time.Time
	for _, at := range p.running {
		if oldest.IsZero() || at.Before(oldest) {
			oldest = at
		}
	}
	if oldest.IsZero() {
		return 0
	}
	return time.Since(oldest)
}

// done frees r's worker: the oldest run in line gets it.
func (p *workerPool) done(r *run) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.running, r)
	if len(p.queue) == 0 {
		p.idle++
		return
	}
	next := p.queue[0]
	p.queue = slices.Delete(p.queue, 0, 1)
	close(next.turn)
}
