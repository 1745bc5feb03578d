// Package wait is how tests wait for asynchronous work: by polling a condition against a
// deadline, never by sleeping a fixed time.
package wait

import (
	"testing"
	"time"
)

// Interval is how often a condition is polled.
const Interval = 20 * time.Millisecond

// Eventually polls cond every Interval until it holds (true) or within has passed (false,
// after one last poll at the deadline), for callers that report the failure themselves.
func Eventually(within time.Duration, cond func() bool) bool {
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	tick := time.NewTicker(Interval)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			return cond()
		case <-tick.C:
		}
	}
	return true
}

// Until polls cond like Eventually and fails t at once when it does not hold within the
// duration; what names the condition in the failure.
func Until(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	if !Eventually(within, cond) {
		t.Fatalf("timed out after %s waiting for %s", within, what)
	}
}
