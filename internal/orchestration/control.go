package orchestration

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"gorm.io/gorm"

	"github.com/taskerhq/tasker/internal/models"
	sm "github.com/taskerhq/tasker/internal/statemachine"
)

// Operator control. Every function here is one transaction: on a refusal (an unknown id: an
// error matching statemachine.ErrNotFound; an illegal move: a *statemachine.TransitionError)
// nothing is written. The task row is locked before any step row, the same order the rest of
// the engine uses, so operator actions never deadlock with workers. Changes take effect on the
// next claim; a handler running a step that is cancelled has its context cancelled (the
// worker watches its step's transitions) and its result is discarded.
//
// When the step's task is in error, an action on one of its steps moves the task back to
// pending (event retry_requested) so that work resumes; the task is then finalised from its
// execution context, so an action that leaves nothing runnable settles it again at once
// (complete when every step is now complete or resolved, error when it is still blocked).

// CancelTask cancels a task and every one of its steps that is not terminal (complete,
// cancelled, resolved_manually), clearing their claims. meta is recorded on every transition.
func CancelTask(ctx context.Context, db *gorm.DB, taskID int64, meta map[string]any) error {
	err := db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if _, err := sm.TransitionTask(ctx, tx, taskID, models.StateCancelled, meta); err != nil {
			return err
		}
		var steps []int64
		if err := tx.Raw(`
			SELECT ws.workflow_step_id
			FROM tasker_workflow_steps ws
			LEFT JOIN tasker_workflow_step_transitions t ON t.workflow_step_id = ws.workflow_step_id AND t.most_recent
			WHERE ws.task_id = ? AND coalesce(t.to_state, 'pending') NOT IN ('complete', 'cancelled', 'resolved_manually')
			ORDER BY ws.workflow_step_id`, taskID).Scan(&steps).Error; err != nil {
			return fmt.Errorf("listing steps of task %d: %w", taskID, err)
		}
		stepMeta := withMeta(meta, "reason", "task_cancelled")
		for _, id := range steps {
			if _, err := sm.TransitionStep(ctx, tx, id, models.StateCancelled, stepMeta); err != nil {
				return err
			}
			if err := clearClaim(tx, id); err != nil {
				return err
			}
		}
		return nil
	})
	return controlError("cancelling task", taskID, err)
}

// CancelStep cancels one step (from pending, in_progress or error) and clears its claim. A
// cancelled step never lets its task complete.
func CancelStep(ctx context.Context, db *gorm.DB, stepID int64, meta map[string]any) error {
	return stepAction(ctx, db, "cancelling step", stepID, func(tx *gorm.DB) error {
		if _, err := sm.TransitionStep(ctx, tx, stepID, models.StateCancelled, meta); err != nil {
			return err
		}
		return clearClaim(tx, stepID)
	})
}

// ResolveStepManually marks a pending or failed step resolved_manually: it counts as complete
// for its children and its task. reason is required and recorded in the metadata.
func ResolveStepManually(ctx context.Context, db *gorm.DB, stepID int64, reason string, meta map[string]any) error {
	if strings.TrimSpace(reason) == "" {
		return fmt.Errorf("resolving step %d manually: a reason is required", stepID)
	}
	return stepAction(ctx, db, "resolving step", stepID, func(tx *gorm.DB) error {
		if _, err := sm.TransitionStep(ctx, tx, stepID, models.StateResolvedManually, withMeta(meta, "reason", reason)); err != nil {
			return err
		}
		return clearClaim(tx, stepID)
	})
}

