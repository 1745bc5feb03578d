package orchestration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/taskerhq/tasker/internal/dbretry"
	"github.com/taskerhq/tasker/internal/handler"
	"github.com/taskerhq/tasker/internal/store"
	"github.com/taskerhq/tasker/internal/tracing"
)

// StepHandlers resolves what a step runs: its handler and its timeout, from the step's name
// and its task's named task, reading what it needs through st.
type StepHandlers interface {
	StepHandler(ctx context.Context, st *store.Store, namedTaskID int64, stepName string) (handler.Handler, time.Duration, error)
}

// ErrNoHandler is wrapped when a step's named task configures no handler for it. Such a step
// fails permanently: retrying cannot help until the template is fixed.
var ErrNoHandler = errors.New("no handler configured for step")

// DefaultStepTimeout applies to a step whose configuration names no timeout.
const DefaultStepTimeout = 30 * time.Second

// ConfiguredHandlers builds step handlers from the configuration stored in tasker_named_tasks
// by template registration (handler kind and config, timeout_ms per step), using a handler
// registry for the kinds. A named task version never changes once registered, so the
// handlers of each named task are built once and cached; workers that need a named task
// being loaded wait for that one read (a singleflight.Group) instead of each reading it. A
// read that fails is not cached: the next caller reads again. It is safe for concurrent use.
type ConfiguredHandlers struct {
	registry *handler.Registry
	loads    singleflight.Group

	mu    sync.Mutex
	tasks map[int64]map[string]configuredStep
}

type configuredStep struct {
	handler handler.Handler
	timeout time.Duration
	err     error
}

// NewConfiguredHandlers returns step handlers built with the kinds of registry.
func NewConfiguredHandlers(registry *handler.Registry) *ConfiguredHandlers {
	return &ConfiguredHandlers{registry: registry, tasks: map[int64]map[string]configuredStep{}}
}

// StepHandler implements StepHandlers.
func (c *ConfiguredHandlers) StepHandler(ctx context.Context, st *store.Store, namedTaskID int64, stepName string) (handler.Handler, time.Duration, error) {
	steps, ok := c.loaded(namedTaskID)
	if !ok {
		loaded := c.loads.DoChan(strconv.FormatInt(namedTaskID, 10), func() (any, error) {
			steps, err := c.load(ctx, st, namedTaskID)
			if err == nil {
				c.mu.Lock()
				c.tasks[namedTaskID] = steps
				c.mu.Unlock()
			}
			return steps, err
		})
		select {
		case r := <-loaded:
			if r.Err != nil {
				return nil, 0, r.Err
			}
			steps = r.Val.(map[string]configuredStep)
		case <-ctx.Done():
			return nil, 0, fmt.Errorf("waiting for the configuration of named task %d: %w", namedTaskID, ctx.Err())
		}
	}
	return lookupStep(steps, namedTaskID, stepName)
}

// loaded returns the steps of a named task whose configuration is loaded already (ok false
// otherwise): the engine resolves every step after a named task's first through it, without
// a context, a retry loop or a read.
func (c *ConfiguredHandlers) loaded(namedTaskID int64) (map[string]configuredStep, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	steps, ok := c.tasks[namedTaskID]
	return steps, ok
}

// lookupStep returns the handler of a step of a named task's loaded configuration.
func lookupStep(steps map[string]configuredStep, namedTaskID int64, stepName string) (handler.Handler, time.Duration, error) {
	s, ok := steps[stepName]
	if !ok {
		return nil, 0, fmt.Errorf("%w %q in named task %d", ErrNoHandler, stepName, namedTaskID)
	}
	return s.handler, s.timeout, s.err
}

