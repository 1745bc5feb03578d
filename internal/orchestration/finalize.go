package orchestration

import (
	"context"
	"fmt"

	"gorm.io/gorm"

	"github.com/taskerhq/tasker/internal/models"
	sm "github.com/taskerhq/tasker/internal/statemachine"
)

// FinalizeTask settles a task from its execution context (SEMANTICS §7) and returns the task's
// state afterwards: all_complete → complete (through in_progress when pending) with
// complete = true; blocked_by_failures (which implies nothing ready and nothing running) →
// error; anything else leaves it as it is. Only a pending or in_progress task is moved.
//
// It locks the task row first, so finalisations of one task are serialised: when two workers
// finish a task's last two steps at once, the second to take the lock reads both results and
// the task is completed exactly once.
func FinalizeTask(ctx context.Context, db *gorm.DB, taskID int64) (models.State, error) {
	var state models.State
	err := db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := lockTask(tx, taskID); err != nil {
			return err
		}
		var err error
		state, err = finalizeLocked(ctx, tx, taskID)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("finalising task %d: %w", taskID, err)
	}
	return state, nil
}

// finalizeLocked is FinalizeTask inside tx, which already holds the task's row lock.
func finalizeLocked(ctx context.Context, tx *gorm.DB, taskID int64) (models.State, error) {
	states, err := finalizeTasks(ctx, tx, []int64{taskID})
	if err != nil {
		return "", err
	}
	state, ok := states[taskID]
	if !ok {
		return "", &sm.NotFoundError{Kind: sm.KindTask, ID: taskID}
	}
	return state, nil
}

// finalizeTasks settles tasks whose row locks tx already holds, with a constant number of
// statements: their execution contexts are read in one, the moves they call for (see
// FinalizeTask) are written in one batch, and the completed ones are flagged in one. It
// returns each task's state afterwards; a task that does not exist is absent.
func finalizeTasks(ctx context.Context, tx *gorm.DB, taskIDs []int64) (map[int64]models.State, error) {
	settleable, states, err := settleableTasks(tx, taskIDs)
	if err != nil {
		return nil, err
	}
	ecs, err := models.ExecutionContextsByTaskIDs(ctx, tx, settleable)
	if err != nil {
		return nil, err
	}
	var moves []sm.Move
	var completed []int64
	for _, ec := range ecs {
		states[ec.TaskID] = ec.Status
		if ec.Status != models.StatePending && ec.Status != models.StateInProgress {
			continue
		}
		switch ec.ExecutionStatus {
		case "all_complete":
			if ec.Status == models.StatePending {
				moves = append(moves, sm.Move{ID: ec.TaskID, To: models.StateInProgress, Metadata: map[string]any{"reason": "finalize"}})
			}
			moves = append(moves, sm.Move{ID: ec.TaskID, To: models.StateComplete, Metadata: map[string]any{
				"completed_steps": ec.CompletedSteps, "total_steps": ec.TotalSteps}})
			completed = append(completed, ec.TaskID)
			states[ec.TaskID] = models.StateComplete
		case "blocked_by_failures":
			moves = append(moves, sm.Move{ID: ec.TaskID, To: models.StateError, Metadata: map[string]any{
				"reason": "blocked_by_failures", "permanently_blocked_steps": ec.PermanentlyBlockedSteps,
				"failed_steps": ec.FailedSteps}})
			states[ec.TaskID] = models.StateError
		}
	}
	if _, err := sm.TransitionTasks(ctx, tx, moves); err != nil {
		return nil, err
	}
	if len(completed) > 0 {
		if err := tx.Exec(`UPDATE tasker_tasks SET complete = true, updated_at = now() WHERE task_id = ANY(?::bigint[])`,
			models.Int64Array(completed)).Error; err != nil {
			return nil, fmt.Errorf("marking tasks %v complete: %w", completed, err)
		}
	}
	return states, nil
}

