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
)

// Defaults of Config.
const (
	DefaultSchedule    = "@every 10m"
	DefaultBatchSize   = 200
	DefaultLockTimeout = 2 * time.Second
)

// ReadModels are the read models (tasker_read_model_state names) whose horizons a task's rows
// must be below before the task may be deleted.
var ReadModels = []string{"tasker_task_status_summaries", "tasker_step_performance", "tasker_hourly_throughput"}

// Config tunes a Retainer. The zero value keeps everything forever.
type Config struct {
	Policy Policy
	// Schedule is the cron spec of the runs (default DefaultSchedule); "off" disables it.
	Schedule string
	// BatchSize is the most tasks one transaction deletes.
	BatchSize int
	// LockTimeout bounds how long a batch waits for a step row that the engine holds.
	LockTimeout time.Duration
}

// ConfigFromEnv reads a Config through getenv (os.Getenv in production):
//
//	TASKER_RETENTION            namespace=period pairs, e.g. "billing=30d,*=90d" (default: keep forever)
//	TASKER_RETENTION_SCHEDULE   cron spec of the runs (default "@every 10m"; "off" disables)
//	TASKER_RETENTION_BATCH      tasks deleted per transaction (default 200)
//
// A value that does not parse is an error naming the variable.
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	var cfg Config
	p, err := ParsePolicy(getenv("TASKER_RETENTION"))
	if err != nil {
		return Config{}, fmt.Errorf("TASKER_RETENTION: %w", err)
	}
	cfg.Policy = p
	cfg.Schedule = strings.TrimSpace(getenv("TASKER_RETENTION_SCHEDULE"))
	if cfg.Schedule != "" {
		if err := validateSchedule(cfg.Schedule); err != nil {
			return Config{}, fmt.Errorf("TASKER_RETENTION_SCHEDULE=%q: %w", cfg.Schedule, err)
		}
	}
	if s := strings.TrimSpace(getenv("TASKER_RETENTION_BATCH")); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 10_000 {
			return Config{}, fmt.Errorf("TASKER_RETENTION_BATCH=%q: %w: not a number of tasks in 1..10000", s, ErrBadPolicy)
		}
		cfg.BatchSize = n
	}
	return cfg, nil
}

