package refresh

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/robfig/cron/v3"
	"gorm.io/gorm"

	"github.com/taskerhq/tasker/internal/dbretry"
	"github.com/taskerhq/tasker/internal/errs"
	"github.com/taskerhq/tasker/internal/events"
	"github.com/taskerhq/tasker/internal/store"
)

// Trigger says why a refresh ran; it is recorded in the refresh log.
type Trigger string

// The triggers of a refresh.
const (
	TriggerSchedule Trigger = "schedule"
	TriggerEvent    Trigger = "event"
	TriggerManual   Trigger = "manual"
)

// Status is the result of one refresh attempt.
type Status string

// The results of a refresh attempt. Only Refreshed and Failed are recorded in the refresh log.
const (
	// StatusRefreshed: the view was refreshed and the refresh logged.
	StatusRefreshed Status = "refreshed"
	// StatusFailed: the refresh failed, was rolled back and the failure logged; the view kept
	// its previous rows and stays stale.
	StatusFailed Status = "failed"
	// StatusSkippedLocked: another refresher (in another process) holds the view's advisory
	// lock, so it is being refreshed right now.
	StatusSkippedLocked Status = "skipped_locked"
	// StatusSkippedFresh: an event-triggered refresh found the view no longer stale: another
	// process refreshed it after the writes this one saw.
	StatusSkippedFresh Status = "skipped_fresh"
	// StatusCancelled: the context ended before or during the refresh; nothing was recorded.
	StatusCancelled Status = "cancelled"
)

// Outcome describes one refresh attempt.
type Outcome struct {
	View    string
	Trigger Trigger
	Status  Status
	// StartedAt and FinishedAt are database clock readings around the folding in of the
	// changes (zero when it did not run). The read model then reflects every transaction of
	// this database that ended before StartedAt, unless Pending.
	StartedAt  time.Time
	FinishedAt time.Time
	Duration   time.Duration
	// RowCount is the number of rows in the view after a successful refresh.
	RowCount int64
	// Pending is true after a successful refresh that left committed changes for the next
	// one: they belong to transactions above its horizon (see store.FoldIn). The read model stays
	// stale and, while the refresher runs, another refresh is scheduled.
	Pending bool
	// Err is why the refresh failed or was cancelled.
	Err error
}

// ErrStopped is returned by Start after Stop.
var ErrStopped = errors.New("refresher is stopped")

// Refresher keeps the dashboard read models fresh. Create it with New.
type Refresher struct {
	db  *gorm.DB
	st  *store.Store
	hub *events.Hub
	cfg Config
	log *slog.Logger

	views map[string]*viewRun

	// streak follows the refreshes and staleness marks that failed for want of a database (see
	// internal/dbretry): logged once per streak, and scheduled refreshes are skipped until
	// the backoff it gives has passed (retryAt).
	streak  *dbretry.Streak
	retryMu sync.Mutex
	retryAt time.Time

	mu      sync.Mutex // guards the lifecycle fields below
	started bool
	stopped bool
	runCtx  context.Context
	cancel  context.CancelFunc
	cron    *cron.Cron
	subs    []*events.Subscription
	wg      sync.WaitGroup
}

// viewRun is the in-process state of one view.
type viewRun struct {
	View
	// sem holds one token while a refresh of the view runs in this process.
	sem chan struct{}
	// wrote is set by the subscription's filter when a write affecting the view arrives, so
	// that watch tells a write from the hub's wake-up after a (re)connection.
	wrote atomic.Bool

	mu             sync.Mutex  // guards the fields below
	dirty          bool        // a write was seen since the last event-triggered refresh began
	timer          *time.Timer // non-nil while an event-triggered refresh is scheduled
	lastEventStart time.Time
}

