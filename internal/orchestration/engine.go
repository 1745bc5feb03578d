// Package orchestration is the write side of workflows. Its Service owns every command:
// creating tasks, the operator actions (cancel, resolve, retry), settling tasks and recovering
// expired claims. Its Engine, built over a Service, claims ready steps, runs their handlers
// with retries and backoff, records every attempt, finalises tasks from their execution
// context and recovers the steps of workers that died. Every statement is internal/store's,
// every state change goes through internal/statemachine, and every error a caller can act on
// is an internal/errs error. Readiness and task status come from the live views
// (tasker_step_readiness_statuses, tasker_task_execution_contexts), so the engine and the read
// side always agree.
package orchestration

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/taskerhq/tasker/internal/database"
	"github.com/taskerhq/tasker/internal/dbretry"
	"github.com/taskerhq/tasker/internal/events"
	"github.com/taskerhq/tasker/internal/store"
)

// Config tunes an Engine. The zero value of every field means its default.
type Config struct {
	// Workers is how many step handlers run at once in this engine (default 32, env
	// TASKER_WORKERS). With Prefetch it caps the steps the engine holds, so it bounds
	// throughput: every step waits for the commit that claims it and the one that records it
	// (on a busy engine, a batch's recording and the claim of the next steps for its workers
	// run at once, on two connections), and with commits of a few milliseconds an engine needs
	// tens of steps in flight to run a thousand a second.
	Workers int
	// Prefetch caps the claimed steps that may wait for a busy worker (default
	// DefaultPrefetchPerWorker × Workers; negative: none; env TASKER_PREFETCH, where 0 means
	// none). How many do, up to it, follows the handlers' run times: as many as the workers
	// start within prefetchWait on average, and none until a handler has returned (see
	// prefetch.go). So the cap matters only for short handlers (under Workers × prefetchWait
	// / Prefetch, 12.5 ms by default), whose steps then go through the database in claims
	// and recordings of up to Workers + Prefetch steps: bigger batches, cheaper steps.
	Prefetch int
	// ClaimBatch caps the steps claimed by one claim statement (default Workers + Prefetch).
	// The engine never claims more steps than it has idle workers and room to prefetch.
	ClaimBatch int
	// PollInterval is the slow fallback wake-up when no event arrives (default 5s).
	PollInterval time.Duration
	// LeaseDuration is how long a claim stays valid without a renewal (default 5m). A running
	// step's lease is renewed every third of it, so only a dead worker loses its claims.
	LeaseDuration time.Duration
	// RecoveryInterval is how often expired leases are looked for (default LeaseDuration/10,
	// at least 1s).
	RecoveryInterval time.Duration
	// DrainTimeout bounds how long Stop waits for running handlers before cancelling them
	// (default 30s; a deadline on Stop's context shortens it).
	DrainTimeout time.Duration
	// WorkerID names this engine in claims and transition metadata (default host:pid:random).
	WorkerID string
	// Observer, when set, is told about every claim and finished attempt (see Observer).
	Observer Observer
	// AsyncCommit makes the engine's own transactions (claims and recorded attempts) commit
	// with synchronous_commit = off (env TASKER_SYNC_COMMIT=off; default false: durable
	// commits). PostgreSQL then acknowledges a commit before its WAL reaches the disk, which
	// takes the disk flush out of every claim and recording. The trade-off: a crash of the
	// database server (not of an engine) can lose the last few hundred milliseconds of
	// commits (at most 3 × wal_writer_delay). The database stays consistent; a lost claim
	// makes its step ready again, and a lost recording leaves its step claimed until its
	// lease expires and recovery re-runs it: the same at-least-once outcome as the crash of a
	// worker. Operator actions and task creation are not affected.
	AsyncCommit bool
	// Claims says where a busy engine claims the next steps for the workers of a recorded
	// batch (env TASKER_CLAIM_BESIDE: auto, on or off; see recorder): beside the recording, in
	// a transaction of its own that runs at the same time, which keeps two database backends
	// busy for one engine; or in the recording's own transaction, after it, one backend and one
	// commit a batch. Beside is faster while the database has idle cores, and slower where
	// other engines already keep them busy (BENCHMARKS.md, "Engine: the claim beside the
	// recording"). ClaimsAuto, the default, claims beside a batch of claimBesideMin attempts or
	// more while no other engine holds a live claim on the database (looking again every
	// othersCheckInterval) and the last claim found ready steps queued beyond those the
	// recordings make ready, and in the recording otherwise.
	Claims ClaimPlacement
	// Pool, when set, is the engine's own connection pool (database.OpenEngine, opened with
	// AsyncCommit and PoolConns connections), on which its claims and recordings run: its
	// connections carry the engine's session settings from connect time (store.EngineTx),
	// which saves every engine transaction a statement. Without it (an engine over one pool,
	// as in tests) they run on the service's pool and set those settings in a statement of
	// their own. The caller closes it after the engine has stopped.
	Pool *database.EnginePool
}

