package retention

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/robfig/cron/v3"
	"gorm.io/gorm"

	"github.com/taskerhq/tasker/db"
	"github.com/taskerhq/tasker/internal/errs"
	"github.com/taskerhq/tasker/internal/store"
)

// Defaults of Config.
const (
	DefaultSchedule    = "@every 10m"
	DefaultBatchSize   = 200
	DefaultLockTimeout = 2 * time.Second
	DefaultDuty        = 50
)

// ReadModels are the read models (tasker_read_model_state names: the materialized projections
// of the catalogue) whose horizons a task's rows must be below before the task may be deleted.
var ReadModels = db.Names(db.MaterializedView)

// Config tunes a Retainer. The zero value keeps everything forever.
type Config struct {
	Policy Policy
	// Schedule is the cron spec of the runs (default DefaultSchedule); "off" disables it.
	Schedule string
	// BatchSize is the most tasks one transaction deletes.
	BatchSize int
	// LockTimeout bounds how long a batch waits for a step row that the engine holds.
	LockTimeout time.Duration
	// Duty is the most a run works, in percent of its time (1..100, 0: DefaultDuty): after
	// each batch that took d, a run that is not done waits d*(100-Duty)/Duty before the
	// next, so that the database has the rest of the time for the engine.
	Duty int
}

// ConfigFromEnv reads a Config through getenv (os.Getenv in production):
//
//	TASKER_RETENTION            namespace=period pairs, e.g. "billing=30d,*=90d" (default: keep forever)
//	TASKER_RETENTION_SCHEDULE   cron spec of the runs (default "@every 10m"; "off" disables)
//	TASKER_RETENTION_BATCH      tasks deleted per transaction (default 200)
//	TASKER_RETENTION_DUTY       percent of a run's time spent deleting, 1..100 (default 50); "25%" also reads
//
// A value that does not parse is an errs.Invalid error naming the variable.
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	var cfg Config
	p, err := ParsePolicy(getenv("TASKER_RETENTION"))
	if err != nil {
		return Config{}, errs.E(errs.Invalid, "TASKER_RETENTION: %w", err)
	}
	cfg.Policy = p
	cfg.Schedule = strings.TrimSpace(getenv("TASKER_RETENTION_SCHEDULE"))
	if cfg.Schedule != "" {
		if err := validateSchedule(cfg.Schedule); err != nil {
			return Config{}, errs.E(errs.Invalid, "TASKER_RETENTION_SCHEDULE=%q: %w", cfg.Schedule, err)
		}
	}
	if s := strings.TrimSpace(getenv("TASKER_RETENTION_BATCH")); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 10_000 {
			return Config{}, errs.E(errs.Invalid, "TASKER_RETENTION_BATCH=%q: %w", s, badPolicy("not a number of tasks in 1..10000"))
		}
		cfg.BatchSize = n
	}
	if s := strings.TrimSpace(getenv("TASKER_RETENTION_DUTY")); s != "" {
		n, err := strconv.Atoi(strings.TrimSuffix(s, "%"))
		if err != nil || n < 1 || n > 100 {
			return Config{}, errs.E(errs.Invalid, "TASKER_RETENTION_DUTY=%q: %w", s, badPolicy("not a percentage in 1..100"))
		}
		cfg.Duty = n
	}
	return cfg, nil
}

func validateSchedule(spec string) error {
	if spec == "off" {
		return nil
	}
	if _, err := cron.ParseStandard(spec); err != nil {
		return badPolicy("parsing cron schedule: %v", err)
	}
	return nil
}

// Result is what one run deleted.
type Result struct {
	// Tasks is the number of tasks deleted (with their steps, edges and transitions).
	Tasks int64
	// Batches is the number of transactions that deleted at least one task.
	Batches int
	// Skipped is true when another process was running retention.
	Skipped bool
	// Paused is how long the run waited between batches (see Config.Duty).
	Paused time.Duration
}

// Retainer deletes finished tasks past their retention period. Create it with New.
type Retainer struct {
	st  *store.Store
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	started bool
	stopped bool
	cancel  context.CancelFunc
	cron    *cron.Cron
	wg      sync.WaitGroup

	// now and sleep are the clock of the duty cycle (time.Now and a timer that ctx cuts
	// short); tests replace them.
	now   func() time.Time
	sleep func(ctx context.Context, d time.Duration) error
}

