package orchestration

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/taskerhq/tasker/internal/events"
	"github.com/taskerhq/tasker/internal/models"
)

// claimWatch watches the claims of an engine's steps, all of them from one goroutine, with
// one watcher on the events hub (events.Hub.Watch) that routes each step transition to the
// claim of its step through a map:
//   - a transition of a watched step other than its start (a cancellation, a recovery), or
//     the hub's reconnection (which may have lost such a transition), makes it check the
//     step's claim (store.ClaimsHeld: the claims marked meanwhile in one statement);
//   - every third of the lease (at least 10ms) it renews the leases of every running step in
//     one statement (store.RenewLeases), so a step is renewed within a third of the lease of
//     its claim and only a dead worker loses its claims.
//
// A claim found lost cancels its handler with errClaimLost. A run is watched from its claim
// (see Engine.watch, before the claim commits, so that no event of a change made after the
// claim is missed), but checked and renewed only once prepared (after the commit); an event
// in between is kept for then. The goroutine runs while there are runs to watch.
type claimWatch struct {
	e   *Engine
	sub *events.Subscription // the hub watcher (nil without a hub)

	mu      sync.Mutex
	runs    map[int64]*run // watched, by step id
	check   []*run         // prepared runs whose claims to check
	wake    chan struct{}  // check is not empty
	running bool           // the goroutine runs
}

func newClaimWatch(e *Engine) *claimWatch {
	w := &claimWatch{e: e, runs: map[int64]*run{}, wake: make(chan struct{}, 1)}
	if e.hub != nil {
		w.sub = e.hub.Watch(w.route)
	}
	return w
}

// close stops routing events; the engine has stopped and watches no claim.
func (w *claimWatch) close() {
	if w.sub != nil {
		w.sub.Close()
	}
}

// route runs on the hub's goroutine for every event: it marks for a check the claim of the
// step an event is about, or every claim after a reconnection.
func (w *claimWatch) route(ev events.Event) {
	switch {
	case ev.Channel == "":
		w.mu.Lock()
		for _, r := range w.runs {
			w.mark(r)
		}
		w.mu.Unlock()
	case ev.Channel == events.ChannelStepTransitions && ev.To != string(models.StateInProgress):
		w.mu.Lock()
		if r := w.runs[ev.StepID]; r != nil {
			w.mark(r)
		}
		w.mu.Unlock()
	}
}

// mark asks for a check of r's claim: now if r is prepared, else once it is. w.mu is held.
func (w *claimWatch) mark(r *run) {
	if !r.prepared {
		r.recheck = true
		return
	}
	w.check = append(w.check, r)
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// add watches r's claim.
func (w *claimWatch) add(r *run) {
	w.mu.Lock()
	w.runs[r.s.StepID] = r
	w.mu.Unlock()
}

// remove stops watching r's claim; the goroutine ends once no claim is watched.
func (w *claimWatch) remove(r *run) {
	w.mu.Lock()
	if w.runs[r.s.StepID] == r {
		delete(w.runs, r.s.StepID)
	}
	if len(w.runs) == 0 && w.running {
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
	w.mu.Unlock()
}

// prepared starts checking and renewing r's claim (r runs), and checks it at once if an
// event asked for it meanwhile.
func (w *claimWatch) prepared(r *run) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.runs[r.s.StepID] != r {
		return // closed meanwhile
	}
	r.prepared = true
	if r.recheck {
		w.mark(r)
	}
	if !w.running {
		w.running = true
		go w.loop()
	}
}

// loop checks the claims marked for a check and renews the leases of the prepared runs; it
// returns once no run is watched.
func (w *claimWatch) loop() {
	renew := time.NewTicker(max(w.e.cfg.LeaseDuration/3, 10*time.Millisecond))
	defer renew.Stop()
	for {
		select {
		case <-w.wake:
			w.mu.Lock()
			check := w.check
			w.check = nil
			w.mu.Unlock()
			w.keepHeld(check, w.e.st.ClaimsHeld)
		case <-renew.C:
			w.keepHeld(w.snapshot(), func(ctx context.Context, ids []int64, tokens []string) ([]int64, error) {
				return w.e.st.RenewLeases(ctx, ids, tokens, w.e.cfg.LeaseDuration)
			})
		}
		w.mu.Lock()
		if len(w.runs) == 0 && len(w.check) == 0 {
			w.running = false
			w.mu.Unlock()
			return
		}
		w.mu.Unlock()
	}
}

// keepHeld asks held, in one statement, which claims of the runs still running are held, and
// cancels the others' handlers with errClaimLost. When the statement fails (the database is
// unreachable) no handler is cancelled: the next renewal or event asks again.
func (w *claimWatch) keepHeld(runs []*run, held func(ctx context.Context, stepIDs []int64, tokens []string) ([]int64, error)) {
	runs = slices.DeleteFunc(runs, func(r *run) bool { return r.ctx.Err() != nil })
	if len(runs) == 0 {
		return
	}
	ids, tokens := claimKeys(len(runs), func(i int) claimedStep { return runs[i].s })
	ctx, cancel := context.WithTimeout(context.Background(), max(w.e.cfg.LeaseDuration/3, time.Second))
	defer cancel()
	kept, err := held(ctx, ids, tokens)
	if err != nil {
		return
	}
	for _, r := range runs {
		if !slices.Contains(kept, r.s.StepID) {
			r.cancel(errClaimLost)
		}
	}
}

// snapshot returns the prepared runs still running.
func (w *claimWatch) snapshot() []*run {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]*run, 0, len(w.runs))
	for _, r := range w.runs {
		if r.prepared && r.ctx.Err() == nil {
			out = append(out, r)
		}
	}
	return out
}
