package orchestration

import (
	"encoding/json"
	"errors"
	"slices"
	"testing"

	"github.com/taskerhq/tasker/internal/events"
	"github.com/taskerhq/tasker/internal/handler"
	"github.com/taskerhq/tasker/internal/models"
	"github.com/taskerhq/tasker/internal/store"
	"github.com/taskerhq/tasker/internal/testkit/dbtest"
)

// TestOwnCompletionsWakeNoDispatcher: of the events the dispatcher wakes for, only the moves
// to complete that the engine noted as its own are dropped, each once; a step removed (its
// recording failed) and every other event still wake it; the set forgets its oldest steps once
// it holds ownCompletionsMax.
func TestOwnCompletionsWakeNoDispatcher(t *testing.T) {
	t.Parallel()
	e := &Engine{}
	e.own.add([]int64{1, 2, 3})
	e.own.remove([]int64{3})
	step := func(id int64, to string) events.Event {
		return events.Event{Channel: events.ChannelStepTransitions, StepID: id, To: to}
	}
	cases := []struct {
		ev   events.Event
		want bool
	}{
		{step(1, "in_progress"), false}, // never wakes: no step becomes ready
		{step(1, "complete"), false},    // the engine's own
		{step(1, "complete"), true},     // taken already: another writer's
		{step(2, "resolved_manually"), true},
		{step(2, "pending"), true},
		{step(2, "complete"), false},
		{step(3, "complete"), true}, // removed: its recording failed
		{step(4, "complete"), true},
		{events.Event{Channel: events.ChannelTasksCreated}, true},
		{events.Event{Channel: events.ChannelTaskTransitions, To: "pending"}, true},
	}
	for i, c := range cases {
		if got := e.wakesDispatcher(c.ev); got != c.want {
			t.Errorf("event %d %+v: wakes the dispatcher %v, want %v", i, c.ev, got, c.want)
		}
	}

	// A full set rotates: the generation before the last is forgotten.
	batch := func(from int64) []int64 {
		ids := make([]int64, ownCompletionsMax)
		for i := range ids {
			ids[i] = from + int64(i)
		}
		return ids
	}
	e.own.add(batch(1_000_000)) // fills the current generation
	e.own.add([]int64{7})       // rotates: the batch is one generation old
	e.own.add(batch(2_000_000)) // joins 7
	e.own.add([]int64{8})       // rotates: the first batch is forgotten
	if e.own.take(1_000_000) {
		t.Error("a step two rotations old was still held")
	}
	if !e.own.take(7) || !e.own.take(2_000_000) || !e.own.take(8) {
		t.Error("a full set lost steps one rotation old, or the newest")
	}
}

// TestAutoClaimsInTheRecordingOfASmallBatch: with ClaimsAuto, a batch of fewer than
// claimBesideMin attempts claims in its recording, whose claim sees what the recording made
// ready; a larger one claims beside it while no other engine claims (a fresh database) and the
// last claim found a queue of ready steps. An explicit placement is kept whatever the batch.
func TestAutoClaimsInTheRecordingOfASmallBatch(t *testing.T) {
	t.Parallel()
	db := dbtest.New(t)
	place := func(claims ClaimPlacement, batch int) bool {
		t.Helper()
		e, err := New(NewService(db, nil), nil, noHandlers{}, Config{Claims: claims}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return e.rec.placeClaims(batch)
	}
	cases := []struct {
		claims ClaimPlacement
		batch  int
		beside bool
	}{
		{ClaimsAuto, 1, false},
		{ClaimsAuto, claimBesideMin - 1, false},
		{ClaimsAuto, claimBesideMin, true},
		{ClaimsBeside, 1, true},
		{ClaimsInRecording, maxRecordBatch, false},
	}
	for _, c := range cases {
		if got := place(c.claims, c.batch); got != c.beside {
			t.Errorf("placement %d, batch of %d: beside %v, want %v", c.claims, c.batch, got, c.beside)
		}
	}

	// What the last claim found decides a large batch's placement under ClaimsAuto: a claim
	// beside that took less than half its steps found no queue of ready steps (only the
	// recordings make steps ready, as in chains), and the next batches claim in their
	// recordings until one of those claims takes all it asked for.
	e, err := New(NewService(db, nil), nil, noHandlers{}, Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	r, large := e.rec, 2*claimBesideMin
	steps := []struct {
		beside     bool
		asked, got int
		want       bool // placeClaims(large) after the claim
	}{
		{true, 16, 8, true},    // half: a queue
		{true, 16, 7, false},   // less than half: none
		{false, 40, 39, false}, // in the recording, fewer than asked: still none
		{false, 40, 40, true},  // all it asked for: a queue again
		{true, 0, 0, true},     // a claim of nothing tells nothing
	}
	for i, c := range steps {
		r.noteClaim(c.beside, c.asked, c.got)
		if got := r.placeClaims(large); got != c.want {
			t.Errorf("after claim %d (%+v): a batch of %d claims beside %v, want %v", i, c, large, got, c.want)
		}
	}
	if !e.rec.placeClaims(large) || e.rec.placeClaims(claimBesideMin-1) {
		t.Error("with a queue, a large batch claims beside and a small one in its recording")
	}
}

// TestCompletionsAreTheAttemptsRecordedComplete: the steps noted as the engine's own
// completions are those whose recording moves them to complete (see outcome): a handler's
// success with valid JSON results or none, not a failure, nor a success whose results are not
// JSON (recorded as a permanent error).
func TestCompletionsAreTheAttemptsRecordedComplete(t *testing.T) {
	t.Parallel()
	batch := []result{
		{step: claimedStep{ClaimedStep: store.ClaimedStep{StepID: 1}}, out: handler.Output{Results: json.RawMessage(`{"ok": true}`)}},
		{step: claimedStep{ClaimedStep: store.ClaimedStep{StepID: 2}}},
		{step: claimedStep{ClaimedStep: store.ClaimedStep{StepID: 3}}, out: handler.Output{Results: json.RawMessage(`{not json`)}},
		{step: claimedStep{ClaimedStep: store.ClaimedStep{StepID: 4}}, runErr: errors.New("boom")},
	}
	if got := completions(batch); !slices.Equal(got, []int64{1, 2}) {
		t.Errorf("completions %v, want [1 2]", got)
	}
	e := &Engine{}
	for _, res := range batch {
		o, err := e.outcome(res)
		if err != nil {
			t.Fatal(err)
		}
		if complete := o.move.To == models.StateComplete; complete != succeeded(res) {
			t.Errorf("step %d: recorded complete %v, but succeeded says %v", res.step.StepID, complete, succeeded(res))
		}
	}
}