// New returns a Retainer over db. Bad configuration is an error.
func New(db *gorm.DB, cfg Config, log *slog.Logger) (*Retainer, error) {
	if db == nil || log == nil {
		return nil, errors.New("creating retainer: no database or logger")
	}
	if cfg.Schedule == "" {
		cfg.Schedule = DefaultSchedule
	}
	if err := validateSchedule(cfg.Schedule); err != nil {
		return nil, errs.E(errs.Invalid, "creating retainer: %w", err)
	}
	if cfg.BatchSize < 0 || cfg.LockTimeout < 0 {
		return nil, errs.E(errs.Invalid, "creating retainer: %w", badPolicy("negative batch size or lock timeout"))
	}
	if cfg.Duty < 0 || cfg.Duty > 100 {
		return nil, errs.E(errs.Invalid, "creating retainer: %w", badPolicy("duty %d is not a percentage in 1..100", cfg.Duty))
	}
	if cfg.Duty == 0 {
		cfg.Duty = DefaultDuty
	}
	if cfg.BatchSize == 0 {
		cfg.BatchSize = DefaultBatchSize
	}
	if cfg.LockTimeout == 0 {
		cfg.LockTimeout = DefaultLockTimeout
	}
	if cfg.Policy.Namespaces == nil {
		cfg.Policy.Namespaces = map[string]time.Duration{}
	}
	return &Retainer{st: store.New(db), cfg: cfg, log: log, now: time.Now, sleep: sleepCtx}, nil
}

// sleepCtx waits d, or until ctx ends (its error).
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// pause is how long to wait after a batch that took d, for the duty cycle.
func (r *Retainer) pause(d time.Duration) time.Duration {
	return d * time.Duration(100-r.cfg.Duty) / time.Duration(r.cfg.Duty)
}

// Start schedules the runs (nothing when the policy keeps everything forever or the schedule
// is off). A second Start is a no-op.
func (r *Retainer) Start(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.started || r.stopped {
		return nil
	}
	r.started = true
	if r.cfg.Policy.Forever() || r.cfg.Schedule == "off" {
		r.log.Info("retention: off", "policy", r.cfg.Policy.String(), "schedule", r.cfg.Schedule)
		return nil
	}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	c := cron.New(cron.WithLocation(time.UTC), cron.WithChain(cron.SkipIfStillRunning(cron.DiscardLogger)))
	if _, err := c.AddFunc(r.cfg.Schedule, func() {
		r.wg.Add(1)
		defer r.wg.Done()
		if runCtx.Err() != nil {
			return
		}
		if _, err := r.Run(runCtx); err != nil && runCtx.Err() == nil {
			r.log.Error("retention: run failed", "error", err)
		}
	}); err != nil {
		cancel()
		return fmt.Errorf("scheduling retention: %w", err)
	}
	r.cancel, r.cron = cancel, c
	c.Start()
	r.log.Info("retention: started", "policy", r.cfg.Policy.String(), "schedule", r.cfg.Schedule,
		"batch", r.cfg.BatchSize, "duty", r.cfg.Duty)
	return nil
}

// Stop stops the schedule, cancels a run in flight (its current batch rolls back) and waits
// for it until ctx ends. Safe to call twice, or without Start.
func (r *Retainer) Stop(ctx context.Context) error {
	r.mu.Lock()
	r.stopped = true
	c, cancel := r.cron, r.cancel
	r.cron, r.cancel = nil, nil
	r.mu.Unlock()
	if c == nil {
		return nil
	}
	cancel()
	done := make(chan struct{})
	go func() {
		<-c.Stop().Done()
		r.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("stopping retention: %w", ctx.Err())
	}
}

