package orchestration

import (
	"context"
	"fmt"
	"slices"
	"time"

	"go.opentelemetry.io/otel/trace"
	"gorm.io/gorm"

	"github.com/taskerhq/tasker/internal/models"
	sm "github.com/taskerhq/tasker/internal/statemachine"
)

// claimedStep is a step this engine claimed and moved to in_progress.
type claimedStep struct {
	StepID       int64
	TaskID       int64
	Token        string
	Attempt      int // the 1-based number of the attempt about to run
	TaskNew      bool
	CurrentState models.State // in the claim's snapshot; the move re-reads it under the lock
	Claimed      time.Time
	trace        trace.SpanContext // the claim's span (see trace.go)
}

// claimSQL claims up to @n ready steps in one statement.
//
//   - ready: readiness comes from tasker_step_readiness_statuses (the same rule the read side
//     shows), restricted to candidate steps that are neither processed nor claimed, of tasks
//     that are pending or in_progress. The candidates are walked in id order on the partial
//     index tasker_workflow_steps_claimable_idx, and the view is read per candidate (a fenced
//     LATERAL: a few index probes each), so the oldest ready steps go first, the walk stops
//     after @n ready ones, and finished steps are never read.
//   - locked: up to @n of them (the walk finds 2·@n + 8 ready steps, so that concurrent
//     claimers that skip each other's rows still fill their batch) are locked FOR UPDATE SKIP LOCKED, so
//     concurrent claimers (in this process or another) never wait for each other and never
//     take the same row. Under READ
//     COMMITTED a row changed since the readiness snapshot is re-checked on its newest version:
//     a step that was claimed, finished or recovered meanwhile has in_process, processed or
//     attempts changed and drops out, so a stale snapshot can never start an attempt early.
//   - the update marks the steps in_process with this worker, a fresh claim token and a lease.
const claimSQL = `
WITH ready AS (
    SELECT c.workflow_step_id, r.attempts, r.current_state, ts.task_state
    FROM tasker_workflow_steps c
    CROSS JOIN LATERAL (
        SELECT coalesce((SELECT tt.to_state FROM tasker_task_transitions tt
                         WHERE tt.task_id = c.task_id AND tt.most_recent), 'pending') AS task_state
    ) ts
    CROSS JOIN LATERAL (
        SELECT rs.attempts, rs.current_state, rs.ready_for_execution
        FROM tasker_step_readiness_statuses rs
        WHERE rs.workflow_step_id = c.workflow_step_id
        LIMIT 1
    ) r
    WHERE NOT c.processed AND NOT c.in_process
      AND ts.task_state IN ('pending', 'in_progress')
      AND r.ready_for_execution
    ORDER BY c.workflow_step_id
    LIMIT 2 * @n + 8
), locked AS (
    SELECT ws.workflow_step_id, ready.task_state, ready.current_state
    FROM tasker_workflow_steps ws
    JOIN ready ON ready.workflow_step_id = ws.workflow_step_id
    WHERE NOT ws.processed AND NOT ws.in_process AND coalesce(ws.attempts, 0) = ready.attempts
    ORDER BY ws.workflow_step_id
    LIMIT @n
    FOR UPDATE OF ws SKIP LOCKED
)
UPDATE tasker_workflow_steps ws
SET in_process = true,
    claimed_by = @worker,
    claim_token = gen_random_uuid(),
    claim_expires_at = now() + @lease_ms * interval '1 millisecond',
    updated_at = now()
FROM locked
WHERE ws.workflow_step_id = locked.workflow_step_id
RETURNING ws.workflow_step_id AS step_id, ws.task_id, ws.claim_token::text AS token,
          coalesce(ws.attempts, 0) + 1 AS attempt, locked.task_state = 'pending' AS task_new,
          locked.current_state, now() AS claimed`

// claimTimeout bounds one claim transaction, which takes milliseconds: it is also how long
// Stop may wait for a claim in flight when the database hangs.
const claimTimeout = 10 * time.Second

// claim claims up to n ready steps and starts them in one transaction, with a constant
// number of statements however many it claims:
//   - the claim statement (claimSQL) marks them in_process with fresh claim tokens;
//   - one batch of moves takes each to in_progress; a step in error goes through pending
//     (retry_requested) so that the retry is in its history. A step whose moves are refused
//     (an operator changed it since the readiness snapshot) is released in the same
//     transaction and not returned;
//   - the pending tasks of the claimed steps move to in_progress. Their rows are taken with
//     SKIP LOCKED, so the claim, which already holds step locks, never waits for a task lock
//     (the engine's lock order is task, then step); a task skipped here is started by the
//     claim of its next step, or settled by its finalisation.
//
// The transaction is not cancelled with ctx (a shutdown): cancelling it while COMMIT is in
// flight would report an error for a claim PostgreSQL made, and its steps would wait for their
// lease. claimTimeout bounds it instead, so a claim that returns no error is one the caller
// must run or release, and one that began before a shutdown always ends with its steps
// returned or not claimed.
func (e *Engine) claim(ctx context.Context, n int) ([]claimedStep, error) {
	began := time.Now()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), claimTimeout)
	defer cancel()
	var out []claimedStep
	err := e.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := e.tuneTx(tx); err != nil {
			return err
		}
		var rows []claimedStep
		if err := tx.Raw(claimSQL, map[string]any{
			"n": n, "worker": e.cfg.WorkerID, "lease_ms": e.cfg.LeaseDuration.Milliseconds(),
		}).Scan(&rows).Error; err != nil {
			return fmt.Errorf("claiming ready steps: %w", err)
		}
		if len(rows) == 0 {
			return nil
		}
		var err error
		if out, err = e.startSteps(ctx, tx, rows); err != nil {
			return err
		}
		return e.startTasks(ctx, tx, out)
	})
	e.traceClaim(began, n, out, err)
	if err != nil {
		return nil, err
	}
	e.observeClaims(ctx, out)
	return out, nil
}

