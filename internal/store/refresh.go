package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/taskerhq/tasker/db"
)

// Incremental read models. Each dashboard is a set of aggregate tables (tasker_rm_*, see
// db/migrations/00031_incremental_read_models.sql) behind a plain view of the dashboard's
// name. A refresh folds in the rows of tasker_tasks and the transition tables whose
// created_xid lies in [processed_xid, H), where H is the horizon (ReadHorizon): every
// transaction of this database below H has ended, so its rows are all visible to the
// statements that follow (or rolled back for good), and each transaction's rows are folded in by exactly one
// refresh, whatever order ids were assigned or transactions committed in. The first refresh
// (processed_xid NULL) folds in the history written before created_xid existed (NULL) too.
//
// Rows of transactions at or above H that have already committed wait for the next
// refresh; FoldIn reports them (pending) and the refresher leaves the read model stale.

// span selects the rows one refresh folds in; its SQL is a predicate on alias.created_xid
// with $1 the previous horizon and $2 the new one.
type span struct{ first bool }

// pred returns the predicate on alias's created_xid.
func (s span) pred(alias string) string {
	if s.first {
		return fmt.Sprintf("($1::xid8 IS NULL AND (%[1]s.created_xid IS NULL OR %[1]s.created_xid < $2::xid8))", alias)
	}
	return fmt.Sprintf("(%[1]s.created_xid >= $1::xid8 AND %[1]s.created_xid < $2::xid8)", alias)
}

// expand replaces {tasks}, {task_transitions} and {step_transitions} in q by the predicates
// on the aliases t, tt and st.
func (s span) expand(q string) string {
	return strings.NewReplacer(
		"{tasks}", s.pred("t"),
		"{task_transitions}", s.pred("tt"),
		"{step_transitions}", s.pred("st"),
	).Replace(q)
}