// Run deletes, batch after batch, every task the policy lets go, and returns what it deleted.
// Each batch is its own transaction; a failed batch is rolled back and ends the run with its
// error (what earlier batches deleted stays deleted). Between batches it waits as Config.Duty
// says; a run whose ctx ends while it waits returns ctx's error.
func (r *Retainer) Run(ctx context.Context) (Result, error) {
	var res Result
	if r.cfg.Policy.Forever() {
		return res, nil
	}
	policy := r.policy()
	connected := false
	err := r.st.Session(ctx, func(conn *store.Store) error {
		connected = true
		locked, err := conn.TryLockRetention(ctx)
		if err != nil {
			return fmt.Errorf("retention: taking the run lock: %w", err)
		}
		if !locked {
			res.Skipped = true
			return nil
		}
		defer func() { _ = conn.UnlockRetention(context.WithoutCancel(ctx)) }()
		var cur store.RetentionCursor
		began := time.Now()
		for {
			from := r.now()
			n, next, more, err := r.batch(ctx, conn, policy, cur)
			if err != nil {
				return err
			}
			if n > 0 {
				res.Tasks += n
				res.Batches++
			}
			if !more {
				break
			}
			cur = next
			if wait := r.pause(r.now().Sub(from)); wait > 0 {
				if err := r.sleep(ctx, wait); err != nil {
					return fmt.Errorf("retention: pausing between batches: %w", err)
				}
				res.Paused += wait
			}
		}
		if res.Tasks > 0 {
			r.log.Info("retention: deleted", "tasks", res.Tasks, "batches", res.Batches, "took", time.Since(began),
				"paused", res.Paused)
		}
		return nil
	})
	if err != nil && !connected {
		return res, fmt.Errorf("retention: connecting: %w", err)
	}
	return res, err
}

// policy returns the policy as the store reads it: the listed namespaces, their periods in
// seconds (0: forever), the default period and the shortest.
func (r *Retainer) policy() store.RetentionPolicy {
	p := store.RetentionPolicy{Default: r.cfg.Policy.Default.Seconds()}
	for n, d := range r.cfg.Policy.Namespaces {
		p.Namespaces = append(p.Namespaces, n)
		p.Periods = append(p.Periods, d.Seconds())
	}
	p.Shortest = p.Default
	for _, s := range p.Periods {
		if s > 0 && (p.Shortest == 0 || s < p.Shortest) {
			p.Shortest = s
		}
	}
	return p
}

// batch runs one deleting transaction after cur; more is false when no candidate was left.
func (r *Retainer) batch(ctx context.Context, conn *store.Store, policy store.RetentionPolicy, cur store.RetentionCursor) (n int64, next store.RetentionCursor, more bool, err error) {
	next = cur
	began := false
	var failed error
	err = conn.Tx(ctx, func(tx *store.Store) error {
		began = true
		n, next, more, failed = r.deleteBatch(ctx, tx, policy, cur)
		return failed
	}, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	switch {
	case err == nil:
		return n, next, more, nil
	case !began:
		return 0, cur, false, fmt.Errorf("retention: beginning a batch: %w", err)
	case failed == nil:
		return 0, cur, false, fmt.Errorf("retention: committing a batch: %w", err)
	default:
		return 0, cur, false, err
	}
}

// deleteBatch is the body of batch's transaction.
func (r *Retainer) deleteBatch(ctx context.Context, tx *store.Store, policy store.RetentionPolicy, cur store.RetentionCursor) (n int64, next store.RetentionCursor, more bool, err error) {
	if err := tx.SetLocalLockTimeout(ctx, r.cfg.LockTimeout); err != nil {
		return 0, cur, false, fmt.Errorf("retention: setting the lock timeout: %w", err)
	}
	found, err := tx.LockRetentionCandidates(ctx, policy, r.cfg.BatchSize, cur)
	if err != nil {
		return 0, cur, false, fmt.Errorf("retention: finding finished tasks: %w", err)
	}
	if len(found) == 0 {
		return 0, cur, false, nil
	}
	ids := make([]int64, len(found))
	for i, c := range found {
		ids[i] = c.ID
	}
	if err := tx.LockStepsOfTasks(ctx, ids); err != nil {
		return 0, cur, false, fmt.Errorf("retention: locking the steps of %d tasks: %w", len(ids), err)
	}
	if n, err = tx.DeleteRetainedTasks(ctx, ids, ReadModels); err != nil {
		return 0, cur, false, fmt.Errorf("retention: deleting %d tasks: %w", len(ids), err)
	}
	return n, found[len(found)-1], len(found) == r.cfg.BatchSize, nil
}
