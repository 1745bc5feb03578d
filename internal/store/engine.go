package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"gorm.io/gorm"

	"github.com/taskerhq/tasker/internal/database"
	"github.com/taskerhq/tasker/internal/models"
)

// EngineTx runs fn in one transaction with the engine's session settings
// (database.EngineSettings):
//   - jit off: the engine's statements touch a few rows each, but on tables whose statistics
//     lag behind their growth the planner's cost estimates can pass jit_above_cost, and
//     compiling a statement then takes hundreds of milliseconds for a millisecond of work;
//   - enable_seqscan and enable_bitmapscan off: every statement the engine runs reads a few
//     rows through an index, in index order where it has a LIMIT (the claim walks the
//     claimable steps oldest first and stops after the batch); a sequential scan of a growing
//     table, or a bitmap scan that reads every candidate and sorts them, is never the right
//     plan for it. But when the tables were analysed while (nearly) empty, the planner
//     believes them small and costs those plans below the index walk: throughput fell from
//     about 900 to 120 steps/s here (BenchmarkThroughput, stats=stale). The settings only
//     weigh against those scans: a table with no usable index is still read, so no statement
//     fails for them (TestHotStatementsKeepIndexPlansWhateverTheStatistics);
//   - enable_mergejoin and enable_hashjoin off, for the same reason: the engine joins the few
//     rows it was given (an array, a JSON list of outcomes) to a growing table by its key.
//     Analysed statistics estimate such a list at 100 rows, and the planner then merge-joined
//     the attempts' outcomes with the steps' primary key read from its first entry: every
//     batch read every step older than its own (4,000 index entries for 32 steps half-way
//     through a drain of 10,000, the whole table in a database that has run for a while), and
//     recording cost 1.6 ms instead of 0.4 (pg_stat_statements). A hash join would read the
//     whole table too. With both off, each given row is looked up by its key;
//   - synchronous_commit off when asyncCommit is set (see orchestration.Config.AsyncCommit);
//   - plan_cache_mode force_generic_plan: the service's connections plan every execution
//     afresh (force_custom_plan, see internal/database) so that no plan made for empty tables
//     is kept. The engine's statements run only inside these transactions, so the generic plan
//     PostgreSQL caches for each of them is made with the scans above turned off and keeps the
//     index walk whatever the statistics. Planning the claim afresh for every batch cost about
//     a third of the engine's throughput (BenchmarkThroughput, engines=1: 1,376 against 2,020
//     steps/s). Under plan_cache_mode auto, six statements of every batch (the settling read,
//     the locks of the held claims and of the tasks to start, the current states of steps and
//     tasks, the tasks' completion) were still planned on every execution: their custom plans,
//     costed for the exact arrays given, always looked cheaper than the generic one, which is
//     the same index plan, while batches were small. That planning was 0.6-0.9 ms a batch
//     (pg_stat_statements, 4,000 one-step tasks at 4 workers: 865 ms of planning against 15 ms
//     forced generic, the same buffer hits per execution); with batches of 32, PostgreSQL
//     mostly settled on the generic plans by itself (91 plans over 10,000 steps against 27).
//
// Every statement of the engine therefore keeps its index plan without being planned again.
//
// Where the database role may, the transaction also runs without foreign-key checks
// (tasker_trust_references, migration 00051): it writes transitions only of tasks and steps it
// holds locked, and changes no key, so every reference it writes is true; it never deletes.
//
// With an engine pool (WithEngine), the transaction runs on it, whose connections carry the
// settings from connect time: no statement is spent on them. The pool's AsyncCommit must be
// asyncCommit (an error otherwise, before anything runs). Without one, the transaction runs
// on the Store's handle and sets them, for itself only, in one statement before fn's.
func (s *Store) EngineTx(ctx context.Context, asyncCommit bool, fn func(tx *Store) error) error {
	if p := s.engine; p != nil {
		if p.AsyncCommit != asyncCommit {
			return fmt.Errorf("engine transaction: asynchronous commit %v, but the engine pool was opened with %v",
				asyncCommit, p.AsyncCommit)
		}
		return p.DB.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
			return runNotifying(ctx, &Store{db: tx}, fn)
		})
	}
	settings := database.EngineSettings(asyncCommit)
	calls := make([]string, 0, len(settings))
	args := make([]any, 0, 2*len(settings))
	for _, name := range slices.Sorted(maps.Keys(settings)) {
		calls = append(calls, "set_config(?, ?, true)")
		args = append(args, name, settings[name])
	}
	calls = append(calls, "tasker_trust_references(true)") // as the engine pool's connections
	setAll := "SELECT " + strings.Join(calls, ", ")
	return s.Tx(ctx, func(tx *Store) error {
		if err := tx.conn(ctx).Exec(setAll, args...).Error; err != nil {
			return fmt.Errorf("setting the engine's transaction settings: %w", err)
		}
		return runNotifying(ctx, tx, fn)
	})
}