// ClaimPlacement says where a busy engine claims the next steps for the workers of a recorded
// batch (Config.Claims).
type ClaimPlacement int

const (
	// ClaimsAuto claims beside the recording of a batch of claimBesideMin attempts or more
	// while no other engine claims and ready steps are queued, in it otherwise (the default).
	ClaimsAuto ClaimPlacement = iota
	// ClaimsBeside claims in a transaction of its own, at the same time as the recording.
	ClaimsBeside
	// ClaimsInRecording claims in the recording's transaction, after it.
	ClaimsInRecording
)

// DefaultWorkers is Config.Workers when it is not set.
const DefaultWorkers = 32

// DefaultPrefetchPerWorker is Config.Prefetch, per worker, when it is not set.
const DefaultPrefetchPerWorker = 4

// ExplicitPrefetch is Config.Prefetch for a prefetch of n steps asked for explicitly (as by
// TASKER_PREFETCH), where 0 means none: Config.Prefetch's zero value is the default, so none
// is stored as a negative value.
func ExplicitPrefetch(n int) int {
	if n == 0 {
		return -1
	}
	return n
}

// PoolConns is the size of an engine's own pool (Config.Pool): at most three of its
// transactions run at once, the dispatcher's (a claim, or the read of the next retry time),
// the recorder's (a batch recorded) and the claim beside it (see recorder).
const PoolConns = 3

// ConfigFromEnv reads TASKER_WORKERS, TASKER_PREFETCH (0 to 4096; 0: none), TASKER_SYNC_COMMIT
// (on or off) and TASKER_CLAIM_BESIDE (auto, on or off) through getenv (internal/config) into a
// Config with every other field at its default.
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	var cfg Config
	switch v := getenv("TASKER_SYNC_COMMIT"); v {
	case "", "on":
	case "off":
		cfg.AsyncCommit = true
	default:
		return cfg, fmt.Errorf("TASKER_SYNC_COMMIT=%q is neither on nor off", v)
	}
	switch v := getenv("TASKER_CLAIM_BESIDE"); v {
	case "", "auto":
	case "on":
		cfg.Claims = ClaimsBeside
	case "off":
		cfg.Claims = ClaimsInRecording
	default:
		return cfg, fmt.Errorf("TASKER_CLAIM_BESIDE=%q is none of auto, on and off", v)
	}
	if v := getenv("TASKER_WORKERS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1024 {
			return cfg, fmt.Errorf("TASKER_WORKERS=%q is not a worker count between 1 and 1024", v)
		}
		cfg.Workers = n
	}
	if v := getenv("TASKER_PREFETCH"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 4096 {
			return cfg, fmt.Errorf("TASKER_PREFETCH=%q is not a step count between 0 and 4096", v)
		}
		cfg.Prefetch = ExplicitPrefetch(n)
	}
	return cfg, nil
}