func validateSchedule(spec string) error {
	if spec == "off" {
		return nil
	}
	if _, err := cron.ParseStandard(spec); err != nil {
		return fmt.Errorf("%w: parsing cron schedule: %v", ErrBadPolicy, err)
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
}

// Retainer deletes finished tasks past their retention period. Create it with New.
type Retainer struct {
	db  *sql.DB
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	started bool
	stopped bool
	cancel  context.CancelFunc
	cron    *cron.Cron
	wg      sync.WaitGroup
}

// New returns a Retainer over db. Bad configuration is an error.
func New(db *sql.DB, cfg Config, log *slog.Logger) (*Retainer, error) {
	if db == nil || log == nil {
		return nil, errors.New("creating retainer: no database or logger")
	}
	if cfg.Schedule == "" {
		cfg.Schedule = DefaultSchedule
	}
	if err := validateSchedule(cfg.Schedule); err != nil {
		return nil, fmt.Errorf("creating retainer: %w", err)
	}
	if cfg.BatchSize < 0 || cfg.LockTimeout < 0 {
		return nil, fmt.Errorf("creating retainer: %w: negative batch size or lock timeout", ErrBadPolicy)
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
	return &Retainer{db: db, cfg: cfg, log: log}, nil
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
		"batch", r.cfg.BatchSize)
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

// lockKey is the session advisory lock one run holds, shared by every process.
const lockKey = `hashtextextended('tasker.retention', 0)`

// Run deletes, batch after batch, every task the policy lets go, and returns what it deleted.
// Each batch is its own transaction; a failed batch is rolled back and ends the run with its
// error (what earlier batches deleted stays deleted).
func (r *Retainer) Run(ctx context.Context) (Result, error) {
	var res Result
	if r.cfg.Policy.Forever() {
		return res, nil
	}
	conn, err := r.db.Conn(ctx)
	if err != nil {
		return res, fmt.Errorf("retention: connecting: %w", err)
	}
	defer conn.Close()
	var locked bool
	if err := conn.QueryRowContext(ctx, `SELECT pg_try_advisory_lock(`+lockKey+`)`).Scan(&locked); err != nil {
		return res, fmt.Errorf("retention: taking the run lock: %w", err)
	}
	if !locked {
		res.Skipped = true
		return res, nil
	}
	defer func() {
		_, _ = conn.ExecContext(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock(`+lockKey+`)`)
	}()
	names, periods := r.policyArrays()
	cur := cursor{at: time.Time{}, id: 0}
	began := time.Now()
	for {
		n, next, more, err := r.batch(ctx, conn, names, periods, cur)
		if err != nil {
			return res, err
		}
		if n > 0 {
			res.Tasks += n
			res.Batches++
		}
		if !more {
			break
		}
		cur = next
	}
	if res.Tasks > 0 {
		r.log.Info("retention: deleted", "tasks", res.Tasks, "batches", res.Batches, "took", time.Since(began))
	}
	return res, nil
}

// policyArrays returns the listed namespaces and their periods in seconds (0: forever).
func (r *Retainer) policyArrays() ([]string, []float64) {
	var names []string
	var secs []float64
	for n, d := range r.cfg.Policy.Namespaces {
		names = append(names, n)
		secs = append(secs, d.Seconds())
	}
	return names, secs
}

// cursor is the (created_at, task_id) of the last task a run examined.
type cursor struct {
	at time.Time
	id int64
}

// candidatesSQL picks, in creation order after the cursor, up to $5 tasks that are finished
// since before their namespace's period, locking them and skipping tasks locked by others.
// $1/$2: the listed namespaces and their periods (seconds), $3: the default period, $4: the
// shortest period (tasks created since then cannot qualify), $6/$7: the cursor.
const candidatesSQL = `
	WITH policy AS (
		SELECT ns.task_namespace_id, coalesce(p.secs, $3::float8) AS secs
		FROM tasker_task_namespaces ns
		LEFT JOIN unnest($1::text[], $2::float8[]) AS p(name, secs) ON p.name = ns.name
	)
	SELECT t.task_id, t.created_at
	FROM tasker_tasks t
	JOIN tasker_named_tasks nt ON nt.named_task_id = t.named_task_id
	JOIN policy p ON p.task_namespace_id = nt.task_namespace_id AND p.secs > 0
	JOIN tasker_task_transitions cur ON cur.task_id = t.task_id AND cur.most_recent
	WHERE t.created_at < now() - make_interval(secs => $4::float8)
	  AND (t.created_at, t.task_id) > ($6::timestamptz, $7::bigint)
	  AND cur.to_state IN ('complete', 'cancelled', 'resolved_manually')
	  AND cur.created_at < now() - make_interval(secs => p.secs)
	ORDER BY t.created_at, t.task_id
	LIMIT $5
	FOR UPDATE OF t SKIP LOCKED`

// deleteSQL deletes the locked candidates $1 that are still finished now that their steps are
// locked too, and whose rows every read model has folded in ($2: the read models), with their
// rows in tasker_rm_task_states. Steps, edges, transitions and annotations go by cascade.
const deleteSQL = `
	WITH horizon AS (
		SELECT min(processed_xid) AS h FROM tasker_read_model_state
		WHERE name = ANY($2::text[])
		HAVING count(*) = cardinality($2::text[]) AND bool_and(processed_xid IS NOT NULL)
	), del AS (
		DELETE FROM tasker_tasks t USING horizon
		WHERE t.task_id = ANY($1::bigint[])
		  AND coalesce(t.created_xid, '0') < horizon.h
		  AND EXISTS (SELECT 1 FROM tasker_task_transitions cur WHERE cur.task_id = t.task_id AND cur.most_recent
		              AND cur.to_state IN ('complete', 'cancelled', 'resolved_manually'))
		  AND NOT EXISTS (
			SELECT 1 FROM tasker_workflow_steps ws
			LEFT JOIN tasker_workflow_step_transitions c ON c.workflow_step_id = ws.workflow_step_id AND c.most_recent
			WHERE ws.task_id = t.task_id
			  AND (ws.in_process OR coalesce(c.to_state, 'pending') NOT IN ('complete', 'cancelled', 'resolved_manually')))
		  AND NOT EXISTS (SELECT 1 FROM tasker_task_transitions x WHERE x.task_id = t.task_id
		                  AND coalesce(x.created_xid, '0') >= horizon.h)
		  AND NOT EXISTS (SELECT 1 FROM tasker_workflow_steps ws
		                  JOIN tasker_workflow_step_transitions x ON x.workflow_step_id = ws.workflow_step_id
		                  WHERE ws.task_id = t.task_id AND coalesce(x.created_xid, '0') >= horizon.h)
		RETURNING t.task_id
	), states AS (
		DELETE FROM tasker_rm_task_states s USING del WHERE s.task_id = del.task_id
	)
	SELECT count(*) FROM del`

// batch runs one deleting transaction after cur; more is false when no candidate was left.
func (r *Retainer) batch(ctx context.Context, conn *sql.Conn, names []string, periods []float64, cur cursor) (n int64, next cursor, more bool, err error) {
	tx, err := conn.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		return 0, cur, false, fmt.Errorf("retention: beginning a batch: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	if _, err := tx.ExecContext(ctx, `SELECT set_config('lock_timeout', $1, true)`,
		strconv.FormatInt(max(r.cfg.LockTimeout.Milliseconds(), 1), 10)); err != nil {
		return 0, cur, false, fmt.Errorf("retention: setting the lock timeout: %w", err)
	}
	shortest := r.cfg.Policy.Default.Seconds()
	for _, s := range periods {
		if s > 0 && (shortest == 0 || s < shortest) {
			shortest = s
		}
	}
	rows, err := tx.QueryContext(ctx, candidatesSQL, names, periods, r.cfg.Policy.Default.Seconds(), shortest,
		r.cfg.BatchSize, cur.at, cur.id)
	if err != nil {
		return 0, cur, false, fmt.Errorf("retention: finding finished tasks: %w", err)
	}
	var ids []int64
	next = cur
	for rows.Next() {
		if err := rows.Scan(&next.id, &next.at); err != nil {
			rows.Close()
			return 0, cur, false, fmt.Errorf("retention: reading candidates: %w", err)
		}
		ids = append(ids, next.id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, cur, false, fmt.Errorf("retention: finding finished tasks: %w", err)
	}
	if len(ids) == 0 {
		return 0, cur, false, nil
	}
	// Every transition locks its owner's row first: with the tasks and their steps locked,
	// nothing can move them until this transaction ends.
	if _, err := tx.ExecContext(ctx, `SELECT 1 FROM tasker_workflow_steps WHERE task_id = ANY($1::bigint[])
		ORDER BY workflow_step_id FOR UPDATE`, ids); err != nil {
		return 0, cur, false, fmt.Errorf("retention: locking the steps of %d tasks: %w", len(ids), err)
	}
	if err := tx.QueryRowContext(ctx, deleteSQL, ids, ReadModels).Scan(&n); err != nil {
		return 0, cur, false, fmt.Errorf("retention: deleting %d tasks: %w", len(ids), err)
	}
	if err := tx.Commit(); err != nil {
		return 0, cur, false, fmt.Errorf("retention: committing a batch: %w", err)
	}
	return n, next, len(ids) == r.cfg.BatchSize, nil
}