// settleableSQL counts, per task, what decides whether it may be settled, so that the
// execution context (which computes the readiness of every step) is read only for tasks that
// may be: a task moves only when its execution status is all_complete or blocked_by_failures;
// both need no step running (in_progress by state or claim), all_complete needs every step
// complete or resolved_manually, and blocked_by_failures a permanently blocked step
// (cancelled, or pending or in error and not retry-eligible). Each step's state is an index
// probe, so the cost follows the tasks' steps, whatever the table statistics say.
const settleableSQL = `
SELECT u.id AS task_id,
       coalesce((SELECT tt.to_state FROM tasker_task_transitions tt
                 WHERE tt.task_id = u.id AND tt.most_recent), 'pending') AS state,
       agg.running, agg.unfinished, agg.blocked
FROM unnest(?::bigint[]) AS u(id)
CROSS JOIN LATERAL (
    SELECT count(*) FILTER (WHERE s.in_process OR x.state = 'in_progress') AS running,
           count(*) FILTER (WHERE x.state NOT IN ('complete', 'resolved_manually')) AS unfinished,
           count(*) FILTER (WHERE x.state = 'cancelled'
                               OR (x.state IN ('pending', 'error')
                                   AND NOT (coalesce(s.attempts, 0) = 0
                                            OR (s.retryable AND coalesce(s.attempts, 0) < coalesce(s.retry_limit, 3)))))
               AS blocked
    FROM tasker_workflow_steps s
    CROSS JOIN LATERAL (
        SELECT coalesce((SELECT st.to_state FROM tasker_workflow_step_transitions st
                         WHERE st.workflow_step_id = s.workflow_step_id AND st.most_recent), 'pending') AS state
        OFFSET 0
    ) x
    WHERE s.task_id = u.id
) agg`

// settleableTasks returns the tasks among ids that may be settled (see settleableSQL) and the
// current state of each. The caller holds the locks of the tasks, so they exist.
func settleableTasks(tx *gorm.DB, ids []int64) ([]int64, map[int64]models.State, error) {
	var rows []struct {
		TaskID                       int64
		State                        models.State
		Running, Unfinished, Blocked int
	}
	if err := tx.Raw(settleableSQL, models.Int64Array(ids)).Scan(&rows).Error; err != nil {
		return nil, nil, fmt.Errorf("reading which tasks may be settled: %w", err)
	}
	states := make(map[int64]models.State, len(rows))
	var out []int64
	for _, r := range rows {
		states[r.TaskID] = r.State
		open := r.State == models.StatePending || r.State == models.StateInProgress
		if open && r.Running == 0 && (r.Unfinished == 0 || r.Blocked > 0) {
			out = append(out, r.TaskID)
		}
	}
	return out, states, nil
}

// lockTasks takes the row locks of the existing tasks among ids, in id order (so that
// transactions locking several tasks never deadlock), and returns the ids it locked.
func lockTasks(tx *gorm.DB, ids []int64) ([]int64, error) {
	var locked []int64
	if err := tx.Raw(`SELECT task_id FROM tasker_tasks WHERE task_id = ANY(?::bigint[]) ORDER BY task_id FOR NO KEY UPDATE`,
		models.Int64Array(ids)).Scan(&locked).Error; err != nil {
		return nil, fmt.Errorf("locking tasks: %w", err)
	}
	return locked, nil
}

// lockTask takes the task's row lock (the same lock the state machine takes), or returns a
// not-found error.
func lockTask(tx *gorm.DB, taskID int64) error {
	var ids []int64
	if err := tx.Raw(`SELECT task_id FROM tasker_tasks WHERE task_id = ? FOR NO KEY UPDATE`, taskID).Scan(&ids).Error; err != nil {
		return fmt.Errorf("locking task %d: %w", taskID, err)
	}
	if len(ids) == 0 {
		return &sm.NotFoundError{Kind: sm.KindTask, ID: taskID}
	}
	return nil
}