// RetryStep sends a step in error back to pending so that the next claim runs it again:
//   - when its retries are exhausted (attempts >= retry_limit), it is granted one more attempt:
//     retry_limit becomes attempts + 1 (metadata "retry_limit_granted", "previous_retry_limit");
//   - a step that is not retryable (it failed permanently) is made retryable again (metadata
//     "made_retryable": true): an operator's retry is an explicit decision to run it again,
//     and leaving it non-retryable would make the retry a no-op;
//   - a delay the last failure asked for is cleared (metadata "cleared_backoff_seconds"), so
//     that the retry takes effect on the next claim.
func RetryStep(ctx context.Context, db *gorm.DB, stepID int64, meta map[string]any) error {
	return stepAction(ctx, db, "retrying step", stepID, func(tx *gorm.DB) error {
		var row struct {
			Attempts              int
			RetryLimit            int
			Retryable             bool
			BackoffRequestSeconds *int
		}
		if err := tx.Raw(`SELECT coalesce(attempts, 0) AS attempts, coalesce(retry_limit, 3) AS retry_limit,
			retryable, backoff_request_seconds FROM tasker_workflow_steps WHERE workflow_step_id = ?`,
			stepID).Scan(&row).Error; err != nil {
			return fmt.Errorf("reading step %d: %w", stepID, err)
		}
		m := withMeta(meta, "reason", "operator_retry")
		limit := row.RetryLimit
		if row.Attempts >= row.RetryLimit {
			limit = row.Attempts + 1
			m["retry_limit_granted"] = limit
			m["previous_retry_limit"] = row.RetryLimit
		}
		if !row.Retryable {
			m["made_retryable"] = true
		}
		if row.BackoffRequestSeconds != nil {
			m["cleared_backoff_seconds"] = *row.BackoffRequestSeconds
		}
		if _, err := sm.TransitionStep(ctx, tx, stepID, models.StatePending, m); err != nil {
			return err
		}
		if err := tx.Exec(`UPDATE tasker_workflow_steps
			SET retry_limit = ?, retryable = true, backoff_request_seconds = NULL, updated_at = now()
			WHERE workflow_step_id = ?`, limit, stepID).Error; err != nil {
			return fmt.Errorf("updating retry limit of step %d: %w", stepID, err)
		}
		return nil
	})
}

// stepAction runs an operator action on a step in one transaction: it locks the step's task,
// runs act, and moves a task in error back to pending; then it finalises the task.
func stepAction(ctx context.Context, db *gorm.DB, doing string, stepID int64, act func(tx *gorm.DB) error) error {
	var taskID int64
	err := db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var ids []int64
		if err := tx.Raw(`SELECT task_id FROM tasker_workflow_steps WHERE workflow_step_id = ?`, stepID).Scan(&ids).Error; err != nil {
			return fmt.Errorf("reading task of step %d: %w", stepID, err)
		}
		if len(ids) == 0 {
			return &sm.NotFoundError{Kind: sm.KindStep, ID: stepID}
		}
		taskID = ids[0]
		if err := lockTask(tx, taskID); err != nil {
			return err
		}
		if err := act(tx); err != nil {
			return err
		}
		state, err := sm.TaskState(ctx, tx, taskID)
		if err != nil {
			return err
		}
		if state == models.StateError {
			if _, err := sm.TransitionTask(ctx, tx, taskID, models.StatePending, map[string]any{
				"reason": "operator_action", "step_id": stepID}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return controlError(doing, stepID, err)
	}
	if _, err := FinalizeTask(ctx, db, taskID); err != nil {
		return fmt.Errorf("%s %d: %w", doing, stepID, err)
	}
	return nil
}

// controlError passes a refused move through as the state machine's *TransitionError, turns
// an unknown id into a *NotFoundError, and wraps everything else.
func controlError(doing string, id int64, err error) error {
	if err == nil {
		return nil
	}
	var te *sm.TransitionError
	if errors.As(err, &te) {
		return te
	}
	var nf *sm.NotFoundError
	if errors.As(err, &nf) {
		return &NotFoundError{NotFoundError: nf}
	}
	return fmt.Errorf("%s %d: %w", doing, id, err)
}

// NotFoundError names the unknown task or step of an operator action. It matches both this
// package's ErrNotFound and statemachine.ErrNotFound with errors.Is, and unwraps to the
// *statemachine.NotFoundError.
type NotFoundError struct {
	*sm.NotFoundError
}

// Is makes errors.Is(err, ErrNotFound) and errors.Is(err, statemachine.ErrNotFound) true.
func (e *NotFoundError) Is(target error) bool {
	return target == ErrNotFound || target == sm.ErrNotFound
}

// Unwrap returns the state machine's error.
func (e *NotFoundError) Unwrap() error { return e.NotFoundError }

// withMeta copies meta and sets key to value unless meta already has key.
func withMeta(meta map[string]any, key string, value any) map[string]any {
	out := make(map[string]any, len(meta)+1)
	for k, v := range meta {
		out[k] = v
	}
	if _, ok := out[key]; !ok {
		out[key] = value
	}
	return out
}
