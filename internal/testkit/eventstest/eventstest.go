// Package eventstest runs an events hub for the length of one test.
package eventstest

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/taskerhq/tasker/internal/events"
)

// Start runs a hub listening on url until t ends, and returns once it is connected (failing
// t after 20 s). A Run that ends with an error fails t at cleanup.
func Start(t testing.TB, url string, log *slog.Logger) *events.Hub {
	t.Helper()
	hub := events.NewHub(url, log)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- hub.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("events hub: %v", err)
		}
	})
	select {
	case <-hub.Ready():
	case <-time.After(20 * time.Second):
		t.Fatal("events hub did not connect within 20s")
	}
	return hub
}