// foldSQL holds the statements of each read model's refresh (by its name in the catalogue
// db.Projections), in order; each takes $1 (the previous horizon,
// NULL on the first refresh) and $2 (the new horizon), as text.
var foldSQL = map[string][]string{
	db.TaskStatusSummaries: {
		// Tasks created in the span, and tasks whose transitions are in it but whose own row
		// is not (its transaction is above the horizon of an earlier refresh), enter in the
		// state of their newest transition in the span (pending without one), each once.
		`WITH cand AS (
			SELECT t.task_id, t.named_task_id, t.requested_at FROM tasker_tasks t WHERE {tasks}
			UNION
			SELECT t.task_id, t.named_task_id, t.requested_at
			FROM tasker_task_transitions tt JOIN tasker_tasks t ON t.task_id = tt.task_id
			WHERE {task_transitions}
		), latest AS (
			SELECT DISTINCT ON (tt.task_id) tt.task_id, tt.to_state, tt.sort_key, tt.created_at
			FROM tasker_task_transitions tt WHERE {task_transitions}
			ORDER BY tt.task_id, tt.sort_key DESC
		), ins AS (
			INSERT INTO tasker_rm_task_states (task_id, named_task_id, state, sort_key, requested_at, state_since)
			SELECT c.task_id, c.named_task_id, coalesce(l.to_state, 'pending'), coalesce(l.sort_key, 0),
			       c.requested_at, l.created_at
			FROM cand c LEFT JOIN latest l ON l.task_id = c.task_id
			ON CONFLICT (task_id) DO NOTHING
			RETURNING named_task_id, state
		)
		INSERT INTO tasker_rm_task_counts AS c (named_task_id, pending_count, in_progress_count, complete_count,
			error_count, cancelled_count, resolved_manually_count, total_count)
		SELECT named_task_id, count(*) FILTER (WHERE state = 'pending'), count(*) FILTER (WHERE state = 'in_progress'),
		       count(*) FILTER (WHERE state = 'complete'), count(*) FILTER (WHERE state = 'error'),
		       count(*) FILTER (WHERE state = 'cancelled'), count(*) FILTER (WHERE state = 'resolved_manually'),
		       count(*)
		FROM ins GROUP BY named_task_id
		ON CONFLICT (named_task_id) DO UPDATE SET
			pending_count = c.pending_count + EXCLUDED.pending_count,
			in_progress_count = c.in_progress_count + EXCLUDED.in_progress_count,
			complete_count = c.complete_count + EXCLUDED.complete_count,
			error_count = c.error_count + EXCLUDED.error_count,
			cancelled_count = c.cancelled_count + EXCLUDED.cancelled_count,
			resolved_manually_count = c.resolved_manually_count + EXCLUDED.resolved_manually_count,
			total_count = c.total_count + EXCLUDED.total_count`,
		// Each task seen before moves to its newest transition in the span, when that is
		// newer (by sort_key) than the one it is in; the counts move with it.
		`WITH latest AS (
			SELECT DISTINCT ON (tt.task_id) tt.task_id, tt.to_state, tt.sort_key, tt.created_at
			FROM tasker_task_transitions tt WHERE {task_transitions}
			ORDER BY tt.task_id, tt.sort_key DESC
		), moved AS (
			SELECT s.task_id, s.named_task_id, s.state AS old_state, l.to_state, l.sort_key, l.created_at
			FROM latest l JOIN tasker_rm_task_states s ON s.task_id = l.task_id
			WHERE l.sort_key > s.sort_key
		), upd AS (
			UPDATE tasker_rm_task_states s SET state = m.to_state, sort_key = m.sort_key, state_since = m.created_at
			FROM moved m WHERE s.task_id = m.task_id
		), delta AS (
			SELECT named_task_id, state, sum(d) AS d FROM (
				SELECT named_task_id, old_state AS state, -1 AS d FROM moved
				UNION ALL
				SELECT named_task_id, to_state, 1 FROM moved
			) x GROUP BY named_task_id, state
		), per_task AS (
			SELECT named_task_id,
			       coalesce(sum(d) FILTER (WHERE state = 'pending'), 0) AS pending,
			       coalesce(sum(d) FILTER (WHERE state = 'in_progress'), 0) AS in_progress,
			       coalesce(sum(d) FILTER (WHERE state = 'complete'), 0) AS complete,
			       coalesce(sum(d) FILTER (WHERE state = 'error'), 0) AS error,
			       coalesce(sum(d) FILTER (WHERE state = 'cancelled'), 0) AS cancelled,
			       coalesce(sum(d) FILTER (WHERE state = 'resolved_manually'), 0) AS resolved_manually
			FROM delta GROUP BY named_task_id
		)
		UPDATE tasker_rm_task_counts c SET
			pending_count = c.pending_count + p.pending,
			in_progress_count = c.in_progress_count + p.in_progress,
			complete_count = c.complete_count + p.complete,
			error_count = c.error_count + p.error,
			cancelled_count = c.cancelled_count + p.cancelled,
			resolved_manually_count = c.resolved_manually_count + p.resolved_manually
		FROM per_task p WHERE c.named_task_id = p.named_task_id`,
	},
	db.StepPerformance: {
		// Every (namespace, named step) with a workflow step has a row.
		`INSERT INTO tasker_rm_step_performance (task_namespace_id, named_step_id)
		SELECT DISTINCT nt.task_namespace_id, ws.named_step_id
		FROM tasker_tasks t
		JOIN tasker_named_tasks nt ON nt.named_task_id = t.named_task_id
		JOIN tasker_workflow_steps ws ON ws.task_id = t.task_id
		WHERE {tasks}
		ON CONFLICT DO NOTHING`,
		// The span's transitions: a transition into complete or error whose previous
		// transition (by sort_key) went to in_progress ends a run of that duration.
		`CREATE TEMP TABLE IF NOT EXISTS tasker_rm_step_span (
			task_namespace_id bigint, named_step_id bigint, to_state varchar(32), from_state varchar(32), ms numeric
		) ON COMMIT DELETE ROWS`,
		`INSERT INTO tasker_rm_step_span
		SELECT nt.task_namespace_id, ws.named_step_id, st.to_state, st.from_state,
		       CASE WHEN prev.to_state = 'in_progress'
		            THEN extract(epoch FROM st.created_at - prev.created_at) * 1000 END
		FROM tasker_workflow_step_transitions st
		JOIN tasker_workflow_steps ws ON ws.workflow_step_id = st.workflow_step_id
		JOIN tasker_tasks t ON t.task_id = ws.task_id
		JOIN tasker_named_tasks nt ON nt.named_task_id = t.named_task_id
		LEFT JOIN LATERAL (
			SELECT p.to_state, p.created_at FROM tasker_workflow_step_transitions p
			WHERE p.workflow_step_id = st.workflow_step_id AND p.sort_key < st.sort_key
			ORDER BY p.sort_key DESC LIMIT 1
		) prev ON st.to_state IN ('complete', 'error')
		WHERE {step_transitions}`,
		`INSERT INTO tasker_rm_step_durations AS d (task_namespace_id, named_step_id, bucket, runs)
		SELECT task_namespace_id, named_step_id, tasker_rm_duration_bucket(ms), count(*)
		FROM tasker_rm_step_span WHERE ms IS NOT NULL GROUP BY 1, 2, 3
		ON CONFLICT (task_namespace_id, named_step_id, bucket) DO UPDATE SET runs = d.runs + EXCLUDED.runs`,
		`INSERT INTO tasker_rm_step_performance AS p (task_namespace_id, named_step_id, executions, successes,
			failures, retries, finished_runs, duration_sum_ms, max_duration_ms)
		SELECT task_namespace_id, named_step_id,
		       count(*) FILTER (WHERE to_state = 'in_progress'),
		       count(*) FILTER (WHERE to_state = 'complete'),
		       count(*) FILTER (WHERE to_state = 'error'),
		       count(*) FILTER (WHERE from_state = 'error' AND to_state = 'pending'),
		       count(ms), coalesce(sum(ms), 0), max(ms)::double precision
		FROM tasker_rm_step_span GROUP BY 1, 2
		ON CONFLICT (task_namespace_id, named_step_id) DO UPDATE SET
			executions = p.executions + EXCLUDED.executions,
			successes = p.successes + EXCLUDED.successes,
			failures = p.failures + EXCLUDED.failures,
			retries = p.retries + EXCLUDED.retries,
			finished_runs = p.finished_runs + EXCLUDED.finished_runs,
			duration_sum_ms = p.duration_sum_ms + EXCLUDED.duration_sum_ms,
			max_duration_ms = greatest(p.max_duration_ms, EXCLUDED.max_duration_ms)`,
		// Percentiles of the rows whose histogram changed, set-based: for p in (0.5, 0.95) and
		// n runs, the bucket values of the runs of rank floor and ceil of p * (n - 1) (0-based,
		// in duration order), interpolated like percentile_cont. Each bucket value is within
		// 1% of every duration in its bucket, so the result is within 1% of percentile_cont.
		`WITH changed AS (
			SELECT DISTINCT task_namespace_id, named_step_id FROM tasker_rm_step_span WHERE ms IS NOT NULL
		), h AS (
			SELECT d.task_namespace_id, d.named_step_id, d.bucket,
			       sum(d.runs) OVER (PARTITION BY d.task_namespace_id, d.named_step_id ORDER BY d.bucket) AS cum,
			       sum(d.runs) OVER (PARTITION BY d.task_namespace_id, d.named_step_id) AS n
			FROM tasker_rm_step_durations d
			JOIN changed c ON c.task_namespace_id = d.task_namespace_id AND c.named_step_id = d.named_step_id
		), ranked AS (
			SELECT h.task_namespace_id, h.named_step_id, q.p, q.p * (h.n - 1) AS rank,
			       min(h.bucket) FILTER (WHERE h.cum > floor(q.p * (h.n - 1))) AS lo,
			       min(h.bucket) FILTER (WHERE h.cum > ceil(q.p * (h.n - 1))) AS hi
			FROM h CROSS JOIN (VALUES (0.5::float8), (0.95::float8)) AS q(p)
			GROUP BY h.task_namespace_id, h.named_step_id, q.p, h.n
		), value AS (
			SELECT task_namespace_id, named_step_id,
			       max(v) FILTER (WHERE p = 0.5) AS p50, max(v) FILTER (WHERE p = 0.95) AS p95
			FROM (SELECT task_namespace_id, named_step_id, p,
			             tasker_rm_bucket_ms(lo) + (rank - floor(rank)) * (tasker_rm_bucket_ms(hi) - tasker_rm_bucket_ms(lo)) AS v
			      FROM ranked) x
			GROUP BY task_namespace_id, named_step_id
		)
		UPDATE tasker_rm_step_performance p SET p50_duration_ms = v.p50, p95_duration_ms = v.p95
		FROM value v WHERE p.task_namespace_id = v.task_namespace_id AND p.named_step_id = v.named_step_id`,
	},
	db.HourlyThroughput: {
		`WITH events AS (
			SELECT date_trunc('hour', t.created_at, 'UTC') AS hour, 1 AS created, 0 AS t_done, 0 AS t_failed,
			       0 AS s_done, 0 AS s_failed
			FROM tasker_tasks t WHERE {tasks}
			UNION ALL
			SELECT date_trunc('hour', tt.created_at, 'UTC'), 0, (tt.to_state = 'complete')::int,
			       (tt.to_state = 'error')::int, 0, 0
			FROM tasker_task_transitions tt WHERE {task_transitions} AND tt.to_state IN ('complete', 'error')
			UNION ALL
			SELECT date_trunc('hour', st.created_at, 'UTC'), 0, 0, 0, (st.to_state = 'complete')::int,
			       (st.to_state = 'error')::int
			FROM tasker_workflow_step_transitions st WHERE {step_transitions} AND st.to_state IN ('complete', 'error')
		)
		INSERT INTO tasker_rm_hourly_throughput AS h (hour, tasks_created, tasks_completed, tasks_failed,
			steps_completed, steps_failed)
		SELECT hour, sum(created), sum(t_done), sum(t_failed), sum(s_done), sum(s_failed)
		FROM events GROUP BY hour
		ON CONFLICT (hour) DO UPDATE SET
			tasks_created = h.tasks_created + EXCLUDED.tasks_created,
			tasks_completed = h.tasks_completed + EXCLUDED.tasks_completed,
			tasks_failed = h.tasks_failed + EXCLUDED.tasks_failed,
			steps_completed = h.steps_completed + EXCLUDED.steps_completed,
			steps_failed = h.steps_failed + EXCLUDED.steps_failed`,
	},
}