func (c Config) withDefaults() Config {
	if c.Workers <= 0 {
		c.Workers = DefaultWorkers
	}
	switch {
	case c.Prefetch == 0:
		c.Prefetch = DefaultPrefetchPerWorker * c.Workers
	case c.Prefetch < 0:
		c.Prefetch = 0
	}
	if c.ClaimBatch <= 0 || c.ClaimBatch > c.Workers+c.Prefetch {
		c.ClaimBatch = c.Workers + c.Prefetch
	}
	if c.PollInterval <= 0 {
		c.PollInterval = 5 * time.Second
	}
	if c.LeaseDuration <= 0 {
		c.LeaseDuration = 5 * time.Minute
	}
	if c.RecoveryInterval <= 0 {
		c.RecoveryInterval = max(c.LeaseDuration/10, time.Second)
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = 30 * time.Second
	}
	if c.WorkerID == "" {
		host, _ := os.Hostname()
		var b [3]byte
		_, _ = rand.Read(b[:])
		c.WorkerID = fmt.Sprintf("%s:%d:%s", host, os.Getpid(), hex.EncodeToString(b[:]))
	}
	return c
}

// Engine runs the ready steps of a database: a dispatcher claims ready steps (never more than
// it has idle workers) and hands each to a worker goroutine, which runs the step's handler;
// the recorder records the attempts in batches, finalises their tasks and, in the same
// transaction, claims the next steps for the workers of the batch (see recorder). The
// dispatcher wakes on transition and new-task events, at the earliest time a waiting retry
// becomes due, and on a slow poll. Any number of engines, in one process or many, may share
// one database: claims lock rows with SKIP LOCKED, so no step is ever run twice at once.
type Engine struct {
	svc      *Service
	st       *store.Store // svc's store
	hub      *events.Hub
	handlers StepHandlers
	cfg      Config
	log      *slog.Logger

	mu      sync.Mutex
	started bool
	stopped bool
	done    chan struct{} // closed when Stop has finished

	cancelLoop     context.CancelFunc // stops claiming and recovery
	loops          sync.WaitGroup     // dispatcher and recovery goroutines
	handlerCtx     context.Context    // parent of every handler's context
	cancelHandlers context.CancelFunc // hard stop after the drain deadline
	inflight       sync.WaitGroup
	slots          chan struct{}       // one token per step in flight: claimed, not yet recorded or released
	pool           *workerPool         // the workers, given to the claimed steps in claim order
	kick           chan struct{}       // a worker or the recorder finished: look for work
	rec            *recorder           // records finished attempts, in batches
	own            ownCompletions      // the moves to complete its recordings write (see own.go)
	retryDirty     atomic.Bool         // the next due retry may have changed: read it again
	running        atomic.Int64        // steps whose handlers run (see recorder.gather)
	handlerTimes   handlerTimes        // the handlers' run times, for prefetching (see prefetch.go)
	claiming       atomic.Bool         // between Start and Stop: the recorder may claim steps
	watcher        *claimWatch         // watches the claims of the running steps
	startMeta      store.StartMetadata // the metadata of the moves its claims write (see startMetadata)

	// One failure streak per loop that talks to the database (see internal/dbretry): claims
	// (the dispatcher), inputs (reading step handlers' configuration, releasing stopped steps),
	// recovery (the recovery loop).
	claims, inputs, recovery *dbretry.Streak
}