// New returns a Refresher of every view in Views over db. hub may be nil: then only the
// schedules and Refresh trigger refreshes. Bad configuration is an error and nothing starts.
func New(db *gorm.DB, hub *events.Hub, cfg Config, log *slog.Logger) (*Refresher, error) {
	if db == nil {
		return nil, errors.New("creating refresher: no database")
	}
	if log == nil {
		return nil, errors.New("creating refresher: no logger")
	}
	full, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("creating refresher: %w", err)
	}
	r := &Refresher{db: db, st: store.New(db), hub: hub, cfg: full, log: log, views: make(map[string]*viewRun, len(Views)),
		streak: dbretry.New(log, "refresh: reaching the database", time.Second, full.MinInterval+time.Minute)}
	for _, v := range Views {
		r.views[v.Name] = &viewRun{View: v, sem: make(chan struct{}, 1)}
	}
	return r, nil
}

// Config returns the configuration in force, defaults filled in.
func (r *Refresher) Config() Config { return r.cfg }

// Start schedules every view's cron job and, with a hub, subscribes to the write events. It
// also checks every view once (catchUp): a view that is not known to be fresh is marked stale
// and refreshed after the debounce; a fresh one is not refreshed at start-up. It returns at
// once; the work runs in the background until Stop. ctx's values are kept but its
// end does not stop the refresher: Stop does. A second Start is a no-op; Start after Stop
// returns ErrStopped.
func (r *Refresher) Start(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return ErrStopped
	}
	if r.started {
		return nil
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	c := cron.New(cron.WithLocation(time.UTC), cron.WithLogger(cronLogger{r.log}),
		cron.WithChain(cron.Recover(cronLogger{r.log}), cron.SkipIfStillRunning(cronLogger{r.log})))
	for _, v := range Views {
		spec := r.cfg.Schedules[v.Name]
		if spec == "off" {
			continue
		}
		vr := r.views[v.Name]
		if _, err := c.AddFunc(spec, func() { r.onTick(vr) }); err != nil {
			cancel()
			return fmt.Errorf("scheduling refresh of %s with %q: %w", v.Name, spec, err)
		}
	}
	r.runCtx, r.cancel, r.cron = runCtx, cancel, c
	if r.hub != nil {
		for _, v := range Views {
			vr := r.views[v.Name]
			sub := r.hub.Subscribe(func(ev events.Event) bool {
				if v.Affected == nil || v.Affected(ev) {
					vr.wrote.Store(true)
					return true
				}
				return false
			})
			r.subs = append(r.subs, sub)
			r.wg.Add(1)
			go r.watch(vr, sub)
		}
	}
	for _, v := range Views {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			r.catchUp(runCtx, r.views[v.Name])
		}()
	}
	c.Start()
	r.started = true
	r.log.Info("refresh: started", "views", len(Views), "debounce", r.cfg.Debounce,
		"min_interval", r.cfg.MinInterval, "events", r.hub != nil)
	return nil
}

// Stop stops the schedules and the event subscriptions, cancels refreshes in flight (they
// roll back) and waits for them until ctx ends. A second Stop, or Stop before Start, is a
// no-op.
func (r *Refresher) Stop(ctx context.Context) error {
	r.mu.Lock()
	if r.stopped || !r.started {
		r.stopped = true
		r.mu.Unlock()
		return nil
	}
	r.stopped = true
	r.cancel()
	cronDone := r.cron.Stop()
	subs := r.subs
	r.mu.Unlock()

	for _, s := range subs {
		s.Close()
	}
	for _, vr := range r.views {
		vr.mu.Lock()
		if vr.timer != nil {
			vr.timer.Stop()
			vr.timer = nil
		}
		vr.mu.Unlock()
	}
	done := make(chan struct{})
	go func() {
		<-cronDone.Done()
		r.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		r.log.Info("refresh: stopped")
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stopping refresher: %w", ctx.Err())
	}
}

// enter registers a background run; it returns false once the refresher is stopping.
func (r *Refresher) enter() (context.Context, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped || !r.started {
		return nil, false
	}
	r.wg.Add(1)
	return r.runCtx, true
}

// running reports whether the refresher is started and not stopping.
func (r *Refresher) running() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.started && !r.stopped
}

func (r *Refresher) stopping() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stopped
}

