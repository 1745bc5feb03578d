package orchestration

import (
	"sync"
	"time"

	"github.com/taskerhq/tasker/internal/events"
)

// ownCompletions holds the steps whose move to complete this engine is recording, or has just
// recorded: the notifications of those moves need not wake its dispatcher, since the
// recording itself took care of what they made ready (see recorder.run): the claim in the
// recording's transaction saw every step the recording made ready, and after a claim beside
// the recording (which did not), the recorder wakes the dispatcher once the recording has
// committed. Without it every recording woke the dispatcher a second time, when its own
// notification came back, for a claim that found nothing: a chain of steps, whose every
// recording makes one step ready, made about three claims a step.
//
// A step is added before its recording is sent, so its notification, sent when the recording
// commits, always finds it, and taken out by that notification. A recording that failed, or
// that did not keep a step's attempt (its claim was lost), writes no such move: its steps are
// removed. Complete is a terminal state, so no later move of the step is mistaken for one of
// this engine's. Steps whose notification never comes (the events hub was disconnected) are
// forgotten after one to two ownCompletionsTTL, or sooner once ownCompletionsMax are held.
type ownCompletions struct {
	mu        sync.Mutex
	cur, prev map[int64]struct{}
	rotated   time.Time
}

const (
	ownCompletionsTTL = 30 * time.Second
	ownCompletionsMax = 100_000
)

// add notes steps whose move to complete is about to be recorded.
func (o *ownCompletions) add(ids []int64) {
	if len(ids) == 0 {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.cur == nil || time.Since(o.rotated) > ownCompletionsTTL || len(o.cur) >= ownCompletionsMax {
		o.prev, o.cur, o.rotated = o.cur, make(map[int64]struct{}, len(ids)), time.Now()
	}
	for _, id := range ids {
		o.cur[id] = struct{}{}
	}
}

// remove forgets steps whose move to complete was not written after all.
func (o *ownCompletions) remove(ids []int64) {
	if len(ids) == 0 {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, id := range ids {
		delete(o.cur, id)
		delete(o.prev, id)
	}
}

// take reports whether the step's move to complete is this engine's, and forgets it.
func (o *ownCompletions) take(id int64) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, ok := o.cur[id]; ok {
		delete(o.cur, id)
		return true
	}
	if _, ok := o.prev[id]; ok {
		delete(o.prev, id)
		return true
	}
	return false
}

// wakesDispatcher is the dispatcher's filter of events (see wakeFilter), without the moves to
// complete this engine recorded itself (see ownCompletions).
func (e *Engine) wakesDispatcher(ev events.Event) bool {
	if !wakeFilter(ev) {
		return false
	}
	return ev.Channel != events.ChannelStepTransitions || ev.To != "complete" || !e.own.take(ev.StepID)
}