// New returns an engine that writes through svc. hub (may be nil: the engine then polls)
// delivers transition events; handlers resolves what each step runs.
func New(svc *Service, hub *events.Hub, handlers StepHandlers, cfg Config, log *slog.Logger) (*Engine, error) {
	if svc == nil {
		return nil, errors.New("creating engine: nil service")
	}
	if handlers == nil {
		return nil, errors.New("creating engine: nil step handlers")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Pool != nil && cfg.Pool.AsyncCommit != cfg.AsyncCommit {
		return nil, fmt.Errorf("creating engine: AsyncCommit is %v but its pool was opened with asynchronous commit %v",
			cfg.AsyncCommit, cfg.Pool.AsyncCommit)
	}
	cfg = cfg.withDefaults()
	e := &Engine{
		svc: svc, st: svc.store, hub: hub, handlers: handlers, cfg: cfg, log: log.With("worker_id", cfg.WorkerID),
		done:  make(chan struct{}),
		slots: make(chan struct{}, cfg.Workers+cfg.Prefetch),
		pool:  newWorkerPool(cfg.Workers),
		kick:  make(chan struct{}, 1),
	}
	if cfg.Pool != nil {
		e.st = e.st.WithEngine(cfg.Pool)
	}
	var err error
	if e.startMeta, err = startMetadata(cfg.WorkerID); err != nil {
		return nil, fmt.Errorf("creating engine: %w", err)
	}
	// Start replaces the handlers' parent; until then (an engine driven step by step) it is
	// never cancelled.
	e.handlerCtx, e.cancelHandlers = context.WithCancel(context.Background())
	e.rec = newRecorder(e)
	e.watcher = newClaimWatch(e)
	e.claims = dbretry.New(e.log, "orchestration: claiming steps", 100*time.Millisecond, max(cfg.PollInterval, time.Second))
	e.inputs = dbretry.New(e.log, "orchestration: preparing claimed steps", 50*time.Millisecond, 2*time.Second)
	e.recovery = dbretry.New(e.log, "orchestration: recovering expired claims", cfg.RecoveryInterval,
		max(cfg.RecoveryInterval, time.Minute))
	return e, nil
}

// Config returns the engine's configuration with defaults applied.
func (e *Engine) Config() Config { return e.cfg }

// Start begins claiming and running steps until Stop is called or ctx ends. Calling it again
// is a no-op; starting a stopped engine is an error.
func (e *Engine) Start(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.stopped {
		return errors.New("starting engine: it was stopped")
	}
	if e.started {
		return nil
	}
	e.started = true
	e.claiming.Store(true)
	loopCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	e.cancelLoop = cancel
	e.handlerCtx, e.cancelHandlers = context.WithCancel(context.Background())
	// The caller's ctx ending stops claiming, like Stop, but leaves draining to Stop.
	stopWatch := context.AfterFunc(ctx, cancel)
	var sub *events.Subscription
	if e.hub != nil {
		sub = e.hub.Subscribe(e.wakesDispatcher)
	}
	recSub, recoverySub := e.reconnects(), e.reconnects()
	go func() {
		defer recSub.Close()
		e.rec.run(recSub.C)
	}()
	// The recorder claims while claiming goes on (see recorder).
	context.AfterFunc(loopCtx, func() { e.claiming.Store(false) })
	e.loops.Add(2)
	go func() {
		defer e.loops.Done()
		defer stopWatch()
		if sub != nil {
			defer sub.Close()
		}
		e.dispatch(loopCtx, sub)
	}()
	go func() {
		defer e.loops.Done()
		defer recoverySub.Close()
		e.recoverLoop(loopCtx, recoverySub.C)
	}()
	e.log.Info("orchestration: engine started", "workers", e.cfg.Workers, "prefetch", e.cfg.Prefetch,
		"lease", e.cfg.LeaseDuration, "poll_interval", e.cfg.PollInterval)
	return nil
}

// Stop stops claiming, waits for running handlers to finish (up to DrainTimeout or ctx's
// deadline, whichever is sooner), then cancels the handlers still running and releases their
// steps as failed attempts (reason "worker_stopped"); a step that cannot be released is
// recovered later through its lease. It returns once every finished attempt is recorded.
// Calling Stop again, or on an engine never started, is a no-op.
func (e *Engine) Stop(ctx context.Context) error {
	e.mu.Lock()
	if !e.started || e.stopped {
		started := e.started
		e.mu.Unlock()
		if started {
			<-e.done
		}
		return nil
	}
	e.stopped = true
	e.claiming.Store(false)
	e.mu.Unlock()
	defer close(e.done)

	begin := time.Now()
	e.cancelLoop()
	e.loops.Wait()
	drained := make(chan struct{})
	go func() { e.inflight.Wait(); close(drained) }()
	deadline := time.NewTimer(e.cfg.DrainTimeout)
	defer deadline.Stop()
	select {
	case <-drained:
		e.cancelHandlers()
		e.rec.close()
		e.watcher.close()
		e.log.Info("orchestration: engine stopped", "drained", true, "took", time.Since(begin))
		return nil
	case <-deadline.C:
	case <-ctx.Done():
	}
	e.log.Warn("orchestration: drain deadline reached, cancelling running handlers")
	e.cancelHandlers()
	// Handlers must return promptly once cancelled; their steps are then released.
	select {
	case <-drained:
		e.rec.close()
		e.watcher.close()
		e.log.Info("orchestration: engine stopped", "drained", false, "took", time.Since(begin))
		return nil
	case <-time.After(10 * time.Second):
		return errors.New("stopping engine: handlers did not return within 10s of being cancelled")
	}
}

// wakeFilter accepts the events after which a step may have become ready: a new task, a step
// completed, resolved or sent back to pending, a task sent back to pending.
func wakeFilter(ev events.Event) bool {
	switch ev.Channel {
	case events.ChannelTasksCreated:
		return true
	case events.ChannelStepTransitions:
		return ev.To == "complete" || ev.To == "resolved_manually" || ev.To == "pending"
	case events.ChannelTaskTransitions:
		return ev.To == "pending"
	}
	return false
}

// dispatch is the claim loop. It claims while it has idle workers and ready steps, then sleeps
// until an event, a worker or the recorder finishing, the next due retry or the poll interval.
//
// The next due retry is read from the database only when it may have changed: at start, after
// this engine recorded a failure or recovered a claim, when the previous due time arrives, and
// on every poll tick (which also catches the failures recorded by other engines; each engine
// wakes for its own failures' retries).
//
// While claiming fails (the database is down), the loop backs off exponentially with jitter up
// to the poll interval (at least 1s), logging the failure streak once (see internal/dbretry);
// only an event wakes it earlier, and the events hub sends one when it reconnects, so claiming
// resumes as soon as the database is back.
func (e *Engine) dispatch(ctx context.Context, sub *events.Subscription) {
	var wake <-chan struct{}
	if sub != nil {
		wake = sub.C
	}
	poll := time.NewTicker(e.cfg.PollInterval)
	defer poll.Stop()
	e.retryDirty.Store(true)
	var due time.Time // the next due retry; zero when none is known
	for ctx.Err() == nil {
		var retryAt <-chan time.Time
		var retryTimer *time.Timer
		if n := e.reserveSlots(e.cfg.ClaimBatch); n > 0 {
			// A claim outlives ctx (see claim): its steps are handed to workers even when the
			// engine began stopping meanwhile, and Stop drains them like any running step.
			runs, err := e.claim(ctx, n)
			e.startRuns(runs)
			e.releaseSlots(n - len(runs))
			if ctx.Err() != nil {
				return
			}
			if err == nil && len(runs) == n {
				e.claims.Succeed()
				continue // there may be more ready steps
			}
			if err == nil && e.retryDirty.Load() {
				var d time.Duration
				var ok bool
				if d, ok, err = e.nextRetryIn(ctx); err == nil {
					e.retryDirty.Store(false)
					due = time.Time{}
					if ok {
						due = time.Now().Add(d)
					}
				}
			}
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				dbretry.Wait(ctx, e.claims.Fail(err), wake)
				continue
			}
			e.claims.Succeed()
			if !due.IsZero() {
				retryTimer = time.NewTimer(time.Until(due))
				retryAt = retryTimer.C
			}
		}
		select {
		case <-ctx.Done():
		case <-wake:
		case <-e.kick:
		case <-retryAt:
			e.retryDirty.Store(true)
		case <-poll.C:
			e.retryDirty.Store(true)
		}
		if retryTimer != nil {
			retryTimer.Stop()
		}
	}
}