// pendingSQL reports whether rows at or above the horizon $1 are visible already (committed
// by transactions that ended after an older one began): one backward index probe per source
// table (max over the created_xid index; an EXISTS with a range could be planned as a scan).
const pendingSQL = `SELECT coalesce((SELECT max(created_xid) FROM tasker_tasks), '0') >= $1::xid8
	OR coalesce((SELECT max(created_xid) FROM tasker_task_transitions), '0') >= $1::xid8
	OR coalesce((SELECT max(created_xid) FROM tasker_workflow_step_transitions), '0') >= $1::xid8`

// The horizon is the oldest transaction that was running when the refresh took its snapshot
// and is still running now (or the snapshot's xmax when there is none), leaving out the
// transactions known to belong to other databases of the cluster, whose rows cannot be in
// these tables: a long transaction elsewhere does not hold the read models back. A
// transaction that ended after the snapshot does not count either: the statements that fold
// changes in start later, so they see its rows. A running transaction not listed in
// pg_stat_activity (a prepared transaction) counts, which can only lower the horizon.
const (
	snapshotSQL = `SELECT pg_current_snapshot()::text`
	horizonSQL  = `SELECT coalesce(min(x), pg_snapshot_xmax($1::pg_snapshot))::text
		FROM pg_snapshot_xip($1::pg_snapshot) AS x
		WHERE pg_xact_status(x) = 'in progress'
		  AND NOT EXISTS (
			SELECT 1 FROM pg_stat_activity a
			WHERE a.backend_xid IS NOT NULL AND a.datid IS DISTINCT FROM
			      (SELECT oid FROM pg_database WHERE datname = current_database())
			  AND a.backend_xid::text::numeric = x::text::numeric % 4294967296)`
)

