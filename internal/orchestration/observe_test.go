package orchestration_test

import (
	"sync"
	"testing"
	"time"

	"github.com/taskerhq/tasker/internal/orchestration"
)

// recorder is an Observer that keeps what it was told.
type recorder struct {
	mu        sync.Mutex
	claimed   map[string]int
	latency   map[string]time.Duration
	finished  map[string][]string
	recovered int
}

// newRecorder returns an Observer that has been told nothing yet.
func newRecorder() *recorder {
	return &recorder{claimed: map[string]int{}, latency: map[string]time.Duration{}, finished: map[string][]string{}}
}

func (r *recorder) StepClaimed(step string, readyFor time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.claimed[step]++
	r.latency[step] = readyFor
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