func (c *ConfiguredHandlers) load(ctx context.Context, st *store.Store, namedTaskID int64) (map[string]configuredStep, error) {
	configuration, err := st.NamedTaskConfiguration(ctx, namedTaskID)
	if err != nil {
		return nil, fmt.Errorf("reading configuration of named task %d: %w", namedTaskID, err)
	}
	var cfg struct {
		Steps []struct {
			Name    string `json:"name"`
			Handler struct {
				Kind   string         `json:"kind"`
				Config map[string]any `json:"config"`
			} `json:"handler"`
			TimeoutMillis int64 `json:"timeout_ms"`
		} `json:"steps"`
	}
	if len(configuration) > 0 {
		if err := json.Unmarshal(configuration, &cfg); err != nil {
			return nil, fmt.Errorf("decoding configuration of named task %d: %w", namedTaskID, err)
		}
	}
	out := make(map[string]configuredStep, len(cfg.Steps))
	for _, s := range cfg.Steps {
		cs := configuredStep{timeout: time.Duration(s.TimeoutMillis) * time.Millisecond}
		if cs.timeout <= 0 {
			cs.timeout = DefaultStepTimeout
		}
		if s.Handler.Kind == "" {
			cs.err = fmt.Errorf("%w %q in named task %d: handler.kind is empty", ErrNoHandler, s.Name, namedTaskID)
		} else if cs.handler, cs.err = c.registry.New(s.Handler.Kind, s.Handler.Config); cs.err != nil {
			cs.err = fmt.Errorf("%w %q in named task %d: %w", ErrNoHandler, s.Name, namedTaskID, cs.err)
		}
		out[s.Name] = cs
	}
	return out, nil
}

// errClaimLost cancels a handler whose claim was taken away: the step was cancelled by an
// operator, or its lease was recovered. The handler's result is discarded.
var errClaimLost = errors.New("claim lost: the step was cancelled or recovered")

// run is a claimed step on its way through a worker.
type run struct {
	s      claimedStep
	in     store.StepInput
	ctx    context.Context // the handler's context, cancelled with errClaimLost when the claim goes
	cancel context.CancelCauseFunc
	e      *Engine
	// Under the engine's claimWatch lock: the claim is checked and renewed (prepared), an
	// event asked for a check before it was (recheck).
	prepared, recheck bool
	turn              chan struct{} // closed when the run has a worker (see workerPool)
	queued            time.Time     // when it was handed to the workers (see workerPool.add)
}

// stepLog is the engine's logger with the attributes of a step's attempt; it is built when
// something is logged, not for every step.
func (e *Engine) stepLog(s claimedStep) *slog.Logger {
	return e.log.With("step_id", s.StepID, "task_id", s.TaskID, "attempt", s.Attempt)
}

// log is the logger of the run's attempt.
func (r *run) log() *slog.Logger { return r.e.stepLog(r.s) }

// watch makes the runs of started steps and watches their claims (see claimWatch): a
// transition of the step other than its start (a cancellation, a recovery) makes the engine
// check the claim, for the events since claimed, when the claim began (see claimWatch.add):
// the claim may have committed already.
func (e *Engine) watch(steps []claimedStep, claimed time.Time) []*run {
	runs := make([]*run, len(steps))
	for i, s := range steps {
		r := &run{s: s, e: e}
		r.ctx, r.cancel = context.WithCancelCause(e.handlerCtx)
		e.watcher.add(r, claimed)
		runs[i] = r
	}
	return runs
}

// closeRuns stops watching the claims of runs.
func closeRuns(runs []*run) {
	for _, r := range runs {
		r.close()
	}
}

// close stops watching the step's claim.
func (r *run) close() {
	r.cancel(nil)
	r.e.watcher.remove(r)
}