// EngineStatement runs fn, which runs exactly one statement that notifies the transitions it
// writes itself (ClaimAndStart, RecordAndSettle), as a transaction of its own: with an
// engine pool (WithEngine), the statement runs outside BEGIN and COMMIT, and PostgreSQL
// commits it when it ends, in the round trip that ran it. The statement is as atomic as in
// EngineTx (it commits whole or not at all, with the same settings); what it saves is the
// round trips of BEGIN and COMMIT, two of the three of a claim beside a recording, during
// which the claimed steps wait to start, and two of the recording's. Without an engine pool
// it is EngineTx (whose transaction sets the engine's settings first).
//
// A statement that committed may still report an error (the connection lost before its
// answer, a row that fails to scan): as with a COMMIT whose answer is lost, its claims are
// then left to their leases. Transitions written through the Store's own writers (which
// note them for the transaction to notify) are refused after the fact: fn must not write any.
func (s *Store) EngineStatement(ctx context.Context, asyncCommit bool, fn func(st *Store) error) error {
	p := s.engine
	if p == nil {
		return s.EngineTx(ctx, asyncCommit, fn)
	}
	if p.AsyncCommit != asyncCommit {
		return fmt.Errorf("engine statement: asynchronous commit %v, but the engine pool was opened with %v",
			asyncCommit, p.AsyncCommit)
	}
	st := &Store{db: p.DB, notes: &transitionNotes{}}
	if err := fn(st); err != nil {
		return err
	}
	if n := len(st.notes.steps) + len(st.notes.tasks); n > 0 {
		return fmt.Errorf("engine statement: %d transitions were written that no statement notified", n)
	}
	return nil
}

// runNotifying runs fn on tx, an engine transaction, noting the transitions it writes, and
// sends their notifications once fn has succeeded (see notify.go).
func runNotifying(ctx context.Context, tx *Store, fn func(tx *Store) error) error {
	tx.notes = &transitionNotes{}
	if err := fn(tx); err != nil {
		return err
	}
	return tx.notes.send(ctx, tx)
}

// ClaimedStep is a step a claim marked in_process.
type ClaimedStep struct {
	StepID  int64
	TaskID  int64
	Token   string
	Attempt int // the 1-based number of the attempt about to run
	TaskNew bool
	// CurrentState and CurrentSortKey are the step's current transition in the claim's
	// snapshot, from which the claim started it: its state before the start (pending when it
	// had none) and the last sort key of its history before the start (0 when it had none).
	CurrentState   models.State
	CurrentSortKey int
	Claimed        time.Time
	Input          StepInput
	// ReadyFor is how long the step had been ready when it was claimed (see
	// readySecondsSQL), when the claim was asked for it (ClaimAndStart's readyFor), else 0.
	ReadyFor time.Duration
}

// runnableCandidate is the condition, on a step row c, of the partial indexes the claim and
// the next-retry query walk (migrations 00050 and 00070): unprocessed, unclaimed, of an active
// task, waiting for no parent (parents_left), and retry-eligible. Both statements repeat it
// word for word so that the planner can prove that the index holds their candidates.
const runnableCandidate = `NOT c.processed AND NOT c.in_process AND NOT c.task_inactive AND c.parents_left = 0
      AND (coalesce(c.attempts, 0) = 0 OR (c.retryable AND coalesce(c.attempts, 0) < coalesce(c.retry_limit, 3)))`