// Refresh refreshes the named view now and returns what happened. It waits (within ctx) for a
// refresh of the view already running in this process, then runs its own; the outcome's
// Status tells whether it refreshed, failed or was skipped because another process holds the
// view's lock. The returned error is non-nil for an unknown view, a failed refresh (equal to
// Outcome.Err) or a context that ended.
func (r *Refresher) Refresh(ctx context.Context, name string) (Outcome, error) {
	vr, ok := r.views[name]
	if !ok {
		return Outcome{View: name, Trigger: TriggerManual}, errs.E(errs.NotFound, "refreshing %q: unknown materialized view (known: %s)",
			name, strings.Join(ViewNames(), ", "))
	}
	select {
	case vr.sem <- struct{}{}:
	case <-ctx.Done():
		err := fmt.Errorf("waiting to refresh %s: %w", name, ctx.Err())
		return Outcome{View: name, Trigger: TriggerManual, Status: StatusCancelled, Err: err}, err
	}
	defer func() { <-vr.sem }()
	out := r.refresh(ctx, vr, TriggerManual)
	return out, out.Err
}

// onTick runs a scheduled refresh, unless a refresh of the view is already running here.
func (r *Refresher) onTick(vr *viewRun) {
	ctx, ok := r.enter()
	if !ok {
		return
	}
	defer r.wg.Done()
	if r.backingOff() {
		r.log.Debug("refresh: tick skipped, the database is unreachable", "view", vr.Name)
		return
	}
	select {
	case vr.sem <- struct{}{}:
	default:
		r.log.Debug("refresh: tick skipped, a refresh is running", "view", vr.Name)
		return
	}
	defer func() { <-vr.sem }()
	r.refresh(ctx, vr, TriggerSchedule)
}

// watch marks vr stale on every write event of sub and schedules a refresh. A wake-up
// without a write is the hub's after a (re)connection, when writes may have been missed:
// catchUp decides.
func (r *Refresher) watch(vr *viewRun, sub *events.Subscription) {
	defer r.wg.Done()
	r.mu.Lock()
	ctx := r.runCtx
	r.mu.Unlock()
	for {
		select {
		case <-ctx.Done():
			return
		case <-sub.C:
		}
		if !vr.wrote.Swap(false) {
			r.catchUp(ctx, vr)
			continue
		}
		r.markStale(ctx, vr.Name)
		r.arm(vr)
	}
}

// catchUp marks vr stale and schedules a refresh unless the view is fresh (see fresh).
func (r *Refresher) catchUp(ctx context.Context, vr *viewRun) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if r.fresh(ctx, vr) {
		r.log.Debug("refresh: fresh, no catch-up refresh", "view", vr.Name)
		return
	}
	if ctx.Err() != nil {
		return
	}
	r.markStale(ctx, vr.Name)
	r.arm(vr)
}

// fresh reports whether vr is known to be fresh: no process has marked it stale since its
// last refresh, and that refresh's data is as of a time after the newest write to the tables
// it reads (View.NewestWrite). A write still in flight during that refresh notified after the
// refresh began, which marked the view stale in every listening process, so it is not
// missed; a view whose writes nobody heard is refreshed by its schedule. A check that fails
// counts as not fresh.
func (r *Refresher) fresh(ctx context.Context, vr *viewRun) bool {
	fresh, err := r.st.ReadModelFresh(ctx, vr.Name, vr.NewestWrite)
	if err != nil && ctx.Err() == nil {
		r.log.Warn("refresh: checking freshness failed", "view", vr.Name, "error", err)
	}
	return fresh
}

// markStale records in the database that a write affecting view was seen now. Failing to
// record it only delays what clients see; the in-memory schedule still refreshes the view.
func (r *Refresher) markStale(ctx context.Context, view string) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	err := r.st.MarkReadModelStale(ctx, view)
	switch {
	case err == nil:
		r.reached()
	case ctx.Err() != nil:
	case dbretry.Transient(err):
		r.failedToReach(err)
	default:
		r.log.Warn("refresh: marking view stale failed", "view", view, "error", err)
	}
}

