package server_test

import (
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/taskerhq/tasker/internal/models"
	"github.com/taskerhq/tasker/internal/testkit/fixture"
	"github.com/taskerhq/tasker/internal/testkit/wait"
)

// TestDisconnectingClientsLeaveNoGoroutine subscribes and vanishes (no close handshake, no
// complete) a few times, then checks that the process's goroutine count returns to what it
// was before: every goroutine a subscription started (websocket reader and writer, feed,
// resolver) ended with the client. Not parallel: other tests' goroutines would blur the count.
func TestDisconnectingClientsLeaveNoGoroutine(t *testing.T) {
	e := newEnv(t)
	tk := e.fx.Task(fixture.FourStep)
	cycle := func() {
		c := e.dialWS(t, "graphql-transport-ws")
		c.subscribe("1", stepSub, map[string]any{"after": "0"})
		c.subscribe("2", `subscription { taskTransitions { id } }`, nil)
		wait.Until(t, 10*time.Second, "2 live subscriptions", func() bool { return e.api.Subscribers() == 2 })
		insertTransition(t, e.db, tk.Step("one"), models.StateInProgress)
		c.event("1", "stepTransitions")
		_ = c.conn.CloseNow()
		wait.Until(t, 10*time.Second, "0 live subscriptions", func() bool { return e.api.Subscribers() == 0 })
	}
	cycle() // warm up pools and servers, whose goroutines live as long as the test
	baseline := settledGoroutines()
	for range 5 {
		cycle()
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		n := settledGoroutines()
		if n <= baseline {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			dump := string(buf[:runtime.Stack(buf, true)])
			t.Fatalf("%d goroutines after 5 disconnects, %d before; running:\n%s",
				n, baseline, strings.TrimSpace(dump))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// settledGoroutines counts goroutines once the count has held still for a moment.
func settledGoroutines() int {
	prev := runtime.NumGoroutine()
	for range 50 {
		time.Sleep(20 * time.Millisecond)
		n := runtime.NumGoroutine()
		if n == prev {
			return n
		}
		prev = n
	}
	return prev
}