// readModelLockSQL is the advisory lock key of one read model's refresh (parameter $1: the
// view's name), shared by every process.
const readModelLockSQL = `hashtextextended('tasker.read_model_refresh:' || $1, 0)`

// smallSpan is the most rows a source table may have in a span for PlanForIndexLookups to apply;
// smallSpanSQL tells (reading at most that many index entries per table) whether a span
// between $1 and $2 is larger.
const (
	smallSpan    = 10_000
	smallSpanSQL = `SELECT (SELECT count(*) FROM (SELECT 1 FROM tasker_workflow_step_transitions
			WHERE created_xid >= $1::xid8 AND created_xid < $2::xid8 LIMIT $3) x) >= $3
		OR (SELECT count(*) FROM (SELECT 1 FROM tasker_task_transitions
			WHERE created_xid >= $1::xid8 AND created_xid < $2::xid8 LIMIT $3) x) >= $3
		OR (SELECT count(*) FROM (SELECT 1 FROM tasker_tasks
			WHERE created_xid >= $1::xid8 AND created_xid < $2::xid8 LIMIT $3) x) >= $3`
)

// ReadHorizon returns the horizon of a refresh (see above); the transaction must not have an
// xid yet.
func (s *Store) ReadHorizon(ctx context.Context) (string, error) {
	db := s.conn(ctx)
	var snap, horizon string
	if err := db.Raw(snapshotSQL).Row().Scan(&snap); err != nil {
		return "", fmt.Errorf("reading the snapshot: %w", err)
	}
	if err := db.Exec(`SELECT pg_stat_clear_snapshot()`).Error; err != nil {
		return "", fmt.Errorf("clearing the statistics snapshot: %w", err)
	}
	if err := db.Raw(horizonSQL, snap).Row().Scan(&horizon); err != nil {
		return "", fmt.Errorf("reading the horizon: %w", err)
	}
	return horizon, nil
}