// startSteps moves claimed steps to in_progress in one batch and releases the refused ones;
// it returns the started steps.
func (e *Engine) startSteps(ctx context.Context, tx *gorm.DB, rows []claimedStep) ([]claimedStep, error) {
	moves := make([]sm.Move, 0, len(rows)+1)
	for _, r := range rows {
		if r.CurrentState == models.StateError {
			moves = append(moves, sm.Move{ID: r.StepID, To: models.StatePending,
				Metadata: map[string]any{"reason": "retry", "worker_id": e.cfg.WorkerID}})
		}
		moves = append(moves, sm.Move{ID: r.StepID, To: models.StateInProgress,
			Metadata: map[string]any{"worker_id": e.cfg.WorkerID, "attempt": r.Attempt}})
	}
	_, refused, err := sm.TransitionStepsWhereAllowed(ctx, tx, moves)
	if err != nil {
		return nil, err
	}
	if len(refused) == 0 {
		return rows, nil
	}
	skip := map[int64]bool{}
	for _, te := range refused {
		skip[te.ID] = true
		e.log.Info("orchestration: claimed step no longer startable, released", "step_id", te.ID, "reason", te.Error())
	}
	out := rows[:0:0]
	for _, r := range rows {
		if !skip[r.StepID] {
			out = append(out, r)
			continue
		}
		if err := releaseClaim(tx, r.StepID, r.Token); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// startTasks moves the pending tasks of started steps to in_progress, skipping task rows that
// another transaction holds (see claim). Losing the race to another engine (the task is
// already in_progress) or to an operator is not an error.
func (e *Engine) startTasks(ctx context.Context, tx *gorm.DB, steps []claimedStep) error {
	var ids []int64
	for _, s := range steps {
		if s.TaskNew && !slices.Contains(ids, s.TaskID) {
			ids = append(ids, s.TaskID)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	var free []int64
	if err := tx.Raw(`SELECT task_id FROM tasker_tasks WHERE task_id = ANY(?::bigint[])
		ORDER BY task_id FOR NO KEY UPDATE SKIP LOCKED`, models.Int64Array(ids)).Scan(&free).Error; err != nil {
		return fmt.Errorf("locking tasks to start: %w", err)
	}
	moves := make([]sm.Move, len(free))
	for i, id := range free {
		moves[i] = sm.Move{ID: id, To: models.StateInProgress, Metadata: map[string]any{"worker_id": e.cfg.WorkerID}}
	}
	_, _, err := sm.TransitionTasksWhereAllowed(ctx, tx, moves)
	return err
}

// releaseClaim clears a claim that is still held with token.
func releaseClaim(tx *gorm.DB, stepID int64, token string) error {
	if err := tx.Exec(`UPDATE tasker_workflow_steps
		SET in_process = false, claimed_by = NULL, claim_token = NULL, claim_expires_at = NULL, updated_at = now()
		WHERE workflow_step_id = ? AND claim_token = ?::uuid`, stepID, token).Error; err != nil {
		return fmt.Errorf("releasing claim of step %d: %w", stepID, err)
	}
	return nil
}

// clearClaim clears any claim on a step (used when an operator makes the step terminal).
func clearClaim(tx *gorm.DB, stepID int64) error {
	if err := tx.Exec(`UPDATE tasker_workflow_steps
		SET in_process = false, claimed_by = NULL, claim_token = NULL, claim_expires_at = NULL, updated_at = now()
		WHERE workflow_step_id = ? AND (in_process OR claim_token IS NOT NULL)`, stepID).Error; err != nil {
		return fmt.Errorf("clearing claim of step %d: %w", stepID, err)
	}
	return nil
}

// nextRetrySQL finds the earliest next_retry_at, still in the future, among steps that have
// been attempted or asked for a delay, are neither processed nor claimed, could run again, and
// belong to pending or in_progress tasks. The candidates come from the partial index
// tasker_workflow_steps_retrying_idx, which holds exactly those steps, and the readiness view
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
WHERE NOT c.processed AND NOT c.in_process
  AND (coalesce(c.attempts, 0) > 0 OR c.backoff_request_seconds IS NOT NULL)
  AND coalesce((SELECT tt.to_state FROM tasker_task_transitions tt
                WHERE tt.task_id = c.task_id AND tt.most_recent), 'pending') IN ('pending', 'in_progress')
  AND r.retry_eligible AND r.dependencies_satisfied
  AND r.next_retry_at > now()`

// nextRetryIn returns how long until the earliest waiting retry becomes due, if any.
func (e *Engine) nextRetryIn(ctx context.Context) (time.Duration, bool, error) {
	var row struct {
		At  *time.Time
		Now time.Time
	}
	err := e.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := e.tuneTx(tx); err != nil {
			return err
		}
		return tx.Raw(`SELECT (` + nextRetrySQL + `) AS at, now() AS now`).Scan(&row).Error
	})
	if err != nil {
		return 0, false, fmt.Errorf("reading next retry time: %w", err)
	}
	if row.At == nil {
		return 0, false, nil
	}
	// A little slack so that the readiness view agrees once the timer fires.
	return row.At.Sub(row.Now) + 10*time.Millisecond, true, nil
}
