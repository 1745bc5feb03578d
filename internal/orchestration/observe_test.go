package orchestration_test

import (
	"sync"
	"testing"
	"time"

	"github.com/taskerhq/tasker/internal/orchestration"
)

// recorder is an Observer that keeps what it was told.
type recorder struct {
	mu      sync.Mutex
	claimed map[string]int
	started map[string]int // StepStarted reports by step
	// negativeWait is set when a StepStarted report had a negative wait.
	negativeWait bool
	latency      map[string]time.Duration
	finished     map[string][]string
	recovered    int
	calls        []engineCall
}

// engineCall is one EngineCall report.
type engineCall struct {
	call              string
	recorded, claimed int
	took              time.Duration
}

// newRecorder returns an Observer that has been told nothing yet.
func newRecorder() *recorder {
	return &recorder{claimed: map[string]int{}, started: map[string]int{}, latency: map[string]time.Duration{},
		finished: map[string][]string{}}
}

func (r *recorder) StepClaimed(step string, readyFor time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.claimed[step]++
	r.latency[step] = readyFor
}

func (r *recorder) StepStarted(step string, waited time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.started[step]++
	if waited < 0 {
		r.negativeWait = true
	}
}

func (r *recorder) StepFinished(step, outcome string, took time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.finished[step] = append(r.finished[step], outcome)
}

func (r *recorder) StepsRecovered(n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recovered += n
}

func (r *recorder) EngineCall(call string, recorded, claimed int, took time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, engineCall{call, recorded, claimed, took})
}

// TestObserverSeesEveryEngineCall: an engine draining 40 one-step tasks reports each of its
// calls into the database: claims that claim, recordings that record, and recordings with
// the claim after them, each with a duration. Every step is claimed once and its attempt
// recorded once, so the claimed steps of all calls add up to the 40 steps, and so do the
// recorded attempts; a claim records nothing and a lone recording claims nothing.
func TestObserverSeesEveryEngineCall(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil, singleYAML)
	const tasks = 40
	ids := make([]int64, tasks)
	for i := range ids {
		ids[i] = h.create("tests", "single", "")
	}
	rec := newRecorder()
	h.engine(orchestration.Config{Observer: rec, Workers: 4})
	h.waitTasks("complete", 30*time.Second, ids...)
	sums := func() (recorded, claimed int) {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		for _, c := range rec.calls {
			recorded += c.recorded
			claimed += c.claimed
		}
		return recorded, claimed
	}
	// The last recording is reported once it has committed: a moment after its task's state
	// can be read.
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if recorded, _ := sums(); recorded >= tasks {
			break
		}
	}
	recorded, claimed := sums()
	if recorded != tasks || claimed != tasks {
		t.Errorf("the engine's calls recorded %d attempts and claimed %d steps, want %d and %d", recorded, claimed, tasks, tasks)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if started := rec.started["only"]; started != tasks || rec.negativeWait {
		t.Errorf("%d steps reported started (negative wait: %v), want %d: each claimed step is given a worker once",
			started, rec.negativeWait, tasks)
	}
	kinds := map[string]int{}
	for _, c := range rec.calls {
		kinds[c.call]++
		if c.took <= 0 {
			t.Errorf("%+v: a call that took no time", c)
		}
		switch c.call {
		case orchestration.CallClaim:
			if c.recorded != 0 {
				t.Errorf("%+v: a claim that recorded attempts", c)
			}
		case orchestration.CallRecord:
			if c.claimed != 0 || c.recorded == 0 {
				t.Errorf("%+v: a recording alone that claimed steps or recorded nothing", c)
			}
		case orchestration.CallRecordAndClaim:
			if c.recorded == 0 {
				t.Errorf("%+v: a recording that recorded nothing", c)
			}
		default:
			t.Errorf("%+v: a call of no known kind", c)
		}
	}
	if kinds[orchestration.CallClaim] == 0 || kinds[orchestration.CallRecord]+kinds[orchestration.CallRecordAndClaim] == 0 {
		t.Errorf("calls by kind %v, want claims and recordings", kinds)
	}
}

func TestObserverSeesClaimsAndOutcomes(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil, permanentYAML)
	rec := newRecorder()
	h.engine(orchestration.Config{Observer: rec})
	id := h.create("tests", "permanent", "")
	h.waitTasks("error", 30*time.Second, id)
	// The observer is told once the recording has committed, so a moment after the task's
	// state can be read.
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		rec.mu.Lock()
		n := len(rec.finished["broken"])
		rec.mu.Unlock()
		if n > 0 {
			break
		}
	}

	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.claimed["broken"] != 1 || rec.claimed["child"] != 0 {
		t.Fatalf("claims %v, want broken claimed once and child never", rec.claimed)
	}
	if l := rec.latency["broken"]; l < 0 || l > 30*time.Second {
		t.Fatalf("claim latency of broken %s, want between 0 and the test's duration", l)
	}
	if got := rec.finished["broken"]; len(got) != 1 || got[0] != orchestration.OutcomePermanentError {
		t.Fatalf("outcomes of broken %v, want [%s]", got, orchestration.OutcomePermanentError)
	}
}
