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
	ecs, err := models.ExecutionContextsByTaskIDs(ctx, tx, []int64{taskID})
	if err != nil {
		return "", err
	}
	if len(ecs) != 1 {
		return "", &sm.NotFoundError{Kind: sm.KindTask, ID: taskID}
	}
	ec := ecs[0]
	state := ec.Status
	if state != models.StatePending && state != models.StateInProgress {
		return state, nil
	}
	switch ec.ExecutionStatus {
	case "all_complete":
		if state == models.StatePending {
			if _, err := sm.TransitionTask(ctx, tx, taskID, models.StateInProgress, map[string]any{"reason": "finalize"}); err != nil {
				return "", err
			}
		}
		if _, err := sm.TransitionTask(ctx, tx, taskID, models.StateComplete, map[string]any{
			"completed_steps": ec.CompletedSteps, "total_steps": ec.TotalSteps}); err != nil {
			return "", err
		}
		if err := tx.Exec(`UPDATE tasker_tasks SET complete = true, updated_at = now() WHERE task_id = ?`, taskID).Error; err != nil {
			return "", fmt.Errorf("marking task %d complete: %w", taskID, err)
		}
		return models.StateComplete, nil
	case "blocked_by_failures":
		if _, err := sm.TransitionTask(ctx, tx, taskID, models.StateError, map[string]any{
			"reason": "blocked_by_failures", "permanently_blocked_steps": ec.PermanentlyBlockedSteps,
			"failed_steps": ec.FailedSteps}); err != nil {
			return "", err
		}
		return models.StateError, nil
	}
	return state, nil
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