// PlanForIndexLookups makes the rest of the transaction plan joins as index lookups. The
// planner cannot estimate a created_xid range (xid8 has no statistics it can interpolate), so
// it guesses a fixed share of the table, which in a large database makes hash joins over whole
// tables look cheaper than the few index lookups a span of recent changes needs. Folding in a
// span touches only the rows of the span and the rows they reference, so nested loops over
// indexes are the plan whose cost follows the change, not the history. FoldIn uses it except
// for the first fold (the whole history) and a span of more than smallSpan rows in a table,
// which keep the planner's choice.
func (s *Store) PlanForIndexLookups(ctx context.Context) error {
	err := s.conn(ctx).Exec(`SELECT set_config('enable_seqscan', 'off', true),
		set_config('enable_hashjoin', 'off', true), set_config('enable_mergejoin', 'off', true)`).Error
	if err != nil {
		return fmt.Errorf("planning for index lookups: %w", err)
	}
	return nil
}

// FoldStatements returns the statements that fold a span of changes into view after its first
// refresh, in order, each with $1 the previous horizon and $2 the new one when it reads a span;
// nil for a view that is not incremental.
func FoldStatements(view string) []string {
	var out []string
	for _, q := range foldSQL[view] {
		out = append(out, span{}.expand(q))
	}
	return out
}