// claimBaseSQL claims up to @n ready steps in one statement (claimSQL, claimReadyForSQL).
//
//   - ready: readiness comes from tasker_step_readiness_statuses (the same rule the read side
//     shows), restricted to candidate steps that are neither processed nor claimed, of tasks
//     that are pending or in_progress. The candidates are walked in id order on the partial
//     index tasker_workflow_steps_runnable_idx, and the view is read per candidate (a fenced
//     LATERAL: a few index probes each), so the oldest ready steps go first, the walk stops
//     after @n ready ones, and finished steps are never read. The index holds only the steps
//     that can still become ready (migration 00050): unprocessed, unclaimed, retry-eligible
//     (the view's own rule, so no ready step is left out), of tasks whose state is pending or
//     in_progress (task_inactive, kept by a trigger on the task's transitions). The steps that
//     can never run again (of failed, cancelled or finished tasks, or with their retries
//     exhausted) are not in it, so the walk's cost does not grow with them. The task's state
//     is still read per candidate: the flag only narrows the walk, and the state read in the
//     claim's snapshot decides. Before the view, each candidate's parents are probed for one
//     that is not complete or resolved_manually (the view's own dependency rule, so the
//     filter removes only steps the view would refuse): a scalar subquery, evaluated at the
//     index scan, that stops at the first such parent. Most candidates a walk passes are
//     steps whose parents have not run (in a queue of five-step diamonds, 4 of every 5
//     candidates past the tasks in flight), and for them the full view row (own state,
//     retries, backoff, parent counts) is no longer computed: 17 % fewer buffers a claim.
//     The task's state is a fenced subquery (OFFSET 0): inlined, it was read twice per
//     candidate, once for the filter and once for the output.
//   - locked: up to @n of them are locked FOR UPDATE SKIP LOCKED, so concurrent claimers (in
//     this process or another) never wait for each other and never take the same row. The
//     walk is pulled only as far as the lock needs, and may find up to 8·@n + 64 ready steps:
//     the oldest ready steps are also what every other engine is claiming, so the walk must be
//     able to pass the rows they hold (with 2·@n + 8, four engines of 16 workers found their
//     lookahead taken by each other and claimed 3.7 steps a claim: 10,000 one-step tasks
//     drained at 1,320 steps/s by two processes against 2,258-2,498 with the larger bound).
//     Each candidate's row is locked where the walk found it (its ctid, the version the
//     snapshot sees: one heap page, where a probe of the primary key read three pages more),
//     in the walk's order. A row another transaction changed and committed since the
//     snapshot is not there any more: PostgreSQL's re-check of the lock finds the newest
//     version at another ctid and passes the row over, as it passes over a row another claimer
//     holds. So a step claimed, finished, recovered or retried meanwhile is never started from
//     a stale readiness; it is considered again by the next claim. The flags and attempts are
//     checked again on the locked version all the same. The update finds the locked rows by
//     their key.
//   - the update marks the steps in_process with this worker, a fresh claim token and a lease,
//     and returns what the worker reads before running each step (StepInput): its name and
//     inputs, its task's context, its parents' results. The claim holds the steps' row locks
//     until it commits, and a started step's parents are complete or resolved_manually (final
//     states), so these are the inputs of the attempt about to run. It also returns each
//     step's current transition as its snapshot saw it (state and last sort key).
//   - started: the claimed steps start in the same statement (claimStartSQL), from those
//     current transitions, without reading them again: each moves to in_progress (a step in
//     error through pending), and their pending tasks to in_progress (see
//     tasker_engine_start, migration 00066). Only steps in the states those moves
//     leave (pending, error) are locked; readiness allows no other.
const claimBaseSQL = `
WITH ready AS (
    SELECT c.workflow_step_id, c.ctid, r.attempts, r.current_state, ts.task_state
    FROM tasker_workflow_steps c
    CROSS JOIN LATERAL (
        SELECT coalesce((SELECT tt.to_state FROM tasker_task_transitions tt
                         WHERE tt.task_id = c.task_id AND tt.most_recent), 'pending') AS task_state
        OFFSET 0
    ) ts
    CROSS JOIN LATERAL (
        SELECT rs.attempts, rs.current_state, rs.ready_for_execution
        FROM tasker_step_readiness_statuses rs
        WHERE rs.workflow_step_id = c.workflow_step_id
        LIMIT 1
    ) r
    WHERE ` + runnableCandidate + `
      AND ts.task_state IN ('pending', 'in_progress')
      AND coalesce((SELECT false FROM tasker_workflow_step_edges e
                    WHERE e.to_step_id = c.workflow_step_id
                      AND coalesce((SELECT pt.to_state FROM tasker_workflow_step_transitions pt
                                    WHERE pt.workflow_step_id = e.from_step_id AND pt.most_recent), 'pending')
                          NOT IN ('complete', 'resolved_manually')
                    LIMIT 1), true)
      AND r.ready_for_execution
    ORDER BY c.workflow_step_id
    LIMIT 8 * @n + 64
), locked AS (
    SELECT ws.workflow_step_id, ready.task_state, ready.current_state
    FROM ready
    JOIN tasker_workflow_steps ws ON ws.ctid = ready.ctid
    WHERE NOT ws.processed AND NOT ws.in_process AND coalesce(ws.attempts, 0) = ready.attempts
      AND ready.current_state IN ('pending', 'error')
    ORDER BY ready.workflow_step_id
    LIMIT @n
    FOR UPDATE OF ws SKIP LOCKED
), taken AS (
UPDATE tasker_workflow_steps ws
SET in_process = true,
    claimed_by = @worker,
    claim_token = gen_random_uuid(),
    claim_expires_at = now() + @lease_ms * interval '1 millisecond',
    updated_at = now()
FROM locked, tasker_tasks t, tasker_named_steps ns
WHERE ws.workflow_step_id = locked.workflow_step_id
  AND t.task_id = ws.task_id AND ns.named_step_id = ws.named_step_id
RETURNING ws.workflow_step_id AS step_id, ws.task_id, ws.claim_token::text AS token,
          coalesce(ws.attempts, 0) + 1 AS attempt, locked.task_state = 'pending' AS task_new,
          locked.current_state,
          (SELECT coalesce(max(st.sort_key), 0) FROM tasker_workflow_step_transitions st
           WHERE st.workflow_step_id = ws.workflow_step_id) AS current_sort_key,
          now() AS claimed,
          t.named_task_id, ns.name, ws.inputs, t.context, ` + parentResults + ` AS parents, `

