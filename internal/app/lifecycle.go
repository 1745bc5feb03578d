package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// lifecycle runs the long-lived parts of one process (the tracing provider, the private
// cluster, the pool, the events hub, the refresher, the workers, the HTTP server…) as an
// ordered, named list:
//
//   - start, add and run start parts in order; each start is logged with its duration, and
//     each started part's stop is registered at once, so a startup that fails half-way stops
//     what had started;
//   - wait returns when the command's context ends (nil) or when a part fails while running
//     (that part's error, naming it);
//   - stop stops every part in reverse order under one deadline (the shutdown timeout), logs
//     each stop with its duration and returns every failure. It is safe to call twice: the
//     second call returns nil and stops nothing.
//
// Log lines are prefixed by the command ("serve: stopped step=http took=…").
type lifecycle struct {
	command string
	log     *slog.Logger
	timeout time.Duration

	mu     sync.Mutex
	stops  []stopStep
	failed chan error // the first failure of a running part; buffered 1
}

type stopStep struct {
	name string
	stop func(ctx context.Context) error
}

// service is a part with the start/stop contract of River's startstop: Start returns once the
// part runs, Stop stops it within ctx and is safe to call twice.
type service interface {
	Start(ctx context.Context) error
	Stop(ctx context.Context) error
}

func newLifecycle(command string, timeout time.Duration, log *slog.Logger) *lifecycle {
	return &lifecycle{command: command, log: log, timeout: timeout, failed: make(chan error, 1)}
}

// errStopWhileStarting is returned by start when the command was told to stop (its context
// ended: SIGINT, SIGTERM) while a part was starting: a clean stop, not a failure (a process
// that is replaced while it starts exits 0).
var errStopWhileStarting = errors.New("told to stop while starting")

// start runs the start step of the part name; when it succeeds and stop is not nil, stop is
// registered to run at shutdown. A failed start is returned naming the part, unless the
// command was told to stop meanwhile (errStopWhileStarting).
func (l *lifecycle) start(ctx context.Context, name string, start func(ctx context.Context) error, stop func(ctx context.Context) error) error {
	began := time.Now()
	if err := start(ctx); err != nil {
		if ctx.Err() != nil && errors.Is(err, context.Canceled) {
			l.log.Info(l.command+": "+errStopWhileStarting.Error(), "step", name, "reason", context.Cause(ctx).Error())
			return errStopWhileStarting
		}
		l.log.Error(l.command+": start failed", "step", name, "took", time.Since(began), "error", err)
		return fmt.Errorf("starting %s: %w", name, err)
	}
	l.log.Info(l.command+": started", "step", name, "took", time.Since(began))
	if stop != nil {
		l.add(name, stop)
	}
	return nil
}

// startService starts s as the part name and registers its Stop.
func (l *lifecycle) startService(ctx context.Context, name string, s service) error {
	return l.start(ctx, name, s.Start, s.Stop)
}

// add registers the stop of a part that has just started (one whose constructor starts it).
func (l *lifecycle) add(name string, stop func(ctx context.Context) error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stops = append(l.stops, stopStep{name: name, stop: stop})
}

// run runs fn in its own goroutine as the part name, until stop cancels fn's context. fn
// returning before that (with an error or not) is the part failing while running: wait
// returns it, and the shutdown then stops the other parts.
func (l *lifecycle) run(name string, fn func(ctx context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var err error // written before done is closed
	var stopping bool
	var mu sync.Mutex
	go func() {
		defer close(done)
		err = fn(ctx)
		mu.Lock()
		defer mu.Unlock()
		if !stopping {
			l.fail(name, err)
		}
	}()
	l.add(name, func(stopCtx context.Context) error {
		mu.Lock()
		stopping = true
		mu.Unlock()
		select {
		case <-done:
			return nil // its failure was reported when it happened
		default:
		}
		cancel()
		select {
		case <-done:
			return err
		case <-stopCtx.Done():
			return fmt.Errorf("waiting for %s to stop: %w", name, stopCtx.Err())
		}
	})
}

// watch makes the end of a part that runs on its own (a child process) a failure while
// running: when exited closes before the shutdown, wait returns cause() naming the part.
func (l *lifecycle) watch(name string, exited <-chan struct{}, cause func() error) {
	go func() {
		<-exited
		l.fail(name, cause())
	}()
}

// fail records the failure of a part while running; the first one wins.
func (l *lifecycle) fail(name string, err error) {
	if err == nil {
		err = errors.New("stopped on its own")
	}
	select {
	case l.failed <- fmt.Errorf("%s: %w", name, err):
	default:
	}
}

// wait blocks until ctx ends (nil: the command was told to stop) or a part fails while
// running (its error).
func (l *lifecycle) wait(ctx context.Context) error {
	select {
	case <-ctx.Done():
		l.log.Info(l.command+": shutting down", "reason", context.Cause(ctx).Error())
		return nil
	case err := <-l.failed:
		l.log.Error(l.command+": a part failed, shutting down", "error", err)
		return err
	}
}

// stop runs the registered stops, last registered first, under one deadline, and returns
// every failure; a failed stop does not prevent the next ones. A second call stops nothing.
func (l *lifecycle) stop() error {
	l.mu.Lock()
	steps := l.stops
	l.stops = nil
	l.mu.Unlock()
	if len(steps) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), l.timeout)
	defer cancel()
	began := time.Now()
	var failures []error
	for i := len(steps) - 1; i >= 0; i-- {
		step := steps[i]
		t := time.Now()
		if err := step.stop(ctx); err != nil {
			l.log.Error(l.command+": stop failed", "step", step.name, "took", time.Since(t), "error", err)
			failures = append(failures, fmt.Errorf("stopping %s: %w", step.name, err))
			continue
		}
		l.log.Info(l.command+": stopped", "step", step.name, "took", time.Since(t))
	}
	l.log.Info(l.command+": shutdown complete", "took", time.Since(began), "failures", len(failures))
	return errors.Join(failures...)
}