// FoldIn runs the refresh statements of view in the transaction: it folds in the rows between
// the view's stored horizon and a new one, stores the new horizon and reports the horizon and
// whether committed rows above it are waiting.
func (s *Store) FoldIn(ctx context.Context, view string) (horizon string, pending bool, err error) {
	stmts, ok := foldSQL[view]
	if !ok {
		return "", false, fmt.Errorf("no incremental definition of %s", view)
	}
	if horizon, err = s.ReadHorizon(ctx); err != nil {
		return "", false, err
	}
	db := s.conn(ctx)
	var prev sql.NullString
	if err := db.Raw(`SELECT processed_xid::text FROM tasker_read_model_state WHERE name = $1`,
		view).Row().Scan(&prev); err != nil {
		return "", false, fmt.Errorf("reading the previous horizon: %w", err)
	}
	sp := span{first: !prev.Valid}
	if !sp.first {
		var large bool
		if err := db.Raw(smallSpanSQL, prev, horizon, smallSpan).Row().Scan(&large); err != nil {
			return "", false, fmt.Errorf("measuring the changes: %w", err)
		}
		if !large {
			if err := s.PlanForIndexLookups(ctx); err != nil {
				return "", false, err
			}
		}
	}
	for _, q := range stmts {
		q = sp.expand(q)
		var args []any
		if strings.Contains(q, "$2") {
			args = []any{prev, horizon}
		}
		if err := db.Exec(q, args...).Error; err != nil {
			return "", false, fmt.Errorf("folding in changes: %w", err)
		}
	}
	if err := db.Exec(`UPDATE tasker_read_model_state SET processed_xid = $2::xid8 WHERE name = $1`,
		view, horizon).Error; err != nil {
		return "", false, fmt.Errorf("storing the horizon: %w", err)
	}
	if err := db.Raw(pendingSQL, horizon).Row().Scan(&pending); err != nil {
		return "", false, fmt.Errorf("looking for changes above the horizon: %w", err)
	}
	return horizon, pending, nil
}

// ReadModelFresh reports whether view is known to be fresh: no process has marked it stale
// since its last refresh, and that refresh's data is as of a time after newestWrite, an SQL
// expression giving the newest write to the tables the view reads. A view without a state row
// is not fresh.
func (s *Store) ReadModelFresh(ctx context.Context, view, newestWrite string) (bool, error) {
	var fresh bool
	err := s.conn(ctx).Raw(`SELECT stale_since IS NULL AND last_data_as_of IS NOT NULL
			AND last_data_as_of > coalesce(`+newestWrite+`, '-infinity')
		FROM tasker_read_model_state WHERE name = $1`, view).Row().Scan(&fresh)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return err == nil && fresh, err
}

// MarkReadModelStale records that a write affecting view was seen now.
func (s *Store) MarkReadModelStale(ctx context.Context, view string) error {
	return s.conn(ctx).Exec(`UPDATE tasker_read_model_state
		SET stale_since = coalesce(stale_since, clock_timestamp()), marked_at = clock_timestamp()
		WHERE name = $1`, view).Error
}

// TryLockReadModel takes the transaction-level advisory lock of view's refresh, shared by
// every process, without waiting; it reports whether it got it.
func (s *Store) TryLockReadModel(ctx context.Context, view string) (bool, error) {
	var locked bool
	err := s.conn(ctx).Raw(`SELECT pg_try_advisory_xact_lock(`+readModelLockSQL+`)`, view).Row().Scan(&locked)
	return locked, err
}

// ReadModelStale reports whether view is marked stale; found is false without a state row.
func (s *Store) ReadModelStale(ctx context.Context, view string) (stale, found bool, err error) {
	err = s.conn(ctx).Raw(`SELECT stale_since IS NOT NULL FROM tasker_read_model_state WHERE name = $1`,
		view).Row().Scan(&stale)
	if errors.Is(err, sql.ErrNoRows) {
		return false, false, nil
	}
	return stale, err == nil, err
}

// SetLocalStatementTimeout sets the statement timeout of the rest of the transaction.
func (s *Store) SetLocalStatementTimeout(ctx context.Context, d time.Duration) error {
	return s.conn(ctx).Exec(`SELECT set_config('statement_timeout', $1, true)`,
		fmt.Sprintf("%d", max(d.Milliseconds(), 1))).Error
}