// claimStartSQL ends claimBaseSQL after its last column (ready_seconds): the claimed steps
// are started by tasker_engine_start (migration 00066), called once with the claimed rows in
// step id order (from_state null for a step with no transition; retry_metadata for a step in
// error; metadata with the attempt's number), and the claimed rows are returned in step id
// order. The call aggregates every claimed row, so it runs after the claim's update, and only
// when the claim took a step.
const claimStartSQL = ` AS ready_seconds
), started AS MATERIALIZED (
    SELECT tasker_engine_start(
               jsonb_agg(jsonb_build_object(
                   'step_id', c.step_id, 'task_id', c.task_id, 'task_new', c.task_new,
                   'from_state', CASE WHEN c.current_sort_key > 0 THEN c.current_state END,
                   'sort_key', c.current_sort_key,
                   'retry_metadata', CASE WHEN c.current_state = 'error' THEN CAST(@retry_metadata AS jsonb) END,
                   'metadata', CAST(@step_metadata AS jsonb) || jsonb_build_object('attempt', c.attempt))
                 ORDER BY c.step_id),
               CAST(@task_metadata AS jsonb))
    FROM taken c
    HAVING count(*) > 0
)
SELECT c.* FROM taken c CROSS JOIN started ORDER BY c.step_id`

// claimSQL is claimBaseSQL without the time each step had been ready.
const claimSQL = claimBaseSQL + `0::float8` + claimStartSQL

// claimReadyForSQL is claimBaseSQL with the time each step had been ready (readySecondsSQL).
const claimReadyForSQL = claimBaseSQL + readySecondsSQL + claimStartSQL

// readySecondsSQL is, in the claim's RETURNING (ws the claimed step's row, which the claim
// changes only in its claim columns, t its task), how long the step had been ready when the
// claim's transaction began, in seconds: from the latest of its task's creation, its last
// parent's completion (its parents are complete or resolved_manually, final states), the end
// of the implicit backoff after its last failure, and the end of the delay it asked for.
// Read in the claim itself, it costs an index probe or two per claimed step, where a
// statement of its own (as it was) cost every claim of an engine with metrics a round trip
// before its steps could start. Each parent's current transition is a subquery by key, not a
// join: the claim is a prepared statement whose generic plan a connection keeps, and a join
// planned while the transitions were few (a fresh database's statistics) was a scan of every
// current transition for each claimed step once they were many (a drain of 20,000 steps
// slowed tenfold, 0.4 s a claim).
const readySecondsSQL = `greatest(0, extract(epoch FROM now() - greatest(
    t.created_at,
    (SELECT max((SELECT pt.created_at FROM tasker_workflow_step_transitions pt
                 WHERE pt.workflow_step_id = e.from_step_id AND pt.most_recent))
     FROM tasker_workflow_step_edges e
     WHERE e.to_step_id = ws.workflow_step_id),
    (SELECT et.created_at + least(power(2, coalesce(ws.attempts, 0)), 30) * interval '1 second'
     FROM tasker_workflow_step_transitions et
     WHERE et.workflow_step_id = ws.workflow_step_id AND et.to_state = 'error'
     ORDER BY et.sort_key DESC LIMIT 1),
    ws.last_attempted_at + ws.backoff_request_seconds * interval '1 second'
)))::float8`

// StartMetadata is the metadata of the moves that start a claimed step and its task,
// encoded by the state machine (statemachine.Metadata), which checked each move against the
// transition table: Step for a step's move to in_progress (the claim adds the attempt's
// number, "attempt"), Retry for the move of a step in error to pending before it, Task for a
// pending task's move to in_progress.
type StartMetadata struct {
	Step, Retry, Task json.RawMessage
}

// ClaimRequest is what a claim is asked: up to N ready steps for Worker, with a lease of
// Lease, each step's ReadyFor read or not, started with Start's metadata.
type ClaimRequest struct {
	N        int
	Worker   string
	Lease    time.Duration
	ReadyFor bool
	Start    StartMetadata
}