// failedToReach counts a failure to reach the database in the streak and holds scheduled
// refreshes back for the backoff it gives.
func (r *Refresher) failedToReach(err error) {
	wait := r.streak.Fail(err)
	r.retryMu.Lock()
	r.retryAt = time.Now().Add(wait)
	r.retryMu.Unlock()
}

// reached ends a streak of failures to reach the database: scheduled refreshes run again at
// once.
func (r *Refresher) reached() {
	r.streak.Succeed()
	r.retryMu.Lock()
	r.retryAt = time.Time{}
	r.retryMu.Unlock()
}

// backingOff reports whether scheduled refreshes are held back after failures to reach the
// database.
func (r *Refresher) backingOff() bool {
	r.retryMu.Lock()
	defer r.retryMu.Unlock()
	return time.Now().Before(r.retryAt)
}

// arm marks vr dirty and, unless one is pending, schedules an event-triggered refresh after
// the debounce, and no sooner than MinInterval after the previous one started.
func (r *Refresher) arm(vr *viewRun) {
	if r.stopping() {
		return
	}
	vr.mu.Lock()
	defer vr.mu.Unlock()
	vr.dirty = true
	if vr.timer != nil {
		return
	}
	delay := r.cfg.Debounce
	if !vr.lastEventStart.IsZero() {
		if wait := time.Until(vr.lastEventStart.Add(r.cfg.MinInterval)); wait > delay {
			delay = wait
		}
	}
	vr.timer = time.AfterFunc(delay, func() { r.fire(vr) })
}

// fire runs a scheduled event-triggered refresh. When a refresh of the view is already running
// here, it schedules itself again instead of waiting.
func (r *Refresher) fire(vr *viewRun) {
	ctx, ok := r.enter()
	if !ok {
		return
	}
	defer r.wg.Done()
	select {
	case vr.sem <- struct{}{}:
	default:
		vr.mu.Lock()
		vr.timer = nil
		vr.mu.Unlock()
		r.arm(vr)
		return
	}
	defer func() { <-vr.sem }()
	vr.mu.Lock()
	vr.timer = nil
	dirty := vr.dirty
	vr.dirty = false
	vr.lastEventStart = time.Now()
	vr.mu.Unlock()
	if !dirty {
		return
	}
	if out := r.refresh(ctx, vr, TriggerEvent); out.Status == StatusSkippedLocked {
		// The refresh running elsewhere may have started before the writes seen here.
		r.arm(vr)
	}
}

// refresh runs one refresh of vr; the caller holds vr.sem.
func (r *Refresher) refresh(ctx context.Context, vr *viewRun, trigger Trigger) Outcome {
	out := Outcome{View: vr.Name, Trigger: trigger}
	err := r.refreshTx(ctx, vr, &out)
	if err == nil {
		r.reached()
	}
	switch {
	case err == nil:
		if out.Pending && r.running() {
			r.arm(vr)
		}
		if out.Status == StatusRefreshed {
			r.log.Info("refresh: refreshed", "view", vr.Name, "trigger", trigger,
				"duration_ms", out.Duration.Milliseconds(), "rows", out.RowCount)
		} else {
			r.log.Debug("refresh: skipped", "view", vr.Name, "trigger", trigger, "status", out.Status)
		}
	case ctx.Err() != nil:
		out.Status = StatusCancelled
		out.Err = fmt.Errorf("refreshing %s: %w", vr.Name, ctx.Err())
		r.log.Info("refresh: cancelled", "view", vr.Name, "trigger", trigger)
	case dbretry.Transient(err):
		// The database is unreachable: the failure cannot be logged in it either; the streak
		// logs it here once.
		out.Status = StatusFailed
		out.Err = fmt.Errorf("refreshing %s: %w", vr.Name, err)
		r.failedToReach(err)
	default:
		out.Status = StatusFailed
		out.Err = fmt.Errorf("refreshing %s: %w", vr.Name, err)
		r.log.Error("refresh: failed", "view", vr.Name, "trigger", trigger, "error", err)
		if rerr := r.recordFailure(ctx, &out); rerr != nil {
			r.log.Error("refresh: recording failure failed", "view", vr.Name, "error", rerr)
		}
	}
	return out
}