// reconnects subscribes to the events hub's (re)connections, which is when a loop backing off
// should try the database again. Without a hub it returns a subscription that never wakes.
func (e *Engine) reconnects() *events.Subscription {
	if e.hub == nil {
		return &events.Subscription{}
	}
	return e.hub.Subscribe(events.OnlyReconnects)
}

// reserveSlots takes up to n slots for steps to claim, without waiting, and returns how many
// it took: no more than idle workers and the current prefetch depth allow (see claimable). A
// slot taken counts as in flight (Stop waits for it) until it is released or its step's
// worker is done with it. Only a loop that Stop waits for before it waits for the slots (the
// dispatcher) may take slots: the recorder claims with the slots of the attempts it records,
// which it holds already.
func (e *Engine) reserveSlots(n int) int {
	n = min(n, e.claimable(0))
	for got := range n {
		select {
		case e.slots <- struct{}{}:
			e.inflight.Add(1)
		default:
			return got
		}
	}
	return n
}

// releaseSlots frees n slots the caller holds.
func (e *Engine) releaseSlots(n int) {
	for range n {
		<-e.slots
		e.inflight.Done()
	}
}

// startRuns runs each prepared step on a worker, on a slot the caller holds: at once where a
// worker is idle, else (a prefetched step) as soon as one is (see work).
func (e *Engine) startRuns(runs []*run) {
	e.pool.add(runs)
	for _, r := range runs {
		go e.work(r)
	}
}