// ClaimAndStart claims up to r.N ready steps for r.Worker, with a lease of r.Lease, and
// starts them, in one statement (see claimBaseSQL): the oldest ready steps that no one else
// holds are marked in_process with a fresh claim token each, moved to in_progress with
// r.Start's metadata, their pending tasks too, and returned in step id order. With
// r.ReadyFor, each step's ReadyFor is read too. A transition committed between the claim's
// snapshot and its lock took the sort key a start writes: the statement then fails on the
// history's unique sort keys (gorm.ErrDuplicatedKey) and writes nothing.
func (s *Store) ClaimAndStart(ctx context.Context, r ClaimRequest) ([]ClaimedStep, error) {
	c := newClaimScan(r)
	rows, err := queryRows(ctx, s, c.dest, c.query, c.args)
	c.finish(rows)
	return rows, err
}

// claimScan is one claim statement (see ClaimAndStart): its text, its named arguments, and
// what its rows are scanned into.
type claimScan struct {
	query   string
	args    map[string]any
	states  []sql.NullString
	seconds []float64
}

func newClaimScan(r ClaimRequest) *claimScan {
	q := claimSQL
	if r.ReadyFor {
		q = claimReadyForSQL
	}
	return &claimScan{query: q, args: map[string]any{"n": r.N, "worker": r.Worker, "lease_ms": r.Lease.Milliseconds(),
		"step_metadata": string(r.Start.Step), "retry_metadata": string(r.Start.Retry), "task_metadata": string(r.Start.Task)}}
}

// dest returns where the columns of the claim's next row go, r and the claimScan's own.
func (c *claimScan) dest(r *ClaimedStep) []any {
	c.states = append(c.states, sql.NullString{})
	c.seconds = append(c.seconds, 0)
	return []any{&r.StepID, &r.TaskID, &r.Token, &r.Attempt, &r.TaskNew, &c.states[len(c.states)-1], &r.CurrentSortKey, &r.Claimed,
		&r.Input.NamedTaskID, &r.Input.Name, &r.Input.Inputs, &r.Input.Context, &r.Input.Parents,
		&c.seconds[len(c.seconds)-1]}
}

// finish fills in what dest scanned into the claimScan's own columns.
func (c *claimScan) finish(rows []ClaimedStep) {
	for i := range rows {
		rows[i].CurrentState = models.State(c.states[i].String)
		rows[i].ReadyFor = time.Duration(c.seconds[i] * float64(time.Second))
	}
}

// LockTasksSkipLocked takes the row locks of the tasks among ids that no other transaction
// holds, in id order, and returns them, in id order, each with its current transition read
// after the locks were taken (migration 00064): one round trip where a lock statement and
// OwnerStates took two.
func (s *Store) LockTasksSkipLocked(ctx context.Context, ids []int64) ([]OwnerState, error) {
	return queryRows(ctx, s, func(r *OwnerState) []any { return []any{&r.ID, &r.State, &r.SortKey} },
		`SELECT task_id, to_state, sort_key FROM tasker_lock_tasks_skip_locked(?::bigint[])`, database.Array[int64](ids))
}

// LockTask takes one task's row lock (the lock the state machine takes) and reports whether
// the task exists.
func (s *Store) LockTask(ctx context.Context, taskID int64) (bool, error) {
	var ids []int64
	err := s.conn(ctx).Raw(`SELECT task_id FROM tasker_tasks WHERE task_id = ? FOR NO KEY UPDATE`, taskID).Scan(&ids).Error
	return len(ids) > 0, err
}

// ClearClaim clears any claim on a step.
func (s *Store) ClearClaim(ctx context.Context, stepID int64) error {
	return s.ClearClaims(ctx, []int64{stepID})
}

// ClearClaims clears any claim on the steps of ids, in one statement.
func (s *Store) ClearClaims(ctx context.Context, ids []int64) error {
	return s.conn(ctx).Exec(`UPDATE tasker_workflow_steps
		SET in_process = false, claimed_by = NULL, claim_token = NULL, claim_expires_at = NULL, updated_at = now()
		WHERE workflow_step_id = ANY(?::bigint[]) AND (in_process OR claim_token IS NOT NULL)`, database.Array[int64](ids)).Error
}

// OthersClaiming reports whether an engine other than worker holds a live claim: a step in
// process, claimed by another worker id, whose lease has not expired (an engine renews its
// running steps' leases, so a dead engine's claims stop counting when they expire). It reads
// the steps in process through their partial index (tasker_workflow_steps_claimed_idx) and
// stops at the first other engine's.
func (s *Store) OthersClaiming(ctx context.Context, worker string) (bool, error) {
	var others bool
	err := s.conn(ctx).Raw(`SELECT EXISTS (SELECT 1 FROM tasker_workflow_steps
		WHERE NOT processed AND in_process AND claimed_by IS DISTINCT FROM ? AND claim_expires_at > now())`, worker).
		Row().Scan(&others)
	return others, err
}

