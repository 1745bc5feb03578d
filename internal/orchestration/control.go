package orchestration

import (
	"context"
	"fmt"
	"strings"

	"github.com/taskerhq/tasker/internal/errs"
	"github.com/taskerhq/tasker/internal/models"
	sm "github.com/taskerhq/tasker/internal/statemachine"
	"github.com/taskerhq/tasker/internal/store"
)

// Operator control. Every action here is one transaction: on a refusal (an unknown id: an
// errs.NotFound; an illegal move: an errs.IllegalTransition, a *statemachine.TransitionError)
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
// The steps move in one batch of the state machine and their claims are cleared in one
// statement: ten statements for a task of any size (it was about three per step).
func (s *Service) CancelTask(ctx context.Context, taskID int64, meta map[string]any) error {
	err := s.store.Tx(ctx, func(tx *store.Store) error {
		if _, err := sm.TransitionTask(ctx, tx, taskID, models.StateCancelled, meta); err != nil {
			return err
		}
		steps, err := tx.UnfinishedSteps(ctx, taskID)
		if err != nil {
			return fmt.Errorf("listing steps of task %d: %w", taskID, err)
		}
		if len(steps) == 0 {
			return nil
		}
		stepMeta := withMeta(meta, "reason", "task_cancelled")
		moves := make([]sm.Move, len(steps))
		for i, id := range steps {
			moves[i] = sm.Move{ID: id, To: models.StateCancelled, TaskID: taskID, Metadata: stepMeta}
		}
		if _, err := sm.TransitionSteps(ctx, tx, moves); err != nil {
			return err
		}
		if err := tx.ClearClaims(ctx, steps); err != nil {
			return fmt.Errorf("clearing the claims of task %d's steps: %w", taskID, err)
		}
		return nil
	})
	return controlError("cancelling task", taskID, err)
}

// CancelStep cancels one step (from pending, in_progress or error) and clears its claim. A
// cancelled step never lets its task complete.
func (s *Service) CancelStep(ctx context.Context, stepID int64, meta map[string]any) error {
	return s.stepAction(ctx, "cancelling step", stepID, func(tx *store.Store) error {
		if _, err := sm.TransitionStep(ctx, tx, stepID, models.StateCancelled, meta); err != nil {
			return err
		}
		return clearClaim(ctx, tx, stepID)
	})
}

// ResolveStep marks a pending or failed step resolved_manually: it counts as complete for its
// children and its task. reason is required (an errs.Invalid without it) and recorded in the
// metadata.
func (s *Service) ResolveStep(ctx context.Context, stepID int64, reason string, meta map[string]any) error {
	if strings.TrimSpace(reason) == "" {
		return errs.E(errs.Invalid, "resolving step %d manually: a reason is required", stepID)
	}
	return s.stepAction(ctx, "resolving step", stepID, func(tx *store.Store) error {
		if _, err := sm.TransitionStep(ctx, tx, stepID, models.StateResolvedManually, withMeta(meta, "reason", reason)); err != nil {
			return err
		}
		return clearClaim(ctx, tx, stepID)
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
func (s *Service) RetryStep(ctx context.Context, stepID int64, meta map[string]any) error {
	return s.stepAction(ctx, "retrying step", stepID, func(tx *store.Store) error {
		row, err := tx.StepRetryOf(ctx, stepID)
		if err != nil {
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
		if err := tx.GrantRetry(ctx, stepID, limit); err != nil {
			return fmt.Errorf("updating retry limit of step %d: %w", stepID, err)
		}
		return nil
	})
}

// stepAction runs an operator action on a step in one transaction: it locks the step's task,
// runs act, and moves a task in error back to pending; then it finalises the task.
func (s *Service) stepAction(ctx context.Context, doing string, stepID int64, act func(tx *store.Store) error) error {
	var taskID int64
	err := s.store.Tx(ctx, func(tx *store.Store) error {
		id, ok, err := tx.TaskOfStep(ctx, stepID)
		if err != nil {
			return fmt.Errorf("reading task of step %d: %w", stepID, err)
		}
		if !ok {
			return errs.E(errs.NotFound, "%s %d not found", sm.KindStep, stepID)
		}
		taskID = id
		if err := lockTask(ctx, tx, taskID); err != nil {
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
	if _, err := s.FinalizeTask(ctx, taskID); err != nil {
		return fmt.Errorf("%s %d: %w", doing, stepID, err)
	}
	return nil
}

// controlError passes a refused move (a *statemachine.TransitionError) and an unknown id
// through as they are, and wraps everything else.
func controlError(doing string, id int64, err error) error {
	if err == nil || errs.Is(err, errs.IllegalTransition) || errs.Is(err, errs.NotFound) {
		return err
	}
	return fmt.Errorf("%s %d: %w", doing, id, err)
}

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
