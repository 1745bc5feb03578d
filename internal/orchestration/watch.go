package orchestration

import (
	"context"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/taskerhq/tasker/internal/events"
	"github.com/taskerhq/tasker/internal/models"
	"github.com/taskerhq/tasker/internal/store"
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
// (see Engine.watch), but checked and renewed only once prepared (after the commit); an event
// in between is kept for then. A claim may commit before its runs are watched (a claim that
// is a statement of its own commits as it ends: store.EngineStatement), so no event of a
// change made after the claim may be missed in between: while claims are in flight (begin,
// end), the watch remembers which steps had events, and when, from the start of the oldest
// claim in flight; a run added with the time its claim began is checked if its step had an
// event since (or the hub reconnected since). The goroutine runs while there are runs to
// watch.
type claimWatch struct {
	e   *Engine
	sub *events.Subscription // the hub watcher (nil without a hub)

	mu      sync.Mutex
	runs    map[int64]*run // watched, by step id
	check   []*run         // prepared runs whose claims to check
	wake    chan struct{}  // check is not empty
	running bool           // the goroutine runs

	// inFlight are the start times of the claims in flight (see begin); while there are any,
	// events holds, by step id, when the last event that would mark its run arrived, and
	// reconnected when the hub last reconnected.
	inFlight    []time.Time
	events      map[int64]time.Time
	reconnected time.Time
}

func newClaimWatch(e *Engine) *claimWatch {
	w := &claimWatch{e: e, runs: map[int64]*run{}, wake: make(chan struct{}, 1), events: map[int64]time.Time{}}
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
		if len(w.inFlight) > 0 {
			w.reconnected = time.Now()
		}
		w.mu.Unlock()
	case ev.Channel == events.ChannelStepTransitions && ev.To != string(models.StateInProgress):
		w.mu.Lock()
		if r := w.runs[ev.StepID]; r != nil {
			w.mark(r)
		}
		if len(w.inFlight) > 0 {
			w.events[ev.StepID] = time.Now()
		}
		w.mu.Unlock()
	}
}

// begin notes a claim about to start and returns its start time, which its runs are added
// with (see add); end must follow once the claim has returned and its runs are added.
func (w *claimWatch) begin() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	now := time.Now()
	w.inFlight = append(w.inFlight, now)
	return now
}

// end notes the end of the claim begun at began, and forgets the events that no claim still
// in flight began before.
func (w *claimWatch) end(began time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if i := slices.Index(w.inFlight, began); i >= 0 {
		w.inFlight = slices.Delete(w.inFlight, i, i+1)
	}
	if len(w.inFlight) == 0 {
		clear(w.events)
		w.reconnected = time.Time{}
		return
	}
	oldest := slices.MinFunc(w.inFlight, func(a, b time.Time) int { return a.Compare(b) })
	maps.DeleteFunc(w.events, func(_ int64, at time.Time) bool { return at.Before(oldest) })
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

// add watches r's claim, made by a claim that began at claimed (see begin): r is checked
// once prepared if its step had an event since, or the hub reconnected since.
func (w *claimWatch) add(r *run, claimed time.Time) {
	w.mu.Lock()
	w.runs[r.s.StepID] = r
	if at, ok := w.events[r.s.StepID]; (ok && !at.Before(claimed)) || !w.reconnected.Before(claimed) {
		r.recheck = true
	}
	w.mu.Unlock()
}

// witnesses returns, among tasks (ascending), those of which a claim is watched, each with
// the step of one such claim, for a recording of a batch whose runs are no longer watched
// (see store.RecordAndSettle's busy): in one pass over the watched claims.
func (w *claimWatch) witnesses(tasks []int64) store.Busy {
	w.mu.Lock()
	defer w.mu.Unlock()
	step := map[int64]int64{}
	for id, r := range w.runs {
		if _, found := slices.BinarySearch(tasks, r.s.TaskID); found {
			if s, ok := step[r.s.TaskID]; !ok || id < s {
				step[r.s.TaskID] = id
			}
		}
	}
	var busy store.Busy
	for _, t := range tasks {
		if s, ok := step[t]; ok {
			busy.Tasks = append(busy.Tasks, t)
			busy.Steps = append(busy.Steps, s)
		}
	}
	return busy
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