// nextRetrySQL finds the earliest next_retry_at, still in the future, among steps that have
// been attempted or asked for a delay, are neither processed nor claimed, could run again, and
// belong to pending or in_progress tasks. The candidates come from the partial index
// tasker_workflow_steps_retry_waiting_idx, which holds exactly those steps (of active tasks,
// retry-eligible: see claimSQL and migration 00050), and the readiness view
// is read per candidate (a fenced LATERAL, like the claim's), so the statement reads the
// steps waiting for a retry and nothing else, whatever the planner believes about the tables.
const nextRetrySQL = `
SELECT min(r.next_retry_at)
FROM tasker_workflow_steps c
CROSS JOIN LATERAL (
    SELECT rs.next_retry_at, rs.retry_eligible, rs.dependencies_satisfied
    FROM tasker_step_readiness_statuses rs
    WHERE rs.workflow_step_id = c.workflow_step_id
    LIMIT 1
) r
WHERE ` + runnableCandidate + `
  AND (coalesce(c.attempts, 0) > 0 OR c.backoff_request_seconds IS NOT NULL)
  AND coalesce((SELECT tt.to_state FROM tasker_task_transitions tt
                WHERE tt.task_id = c.task_id AND tt.most_recent), 'pending') IN ('pending', 'in_progress')
  AND r.retry_eligible AND r.dependencies_satisfied
  AND r.next_retry_at > now()`

// NextRetry returns the earliest time a waiting retry becomes due (nil when none waits; see
// nextRetrySQL) and the database's now.
func (s *Store) NextRetry(ctx context.Context) (at *time.Time, now time.Time, err error) {
	var row struct {
		At  *time.Time
		Now time.Time
	}
	err = s.conn(ctx).Raw(`SELECT (` + nextRetrySQL + `) AS at, now() AS now`).Scan(&row).Error
	return row.At, row.Now, err
}

// StepOutcome is what one finished attempt writes to its step row: success with its results,
// or a failure (its description in Results), with the delay it asked for and whether it is
// permanent. Token is the claim the attempt ran under.
type StepOutcome struct {
	StepID    int64           `json:"step_id"`
	Token     string          `json:"token"`
	Success   bool            `json:"success"`
	Results   json.RawMessage `json:"results"`
	Backoff   *int            `json:"backoff"`
	Permanent bool            `json:"permanent"`
}

// RecordHeldAttempts, in one statement (tasker_record_held_attempts, migrations 00066 and
// 00068), takes the row locks of the existing tasks among taskIDs (in id order, so that
// transactions locking several tasks never deadlock), then those of the steps of outcomes
// whose claims are still held with the outcomes' tokens (in id order, each found by key), and
// writes those outcomes to their rows:
// attempts + 1, last_attempted_at, the claim cleared, and either processed with the results,
// or the failure in results, the requested delay, and retryable cleared for a permanent
// failure. It returns the tokens of the claims it found held, whose outcomes it wrote; an
// outcome of a claim that no longer holds its step (a step's stale token, given beside its
// current one) is not written. The engine's recording call (RecordAndSettle) starts with the
// same function.
func (s *Store) RecordHeldAttempts(ctx context.Context, taskIDs []int64, outcomes []StepOutcome) ([]string, error) {
	payload, err := json.Marshal(outcomes)
	if err != nil {
		return nil, fmt.Errorf("encoding attempt outcomes: %w", err)
	}
	return queryRows(ctx, s, func(t *string) []any { return []any{t} },
		`SELECT token FROM tasker_record_held_attempts(?::bigint[], ?::jsonb)`, database.Array[int64](taskIDs), string(payload))
}

// HeldOutcome is the outcome of an attempt with the move of its step off in_progress: the
// state it moves to and the transition's metadata, encoded by the state machine
// (statemachine.Metadata), which checked the move.
type HeldOutcome struct {
	StepOutcome
	ToState  string          `json:"to_state"`
	Metadata json.RawMessage `json:"metadata"`
}