// runStep runs one prepared step: its handler runs under the step timeout while the lease is
// renewed and the claim watched; the outcome goes to the recorder, which records the attempt
// and finalises the task, with the worker's slot (runStep then returns true). A step whose
// claim was lost meanwhile is discarded; on a hard stop the step is released at once.
func (e *Engine) runStep(r *run) (handedOver bool) {
	defer r.close()
	s, in, hctx := r.s, r.in, r.ctx
	hctx, span := startRun(hctx, s, in.Name)
	var parents map[string]json.RawMessage
	if string(in.Parents) == "{}" { // a step without parents: what decoding it gives
		parents = map[string]json.RawMessage{}
	} else if err := json.Unmarshal(in.Parents, &parents); err != nil {
		r.log().Error("orchestration: decoding parent results", "error", err)
	}
	h, timeout, herr := e.stepHandler(hctx, in)

	begin := time.Now()
	var out handler.Output
	runErr := herr
	if herr == nil {
		rctx, rcancel := context.WithTimeout(hctx, timeout)
		out, runErr = runHandler(rctx, h, handler.Input{
			TaskID: s.TaskID, StepID: s.StepID, StepName: in.Name, Attempt: s.Attempt,
			Context: in.Context, Inputs: in.Inputs, Parents: parents,
		})
		if runErr != nil && errors.Is(rctx.Err(), context.DeadlineExceeded) && hctx.Err() == nil {
			runErr = handler.Retryable(fmt.Errorf("timed out after %s: %w", timeout, runErr), retryAfterOf(runErr))
		}
		rcancel()
	} else if !errors.Is(herr, ErrNoHandler) {
		// Not a configuration problem (e.g. the database was unreachable): retry later.
		runErr = handler.Retryable(herr, 0)
	} else {
		runErr = handler.Permanent(herr)
	}
	elapsed := time.Since(begin)
	tracing.End(span, runErr)
	e.handlerTimes.add(elapsed)

	if hctx.Err() != nil {
		e.endCancelled(r, elapsed)
		return false
	}
	e.running.Add(-1)
	e.rec.submit(result{step: s, name: in.Name, out: out, runErr: runErr, elapsed: elapsed,
		trace: span.SpanContext(), slot: true})
	return true
}

// endCancelled ends a run whose context ended, after its handler ran for elapsed or before it
// ran (elapsed 0): a run whose claim was lost is discarded; on a hard stop the step is released
// at once, rather than left to its lease.
func (e *Engine) endCancelled(r *run, elapsed time.Duration) {
	s, name := r.s, r.in.Name
	if errors.Is(context.Cause(r.ctx), errClaimLost) {
		r.log().Info("orchestration: claim lost, result discarded", "ran", elapsed > 0)
		e.observeFinished(name, OutcomeClaimLost, elapsed)
		return
	}
	e.observeFinished(name, OutcomeStopped, elapsed)
	rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer rcancel()
	err := dbretry.Do(rctx, e.inputs, nil, func() error {
		_, err := e.svc.recoverClaims(rctx, []store.Claim{{StepID: s.StepID, TaskID: s.TaskID, Token: s.Token}},
			"worker_stopped", e.cfg.WorkerID, false)
		return err
	})
	if err != nil {
		r.log().Error("orchestration: releasing stopped step; its lease will recover it", "error", err)
	}
}

// stepHandler resolves the step's handler. Resolving may read the named task's configuration
// (the first time in this process); a read that fails for want of a database is retried with
// backoff while the claim is held (ctx) and for at most half the lease, so that a short drop
// does not cost the step an attempt whose handler never ran.
func (e *Engine) stepHandler(ctx context.Context, in store.StepInput) (h handler.Handler, timeout time.Duration, err error) {
	if c, ok := e.handlers.(*ConfiguredHandlers); ok {
		if steps, ok := c.loaded(in.NamedTaskID); ok {
			if h, timeout, err = lookupStep(steps, in.NamedTaskID, in.Name); err != nil {
				return nil, 0, err // a configuration problem, as below
			}
			return h, timeout, nil
		}
	}
	rctx, cancel := context.WithTimeout(ctx, max(e.cfg.LeaseDuration/2, time.Second))
	defer cancel()
	var unconfigured error // a configuration problem: not retried
	err = dbretry.Do(rctx, e.inputs, nil, func() error {
		h, timeout, err = e.handlers.StepHandler(rctx, e.st, in.NamedTaskID, in.Name)
		if errors.Is(err, ErrNoHandler) {
			unconfigured = err
			return nil
		}
		return err
	})
	if unconfigured != nil {
		return nil, 0, unconfigured
	}
	return h, timeout, err
}

// runHandler calls h, turning a panic into a retryable failure.
func runHandler(ctx context.Context, h handler.Handler, in handler.Input) (out handler.Output, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = handler.Retryable(fmt.Errorf("handler panicked: %v", p), 0)
		}
	}()
	return h.Run(ctx, in)
}

func retryAfterOf(err error) time.Duration {
	d, _ := handler.RetryAfter(err)
	return d
}
