package orchestration

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/taskerhq/tasker/internal/events"
	"github.com/taskerhq/tasker/internal/handler"
	"github.com/taskerhq/tasker/internal/store"
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

// TestCompletionsAreTheAttemptsRecordedComplete: the steps a recording notes as the engine's
// own completions are those it moves to complete: a handler's success with valid JSON results
// or none, not a failure, nor a success whose results are not JSON (recorded as a permanent
// error); those it did not write are all of them when it failed, else those whose claims it
// did not find held.
func TestCompletionsAreTheAttemptsRecordedComplete(t *testing.T) {
	t.Parallel()
	step := func(id int64) claimedStep {
		return claimedStep{ClaimedStep: store.ClaimedStep{StepID: id, Token: fmt.Sprint("token-", id)}}
	}
	batch := []result{
		{step: step(1), out: handler.Output{Results: json.RawMessage(`{"ok": true}`)}},
		{step: step(2)},
		{step: step(3), out: handler.Output{Results: json.RawMessage(`{not json`)}},
		{step: step(4), runErr: errors.New("boom")},
	}
	p, err := (&Engine{}).planRecord(batch, false)
	if err != nil {
		t.Fatal(err)
	}
	if got := p.completions(); !slices.Equal(got, []int64{1, 2}) {
		t.Errorf("completions %v, want [1 2]", got)
	}
	if got := p.unwritten(map[string]bool{"token-1": true, "token-3": true}, nil); !slices.Equal(got, []int64{2}) {
		t.Errorf("unwritten after a recording that kept steps 1 and 3: %v, want [2]", got)
	}
	if got := p.unwritten(nil, errors.New("lost")); !slices.Equal(got, []int64{1, 2}) {
		t.Errorf("unwritten after a failed recording: %v, want [1 2]", got)
	}
}