// RecordAndSettle records finished attempts and settles their tasks in one call
// (tasker_engine_record, migrations 00066, 00068 and 00069): it locks the tasks of taskIDs,
// then the steps whose claims are still held with the outcomes' tokens, writes those outcomes
// to the step rows (as RecordHeldAttempts does), moves each recorded step from in_progress as
// its outcome says, settles the recorded steps' tasks (SEMANTICS §7; a task that cannot settle
// yet, having a step running or ready, is not counted) and notifies the transitions. It
// returns the tokens of the claims it found held, whose outcomes it wrote; a recorded step
// that is not in_progress fails the call, which then writes nothing.
//
// busy lists tasks of the batch of which the caller holds claims of other steps, each with
// one such step: while that step is in process its task has a step running and cannot
// settle, so the call does not count the task's steps (a task of thousands of steps is
// recorded in many batches); a given step no longer in process is ignored.
func (s *Store) RecordAndSettle(ctx context.Context, taskIDs []int64, outcomes []HeldOutcome, busy Busy) ([]string, error) {
	payload, err := json.Marshal(outcomes)
	if err != nil {
		return nil, fmt.Errorf("encoding attempt outcomes: %w", err)
	}
	return queryRows(ctx, s, func(t *string) []any { return []any{t} }, recordSQL, database.Array[int64](taskIDs), string(payload),
		database.Array[int64](busy.Tasks), database.Array[int64](busy.Steps))
}

// Busy is what RecordAndSettle is told of the tasks of its batch that still have a step in
// process: Steps[i] is a step of Tasks[i] whose claim the caller holds.
type Busy struct {
	Tasks, Steps []int64
}

// TaskSettling is what decides whether a task may be settled (see TasksSettling): its current
// transition (State nil: none, the task is pending), and how many steps it has, and how many
// of them are running, unfinished, and permanently blocked.
type TaskSettling struct {
	TaskID                              int64
	Current                             OwnerState
	Total, Running, Unfinished, Blocked int
}

// State is the task's current state.
func (t TaskSettling) State() models.State {
	if t.Current.State == nil {
		return models.StatePending
	}
	return models.State(*t.Current.State)
}

// TasksSettling reads, in one statement, per task of ids, what decides whether it may be settled
// (tasker_tasks_settling, migration 00066, which the engine's recording call also reads), so
// that the execution context (which computes the readiness of every step) is read only for
// tasks that may be: a task moves only when its execution status is all_complete or
// blocked_by_failures; both need no step running (in_progress by state or claim),
// all_complete needs every step complete or resolved_manually, and blocked_by_failures a
// permanently blocked step (cancelled, or pending or in error and not retry-eligible). Each
// step's state is an index probe, so the cost follows the tasks' steps, whatever the table
// statistics say. The task's current transition (state, and sort key: the last of its
// history) comes with them, so that a caller holding the task's lock moves it without reading
// it again.
func (s *Store) TasksSettling(ctx context.Context, ids []int64) ([]TaskSettling, error) {
	rows, err := queryRows(ctx, s, func(r *TaskSettling) []any {
		return []any{&r.TaskID, &r.Current.State, &r.Current.SortKey, &r.Total, &r.Running, &r.Unfinished, &r.Blocked}
	}, `SELECT * FROM tasker_tasks_settling(?::bigint[])`, database.Array[int64](ids))
	for i := range rows {
		rows[i].Current.ID = rows[i].TaskID
	}
	return rows, err
}

// ExecutionContexts reads the execution contexts (the live view) of tasks, in the store's
// transaction when it runs in one.
func (s *Store) ExecutionContexts(ctx context.Context, taskIDs []int64) ([]models.TaskExecutionContext, error) {
	return models.ExecutionContextsByTaskIDs(ctx, s.conn(ctx), taskIDs)
}

// Claim names a claim on a step: the step, its task and the claim's token.
type Claim struct {
	StepID int64
	TaskID int64
	Token  string
}

// ExpiredClaims lists up to limit claims whose lease has run out, the oldest first. It walks
// the index of the unfinished claimed steps (tasker_workflow_steps_claimed_idx: as many
// entries as steps running now, whatever the table's size) and sorts the expired ones; a step
// is never processed and claimed at once (migration 00062).
func (s *Store) ExpiredClaims(ctx context.Context, limit int) ([]Claim, error) {
	return queryRows(ctx, s, func(c *Claim) []any { return []any{&c.StepID, &c.TaskID, &c.Token} }, expiredClaimsSQL, limit)
}

const expiredClaimsSQL = `
SELECT workflow_step_id, task_id, claim_token::text
FROM tasker_workflow_steps
WHERE NOT processed AND in_process AND claim_expires_at < now() AND claim_token IS NOT NULL
ORDER BY claim_expires_at
LIMIT ?`

// HeldClaim is a claim LockHeldClaims found still held and locked: its step, and the
// claim's worker, if recorded.
type HeldClaim struct {
	StepID    int64
	ClaimedBy *string
}

