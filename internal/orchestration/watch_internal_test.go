package orchestration

import (
	"slices"
	"testing"
	"time"

	"github.com/taskerhq/tasker/internal/events"
	"github.com/taskerhq/tasker/internal/models"
	"github.com/taskerhq/tasker/internal/store"
)

// TestAClaimsRunsSeeTheEventsSinceTheClaimBegan: a claim that is a statement of its own has
// committed before its runs are watched, so an operator's change to a claimed step can arrive
// in between. The watch keeps, while claims are in flight, which steps had events since the
// oldest of them began: a run added after such an event of its step (other than its start),
// or after the hub reconnected, is checked once prepared; a run whose step had no event since
// its claim began (an event before it, or only its start), is not; and once no claim is in
// flight, nothing is kept.
func TestAClaimsRunsSeeTheEventsSinceTheClaimBegan(t *testing.T) {
	w := newClaimWatch(&Engine{})
	runOf := func(stepID int64) *run {
		return &run{s: claimedStep{ClaimedStep: store.ClaimedStep{StepID: stepID}}}
	}
	step := func(id int64, to models.State) events.Event {
		return events.Event{Channel: events.ChannelStepTransitions, StepID: id, To: string(to)}
	}
	w.route(step(1, models.StateCancelled)) // no claim in flight: not kept
	first := w.begin()
	w.route(step(2, models.StateCancelled))
	w.route(step(3, models.StateInProgress)) // a start: never a reason to check
	time.Sleep(time.Millisecond)
	second := w.begin()
	w.route(step(4, models.StateResolvedManually))
	for _, c := range []struct {
		step    int64
		claimed time.Time
		recheck bool
	}{
		{1, first, false}, // its event came before any claim began
		{2, first, true},
		{2, second, false}, // its event came before this claim began
		{3, first, false},
		{4, first, true},
		{4, second, true},
	} {
		r := runOf(c.step)
		w.add(r, c.claimed)
		if r.recheck != c.recheck {
			t.Errorf("step %d claimed by the claim begun %v: recheck %v, want %v", c.step, c.claimed.Sub(first), r.recheck, c.recheck)
		}
		w.remove(r)
	}
	w.end(first)
	if _, ok := w.events[2]; ok {
		t.Error("an event older than every claim in flight is still kept")
	}
	if _, ok := w.events[4]; !ok {
		t.Error("an event since the claim still in flight began is no longer kept")
	}
	w.route(events.Event{}) // the hub reconnected: every claim in flight may have missed an event
	r := runOf(5)
	w.add(r, second)
	if !r.recheck {
		t.Error("a run added after the hub reconnected during its claim is not checked")
	}
	w.remove(r)
	w.end(second)
	if len(w.events) != 0 || !w.reconnected.IsZero() || len(w.inFlight) != 0 {
		t.Errorf("with no claim in flight the watch keeps %d events, reconnection %v, %d claims", len(w.events), w.reconnected, len(w.inFlight))
	}
	r = runOf(4)
	w.add(r, time.Now())
	if r.recheck {
		t.Error("a run of a claim begun after every event is checked")
	}
}

// TestWitnessesNameOneWatchedStepOfEachBusyTask: a recording is told, for each of its tasks of
// which the engine still watches a claim, the lowest such step (store.Busy), and nothing of
// the tasks with no claim watched or of tasks not in the batch.
func TestWitnessesNameOneWatchedStepOfEachBusyTask(t *testing.T) {
	w := newClaimWatch(&Engine{})
	for _, c := range []struct{ step, task int64 }{{7, 1}, {5, 1}, {9, 3}, {11, 4}} {
		w.add(&run{s: claimedStep{ClaimedStep: store.ClaimedStep{StepID: c.step, TaskID: c.task}}}, time.Now())
	}
	got := w.witnesses([]int64{1, 2, 3})
	if want := (store.Busy{Tasks: []int64{1, 3}, Steps: []int64{5, 9}}); !slices.Equal(got.Tasks, want.Tasks) || !slices.Equal(got.Steps, want.Steps) {
		t.Errorf("witnesses of tasks 1, 2, 3: %+v, want %+v", got, want)
	}
	if got := w.witnesses(nil); len(got.Tasks) != 0 || len(got.Steps) != 0 {
		t.Errorf("witnesses of no task: %+v, want none", got)
	}
}
