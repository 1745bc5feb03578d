package store

import (
	"context"
	"database/sql"
	"strconv"
	"time"

	"gorm.io/gorm"

	"github.com/taskerhq/tasker/internal/database"
)

// Session runs fn with a Store whose statements all run on one connection of the pool, held
// until fn returns, so that session-level state (an advisory lock) lasts as long as fn.
// Transactions begun by fn's Store run on that connection too.
func (s *Store) Session(ctx context.Context, fn func(conn *Store) error) error {
	return s.db.WithContext(ctx).Connection(func(conn *gorm.DB) error {
		return fn(&Store{db: conn})
	})
}

// retentionLockKey is the session advisory lock one retention run holds, shared by every
// process.
const retentionLockKey = `hashtextextended('tasker.retention', 0)`

// TryLockRetention takes the retention run's session advisory lock without waiting and
// reports whether it got it. Call it in a Session, and UnlockRetention before the Session ends.
func (s *Store) TryLockRetention(ctx context.Context) (bool, error) {
	var locked bool
	err := s.conn(ctx).Raw(`SELECT pg_try_advisory_lock(` + retentionLockKey + `)`).Row().Scan(&locked)
	return locked, err
}

// UnlockRetention releases the lock TryLockRetention took.
func (s *Store) UnlockRetention(ctx context.Context) error {
	return s.conn(ctx).Exec(`SELECT pg_advisory_unlock(` + retentionLockKey + `)`).Error
}

// SetLocalLockTimeout bounds, for the rest of the transaction, how long a statement waits for
// a row lock.
func (s *Store) SetLocalLockTimeout(ctx context.Context, d time.Duration) error {
	return s.conn(ctx).Exec(`SELECT set_config('lock_timeout', $1, true)`,
		strconv.FormatInt(max(d.Milliseconds(), 1), 10)).Error
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
//
// The cascades are statements PostgreSQL runs for every deleted row (a task's steps and
// transitions, each step's edges and transitions), planned by the plan cache of the
// connection. The service's connections plan every execution afresh (internal/database), so
// the statement sets, for the rest of its transaction, the settings of a bulk write
// (planBulkWriteSQL: generic plans with sequential and bitmap scans off; settings, read by
// its one result row whatever was deleted): the cascades,
// which run at the end of the statement, are then planned once per connection, an index
// lookup by their key. The statement itself was planned before, as every other. Deleting
// 3,000 one-step tasks took 448-466 ms with the cascades planned per row and 140-144 ms with
// them planned once.
const deleteSQL = `
	WITH settings AS MATERIALIZED (
		SELECT ` + planBulkWriteSQL + ` AS done
	), horizon AS (
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
	SELECT (SELECT done FROM settings) AS planned, (SELECT count(*) FROM del) AS deleted`

// RetentionPolicy is a retention policy as the candidates statement reads it: periods in
// seconds, 0 keeping forever.
type RetentionPolicy struct {
	// Namespaces and Periods: the listed namespaces and their periods, index by index.
	Namespaces database.Array[string]
	Periods    []float64
	// Default is the period of the namespaces not listed; Shortest the shortest period.
	Default, Shortest float64
}

// RetentionCursor is the (created_at, task_id) of the last task a retention run examined.
type RetentionCursor struct {
	At time.Time
	ID int64
}

// LockRetentionCandidates locks and returns, in creation order after cur, up to limit tasks
// finished since before their namespace's period, skipping tasks other transactions lock.
func (s *Store) LockRetentionCandidates(ctx context.Context, p RetentionPolicy, limit int, cur RetentionCursor) ([]RetentionCursor, error) {
	rows, err := s.conn(ctx).Raw(candidatesSQL, p.Namespaces, p.Periods, p.Default, p.Shortest,
		limit, cur.At, cur.ID).Rows()
	return collect(rows, err, func(r *sql.Rows, c *RetentionCursor) error { return r.Scan(&c.ID, &c.At) })
}

// LockStepsOfTasks locks every step of the tasks, in id order. Every transition locks its
// owner's row first: with the tasks and their steps locked, nothing can move them until the
// transaction ends.
func (s *Store) LockStepsOfTasks(ctx context.Context, taskIDs []int64) error {
	return s.conn(ctx).Exec(`SELECT 1 FROM tasker_workflow_steps WHERE task_id = ANY($1::bigint[])
		ORDER BY workflow_step_id FOR UPDATE`, database.Array[int64](taskIDs)).Error
}

// DeleteRetainedTasks deletes the locked tasks that are still finished and whose rows every
// read model of readModels has folded in (see deleteSQL), and returns how many it deleted.
func (s *Store) DeleteRetainedTasks(ctx context.Context, taskIDs []int64, readModels []string) (int64, error) {
	var n int64
	var planned bool
	err := s.conn(ctx).Raw(deleteSQL, database.Array[int64](taskIDs), database.Array[string](readModels)).Row().Scan(&planned, &n)
	return n, err
}