// Clock returns the database's clock (clock_timestamp(), which moves within a transaction).
func (s *Store) Clock(ctx context.Context) (time.Time, error) {
	var now time.Time
	err := s.conn(ctx).Raw(`SELECT clock_timestamp()`).Row().Scan(&now)
	return now, err
}

// CountReadModel returns the number of rows of view and the database's clock after counting.
func (s *Store) CountReadModel(ctx context.Context, view string) (n int64, at time.Time, err error) {
	err = s.conn(ctx).Raw(`SELECT count(*), clock_timestamp() FROM `+pgx.Identifier{view}.Sanitize()).
		Row().Scan(&n, &at)
	return n, at, err
}

// ReadModelRefresh is one successful refresh of a read model, as RecordRefresh logs it.
type ReadModelRefresh struct {
	View       string
	Trigger    string
	StartedAt  time.Time
	FinishedAt time.Time
	RowCount   int64
	// Pending keeps the view stale: committed changes wait for the next refresh.
	Pending bool
	// By identifies the refreshing process.
	By string
	// KeepSince prunes the view's refresh log of rows started before it.
	KeepSince time.Time
}

// RecordRefresh updates the view's freshness (fresh unless Pending or marked stale after the
// refresh started), logs the refresh and prunes the view's refresh log.
func (s *Store) RecordRefresh(ctx context.Context, r ReadModelRefresh) error {
	db := s.conn(ctx)
	durMs := float64(r.FinishedAt.Sub(r.StartedAt).Microseconds()) / 1000
	err := db.Exec(`UPDATE tasker_read_model_state SET
			stale_since = CASE WHEN $6 THEN coalesce(stale_since, $2)
			                   WHEN marked_at IS NULL OR marked_at < $2 THEN NULL ELSE stale_since END,
			last_refreshed_at = $3, last_data_as_of = $2, last_duration_ms = $4, last_row_count = $5,
			last_attempt_at = $2, last_error = NULL
		WHERE name = $1`, r.View, r.StartedAt, r.FinishedAt, durMs, r.RowCount, r.Pending).Error
	if err != nil {
		return fmt.Errorf("updating freshness: %w", err)
	}
	err = db.Exec(`INSERT INTO tasker_read_model_refreshes
			(view_name, trigger, started_at, finished_at, duration_ms, row_count, refreshed_by)
		VALUES ($1, $2, $3, $4, $5, $6, $7)`,
		r.View, r.Trigger, r.StartedAt, r.FinishedAt, durMs, r.RowCount, r.By).Error
	if err != nil {
		return fmt.Errorf("logging the refresh: %w", err)
	}
	err = db.Exec(`DELETE FROM tasker_read_model_refreshes WHERE view_name = $1 AND started_at < $2`,
		r.View, r.KeepSince).Error
	if err != nil {
		return fmt.Errorf("pruning the refresh log: %w", err)
	}
	return nil
}

// RecordRefreshFailure logs a failed refresh of view and sets its last_error, in one
// statement. The attempt started at started (nil: now, by the database's clock) and finished
// now; both times are returned.
func (s *Store) RecordRefreshFailure(ctx context.Context, view, trigger string, started *time.Time, reason, by string) (startedAt, finishedAt time.Time, err error) {
	err = s.conn(ctx).Raw(`
		WITH t AS (
			SELECT coalesce($3::timestamptz, clock_timestamp()) AS s, clock_timestamp() AS f
		), logged AS (
			INSERT INTO tasker_read_model_refreshes
				(view_name, trigger, started_at, finished_at, duration_ms, error, refreshed_by)
			SELECT $1, $2, least(s, f), f, extract(epoch FROM f - least(s, f)) * 1000, $4, $5 FROM t
			RETURNING started_at, finished_at
		), state AS (
			UPDATE tasker_read_model_state SET last_error = $4, last_attempt_at = (SELECT started_at FROM logged)
			WHERE name = $1
		)
		SELECT started_at, finished_at FROM logged`,
		view, trigger, started, reason, by).Row().Scan(&startedAt, &finishedAt)
	return startedAt, finishedAt, err
}