// LockHeldClaims locks, in one statement and in step id order, the steps of claims that are
// still held with their tokens (and, with expired, whose leases have run out), skipping the
// steps whose rows another transaction holds, and returns them in step id order. A claim
// taken back or released since it was read, or renewed (with expired), is not returned.
func (s *Store) LockHeldClaims(ctx context.Context, claims []Claim, expired bool) ([]HeldClaim, error) {
	ids := make([]int64, len(claims))
	tokens := make([]string, len(claims))
	for i, c := range claims {
		ids[i], tokens[i] = c.StepID, c.Token
	}
	return queryRows(ctx, s, func(h *HeldClaim) []any { return []any{&h.StepID, &h.ClaimedBy} }, `
		SELECT ws.workflow_step_id, ws.claimed_by
		FROM tasker_workflow_steps ws
		JOIN unnest(?::bigint[], ?::uuid[]) AS c(step_id, token)
		  ON ws.workflow_step_id = c.step_id AND ws.claim_token = c.token
		WHERE ws.in_process AND (NOT ?::boolean OR ws.claim_expires_at < now())
		ORDER BY ws.workflow_step_id
		FOR UPDATE OF ws SKIP LOCKED`, database.Array[int64](ids), database.Array[string](tokens), expired)
}

// RecordLostAttempts counts, in one statement, a lost attempt on each step of ids (attempts
// + 1, last_attempted_at, results) and clears their claims.
func (s *Store) RecordLostAttempts(ctx context.Context, ids []int64, results []byte) error {
	return s.conn(ctx).Exec(`UPDATE tasker_workflow_steps
			SET attempts = coalesce(attempts, 0) + 1, last_attempted_at = now(), results = ?::jsonb,
			    in_process = false, claimed_by = NULL, claim_token = NULL, claim_expires_at = NULL,
			    updated_at = now()
			WHERE workflow_step_id = ANY(?::bigint[])`, string(results), database.Array[int64](ids)).Error
}

// StepInput is what a worker reads before running a claimed step (the claim returns it): its
// name, inputs, its task's context and its parents' results by name.
type StepInput struct {
	NamedTaskID int64
	Name        string
	Inputs      []byte
	Context     []byte
	Parents     []byte
}

// parentResults is, for a step ws, its parents' results by name (an empty object for a root),
// the parents input a handler receives.
const parentResults = `coalesce((SELECT jsonb_object_agg(pns.name, coalesce(p.results, 'null'::jsonb))
                 FROM tasker_workflow_step_edges e
                 JOIN tasker_workflow_steps p ON p.workflow_step_id = e.from_step_id
                 JOIN tasker_named_steps pns ON pns.named_step_id = p.named_step_id
                 WHERE e.to_step_id = ws.workflow_step_id), '{}'::jsonb)`

// ClaimsHeld returns, of the steps stepIDs claimed with the token at the same index of
// tokens, those whose claims are still held with it, in one statement.
func (s *Store) ClaimsHeld(ctx context.Context, stepIDs []int64, tokens []string) ([]int64, error) {
	return queryRows(ctx, s, int64Column, `
		SELECT ws.workflow_step_id
		FROM unnest(?::bigint[], ?::uuid[]) AS c(step_id, token)
		JOIN tasker_workflow_steps ws ON ws.workflow_step_id = c.step_id
		WHERE ws.in_process AND ws.claim_token = c.token`,
		database.Array[int64](stepIDs), database.Array[string](tokens))
}

// RenewLeases extends to lease from now the leases of the steps stepIDs whose claims are
// still held with the token at the same index of tokens, in one statement, and returns those
// steps. The rows are locked in id order, the engine's order for steps (see
// RecordHeldAttempts), so a renewal never deadlocks with a recording.
func (s *Store) RenewLeases(ctx context.Context, stepIDs []int64, tokens []string, lease time.Duration) ([]int64, error) {
	return queryRows(ctx, s, int64Column, `
		WITH held AS (
		    SELECT ws.workflow_step_id
		    FROM tasker_workflow_steps ws
		    JOIN unnest(?::bigint[], ?::uuid[]) AS c(step_id, token)
		      ON ws.workflow_step_id = c.step_id AND ws.claim_token = c.token
		    WHERE ws.in_process
		    ORDER BY ws.workflow_step_id
		    FOR UPDATE OF ws
		)
		UPDATE tasker_workflow_steps ws
		SET claim_expires_at = now() + ? * interval '1 millisecond'
		FROM held
		WHERE ws.workflow_step_id = held.workflow_step_id
		RETURNING ws.workflow_step_id`,
		database.Array[int64](stepIDs), database.Array[string](tokens), lease.Milliseconds())
}

// NamedTaskConfiguration reads the configuration a named task was registered with (nil when
// there is none).
func (s *Store) NamedTaskConfiguration(ctx context.Context, namedTaskID int64) ([]byte, error) {
	var row struct{ Configuration []byte }
	err := s.conn(ctx).Raw(`SELECT configuration FROM tasker_named_tasks WHERE named_task_id = ?`,
		namedTaskID).Scan(&row).Error
	return row.Configuration, err
}