// wake tells the dispatcher to look for work.
func (e *Engine) wake() {
	select {
	case e.kick <- struct{}{}:
	default:
	}
}

// work runs a prepared step, whose slot the caller holds, on a worker: it waits for one (a
// prefetched step, for a handler to return; see workerPool), unless the step's claim is lost
// or the engine stops hard meanwhile, in which case its handler never runs (see endCancelled). An
// outcome to record goes to the recorder with the slot, which the recorder reuses for the
// steps it claims (see recorder); otherwise the slot is freed here and the dispatcher woken
// to claim the next steps.
func (e *Engine) work(r *run) {
	worker := e.pool.wait(r)
	if r.ctx.Err() != nil {
		if worker {
			e.pool.done(r)
		}
		e.endCancelled(r, 0)
		r.close()
		e.releaseSlots(1)
		e.wake()
		return
	}
	e.running.Add(1)
	e.observeStarted(r)
	handedOver := e.runStep(r)
	e.pool.done(r)
	if handedOver {
		return
	}
	e.running.Add(-1)
	e.releaseSlots(1)
	e.wake()
}

// recoverLoop recovers expired claims every RecoveryInterval; while that fails it backs off
// from RecoveryInterval up to a minute, or until the events hub reconnects.
func (e *Engine) recoverLoop(ctx context.Context, reconnected <-chan struct{}) {
	for {
		wait, wake := e.cfg.RecoveryInterval, (<-chan struct{})(nil)
		n, err := e.svc.RecoverExpired(ctx, e.log)
		switch {
		case err != nil && ctx.Err() == nil:
			wait, wake = e.recovery.Fail(err), reconnected // only a failing loop wakes on reconnection
		case err == nil:
			e.recovery.Succeed()
		}
		if n > 0 {
			if e.cfg.Observer != nil {
				e.cfg.Observer.StepsRecovered(n)
			}
			e.retryDirty.Store(true)
			e.wake()
		}
		if !dbretry.Wait(ctx, wait, wake) {
			return
		}
	}
}
