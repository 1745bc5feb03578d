package wait_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/taskerhq/tasker/internal/testkit/wait"
)

func TestEventually(t *testing.T) {
	t.Parallel()
	var polls atomic.Int32
	if !wait.Eventually(time.Second, func() bool { return polls.Add(1) == 3 }) {
		t.Fatal("a condition that holds on the third poll was not met")
	}
	start := time.Now()
	if wait.Eventually(50*time.Millisecond, func() bool { return false }) {
		t.Fatal("a condition that never holds was met")
	}
	if waited := time.Since(start); waited < 50*time.Millisecond {
		t.Fatalf("gave up after %s, before the deadline", waited)
	}
}