// refreshTx is the refresh transaction: the cross-process lock, the statement timeout, the
// folding in of the changes (store.FoldIn), the freshness update and the log row, committed
// together.
func (r *Refresher) refreshTx(ctx context.Context, vr *viewRun, out *Outcome) error {
	// Read committed: each statement that folds changes in sees every transaction that ended
	// before it started (see store.FoldIn).
	began := false
	var failed error
	err := r.st.Tx(ctx, func(tx *store.Store) error {
		began = true
		failed = r.refreshIn(ctx, tx, vr, out)
		return failed
	}, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	switch {
	case err == nil:
	case !began:
		return fmt.Errorf("beginning refresh transaction: %w", err)
	case failed == nil:
		return fmt.Errorf("committing the refresh: %w", err)
	default:
		return err
	}
	if out.Status == "" {
		out.Status = StatusRefreshed
	}
	return nil
}

// refreshIn is the body of the refresh transaction tx; it leaves out.Status empty when it
// refreshed.
func (r *Refresher) refreshIn(ctx context.Context, tx *store.Store, vr *viewRun, out *Outcome) error {
	locked, err := tx.TryLockReadModel(ctx, vr.Name)
	if err != nil {
		return fmt.Errorf("taking the refresh lock: %w", err)
	}
	if !locked {
		out.Status = StatusSkippedLocked
		return nil
	}
	if out.Trigger == TriggerEvent {
		stale, found, err := tx.ReadModelStale(ctx, vr.Name)
		if err != nil {
			return fmt.Errorf("reading staleness: %w", err)
		}
		if found && !stale {
			out.Status = StatusSkippedFresh
			return nil
		}
	}
	if err := tx.SetLocalStatementTimeout(ctx, r.cfg.Timeout); err != nil {
		return fmt.Errorf("setting the statement timeout: %w", err)
	}
	if out.StartedAt, err = tx.Clock(ctx); err != nil {
		return fmt.Errorf("reading the clock: %w", err)
	}
	if _, out.Pending, err = tx.FoldIn(ctx, vr.Name); err != nil {
		return err
	}
	if out.RowCount, out.FinishedAt, err = tx.CountReadModel(ctx, vr.Name); err != nil {
		return fmt.Errorf("counting rows: %w", err)
	}
	out.Duration = out.FinishedAt.Sub(out.StartedAt)
	return tx.RecordRefresh(ctx, store.ReadModelRefresh{
		View: vr.Name, Trigger: string(out.Trigger), StartedAt: out.StartedAt, FinishedAt: out.FinishedAt,
		RowCount: out.RowCount, Pending: out.Pending, By: r.cfg.ProcessID,
		KeepSince: out.StartedAt.Add(-r.cfg.Retention),
	})
}

// recordFailure logs a failed refresh, sets the view's last_error and fills in the outcome's
// times (the database's clock; from the failure time when the REFRESH never started). It runs
// after the refresh transaction rolled back, on a context that survives ctx's cancellation.
func (r *Refresher) recordFailure(ctx context.Context, out *Outcome) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	var started *time.Time
	if !out.StartedAt.IsZero() {
		started = &out.StartedAt
	}
	var err error
	out.StartedAt, out.FinishedAt, err = r.st.RecordRefreshFailure(ctx, out.View, string(out.Trigger), started,
		out.Err.Error(), r.cfg.ProcessID)
	if err != nil {
		return fmt.Errorf("logging the failure: %w", err)
	}
	out.Duration = out.FinishedAt.Sub(out.StartedAt)
	return nil
}

// cronLogger sends robfig/cron's log lines to slog; its routine lines go to debug.
type cronLogger struct{ log *slog.Logger }

func (l cronLogger) Info(msg string, kv ...any) {
	l.log.Debug("refresh: cron "+msg, kv...)
}

func (l cronLogger) Error(err error, msg string, kv ...any) {
	l.log.Error("refresh: cron "+msg, append([]any{"error", err}, kv...)...)
}
