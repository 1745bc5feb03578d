package orchestration_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/taskerhq/tasker/internal/orchestration"
)

// chainYAML is a chain of n noop steps, each after the one before it.
func chainYAML(n int) string {
	var b strings.Builder
	b.WriteString("namespace: tests\nname: chain\nversion: 1.0.0\nsteps:\n")
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "  - name: s%d\n", i)
		if i > 1 {
			fmt.Fprintf(&b, "    depends_on: s%d\n", i-1)
		}
		b.WriteString("    handler: {kind: noop}\n")
	}
	return b.String()
}

// TestAChainClaimsEachStepInTheRecordingBeforeIt: a chain of 40 steps, whose every recording
// makes the next step ready, is drained with one claim a step, in the transaction of the
// recording before it: the dispatcher claims the first step, and after that neither the
// recorder nor the notifications of the engine's own recordings wake it for a claim that finds
// nothing (a claim beside each recording, the dispatcher's after it and another for the
// notification made about three claims a step). The poll interval is a minute, so a step left
// ready without a wake-up would stall the chain past the test's deadline.
func TestAChainClaimsEachStepInTheRecordingBeforeIt(t *testing.T) {
	t.Parallel()
	const steps = 40
	h := newHarness(t, nil, chainYAML(steps))
	id := h.create("tests", "chain", "")
	rec := newRecorder()
	h.engine(orchestration.Config{Observer: rec, Workers: 4, PollInterval: time.Minute})
	h.waitTasks("complete", 30*time.Second, id)
	// The last recording is reported once it has committed, a moment after its task's state
	// can be read.
	recordings := func() int {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		n := 0
		for _, c := range rec.calls {
			n += c.recorded
		}
		return n
	}
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline) && recordings() < steps; {
		time.Sleep(10 * time.Millisecond)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	kinds := map[string]int{}
	claimedInRecordings := 0
	for _, c := range rec.calls {
		kinds[c.call]++
		if c.call == orchestration.CallRecordAndClaim {
			claimedInRecordings += c.claimed
		}
	}
	// The dispatcher's first claim, and at most two more: the events hub's connection and the
	// first claim racing the engine's start may each wake it once.
	if kinds[orchestration.CallClaim] > 3 {
		t.Errorf("%d claims of their own for a chain of %d steps (calls by kind %v), want at most 3: every step after the first is claimed in the recording before it",
			kinds[orchestration.CallClaim], steps, kinds)
	}
	if kinds[orchestration.CallRecordAndClaim] != steps || claimedInRecordings != steps-1 {
		t.Errorf("%d recordings with a claim in them claimed %d steps, want %d recordings claiming %d (calls by kind %v)",
			kinds[orchestration.CallRecordAndClaim], claimedInRecordings, steps, steps-1, kinds)
	}
}
