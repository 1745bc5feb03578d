package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/taskerhq/tasker/internal/testkit/logbuf"
)

func newTestLifecycle(timeout time.Duration) (*lifecycle, *logbuf.Buffer) {
	rec := &logbuf.Buffer{}
	return newLifecycle("test", timeout, slog.New(slog.NewTextHandler(rec, nil))), rec
}

// Parts stop last started first, under one deadline, every stop is logged with its duration,
// a failed stop does not prevent the next ones, and a second stop stops nothing.
func TestLifecycleStopsInReverseUnderOneDeadline(t *testing.T) {
	t.Parallel()
	lc, logs := newTestLifecycle(time.Minute)
	var order []string
	var deadlines []time.Time
	for _, name := range []string{"postgres", "pool", "http"} {
		err := lc.start(context.Background(), name, func(context.Context) error { return nil }, func(ctx context.Context) error {
			order = append(order, name)
			d, _ := ctx.Deadline()
			deadlines = append(deadlines, d)
			if name == "pool" {
				return errors.New("pool broke")
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	err := lc.stop()
	if got := strings.Join(order, ","); got != "http,pool,postgres" {
		t.Fatalf("stop order %s, want http,pool,postgres", got)
	}
	if err == nil || !strings.Contains(err.Error(), "stopping pool: pool broke") {
		t.Fatalf("stop error %v, want the pool failure", err)
	}
	if deadlines[0].IsZero() || !deadlines[0].Equal(deadlines[2]) {
		t.Fatalf("steps did not share one deadline: %v", deadlines)
	}
	for _, want := range []string{`msg="test: started" step=http took=`, `msg="test: stopped" step=http took=`,
		`msg="test: stop failed" step=pool took=`, `msg="test: shutdown complete"`, "failures=1"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
	if err := lc.stop(); err != nil || len(order) != 3 {
		t.Fatalf("a second stop repeated steps: %v, %v", order, err)
	}
}

// A part that fails to start is not stopped; the parts started before it are.
func TestLifecycleFailedStartStopsWhatStarted(t *testing.T) {
	t.Parallel()
	lc, _ := newTestLifecycle(time.Minute)
	var stopped []string
	stop := func(name string) func(context.Context) error {
		return func(context.Context) error { stopped = append(stopped, name); return nil }
	}
	if err := lc.start(context.Background(), "pool", func(context.Context) error { return nil }, stop("pool")); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	if err := lc.start(context.Background(), "workers", func(context.Context) error { return boom }, stop("workers")); !errors.Is(err, boom) {
		t.Fatalf("start of a failing part: %v, want its error", err)
	}
	if err := lc.stop(); err != nil || strings.Join(stopped, ",") != "pool" {
		t.Fatalf("stopped %v (%v), want only pool", stopped, err)
	}
}

// A part whose start fails because the command was told to stop meanwhile is a clean stop
// (errStopWhileStarting, exit 0), not a failure; the same error without the stop is a failure.
func TestLifecycleStopWhileStartingIsNoFailure(t *testing.T) {
	t.Parallel()
	lc, logs := newTestLifecycle(time.Minute)
	ctx, cancel := context.WithCancel(context.Background())
	waitForCtx := func(ctx context.Context) error { <-ctx.Done(); return fmt.Errorf("connecting: %w", ctx.Err()) }
	cancel()
	err := lc.start(ctx, "engine pool", waitForCtx, nil)
	if !errors.Is(err, errStopWhileStarting) {
		t.Fatalf("start cancelled by the command's stop: %v, want errStopWhileStarting", err)
	}
	if !strings.Contains(logs.String(), `msg="test: told to stop while starting" step="engine pool"`) || strings.Contains(logs.String(), "start failed") {
		t.Errorf("log:\n%s", logs)
	}
	// Told to stop while it connects, a worker exits 0; not told, the failure exits 1.
	var out, errOut strings.Builder
	if code := run(ctx, []string{"worker", "-database-url", "postgres://127.0.0.1:1/none"}, &out, &errOut); code != exitOK {
		t.Errorf("a worker stopped while it connected exited %d: %s", code, errOut.String())
	}
	live, stop := context.WithCancel(context.Background())
	defer stop()
	if code := run(live, []string{"worker", "-database-url", "postgres://127.0.0.1:1/none"}, &out, &errOut); code != exitFailure {
		t.Errorf("a worker that could not reach its database exited %d", code)
	}
	other, _ := newTestLifecycle(time.Minute)
	if err := other.start(live, "pool", func(context.Context) error { return context.Canceled }, nil); errors.Is(err, errStopWhileStarting) || err == nil {
		t.Fatalf("a cancelled start without a stop: %v, want a failure", err)
	}
}

// A part run in its own goroutine stops when asked; one that ends on its own is the failure
// wait returns, naming it, and is not reported again at the stop; one that does not stop
// within the deadline is reported by name.
func TestLifecycleRunningParts(t *testing.T) {
	t.Parallel()
	lc, _ := newTestLifecycle(100 * time.Millisecond)
	lc.run("quick", func(ctx context.Context) error {
		<-ctx.Done()
		return errors.New("stopped on request")
	})
	if err := lc.stop(); err == nil || !strings.Contains(err.Error(), "stopping quick: stopped on request") {
		t.Fatalf("stop: %v, want the part's result", err)
	}

	lc, _ = newTestLifecycle(100 * time.Millisecond)
	release := make(chan struct{})
	defer close(release)
	lc.run("stuck", func(context.Context) error {
		<-release
		return nil
	})
	if err := lc.stop(); !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "stuck") {
		t.Fatalf("stop of a stuck part: %v, want a deadline error naming it", err)
	}

	lc, _ = newTestLifecycle(time.Minute)
	lc.run("events", func(ctx context.Context) error { <-ctx.Done(); return nil })
	lc.run("http", func(context.Context) error { return errors.New("address in use") })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := lc.wait(ctx); err == nil || err.Error() != "http: address in use" {
		t.Fatalf("wait: %v, want the failure of http", err)
	}
	if err := lc.stop(); err != nil {
		t.Fatalf("stop after a part failed reported it again: %v", err)
	}
}

// A watched part that exits on its own (a child process) is a failure; wait returns nil when
// the command's context ends first.
func TestLifecycleWaitsForTheContextOrAFailure(t *testing.T) {
	t.Parallel()
	lc, logs := newTestLifecycle(time.Minute)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := lc.wait(ctx); err != nil || !strings.Contains(logs.String(), `msg="test: shutting down"`) {
		t.Fatalf("wait after the context ended: %v\n%s", err, logs)
	}

	lc, _ = newTestLifecycle(time.Minute)
	exited := make(chan struct{})
	lc.watch("postgres", exited, func() error { return errors.New("exited unexpectedly") })
	close(exited)
	if err := lc.wait(context.Background()); err == nil || err.Error() != "postgres: exited unexpectedly" {
		t.Fatalf("wait: %v, want the exit of postgres", err)
	}
}
