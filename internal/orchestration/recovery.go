package orchestration

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"

	"github.com/taskerhq/tasker/internal/models"
	sm "github.com/taskerhq/tasker/internal/statemachine"
	"github.com/taskerhq/tasker/internal/store"
)

// recoveryBatch caps the expired claims recovered by one RecoverExpired round.
const recoveryBatch = 100

// RecoverExpired recovers steps whose claim lease has run out (their worker died or lost the
// database): each is handled by recoverClaim with reason "lease_expired", then its task is
// finalised. Expired claims are taken with SKIP LOCKED, so every process can run recovery at
// once and each claim is recovered exactly once. It returns how many steps it recovered.
func (s *Service) RecoverExpired(ctx context.Context, log *slog.Logger) (int, error) {
	expired, err := s.store.ExpiredClaims(ctx, recoveryBatch)
	if err != nil {
		return 0, fmt.Errorf("finding expired claims: %w", err)
	}
	n := 0
	for _, x := range expired {
		ok, err := s.recoverClaim(ctx, x.WorkflowStepID, x.Token, "lease_expired", "")
		if err != nil {
			return n, err
		}
		if !ok {
			continue
		}
		n++
		if log != nil {
			log.Warn("orchestration: recovered step with expired lease", "step_id", x.WorkflowStepID, "task_id", x.TaskID)
		}
		if _, err := s.FinalizeTask(ctx, x.TaskID); err != nil {
			return n, err
		}
	}
	return n, nil
}

// recoverClaim takes back the claim token on a step in one transaction, if it is still held
// and (for lease_expired) still expired: a step in_progress counts its lost attempt
// (attempts + 1, last_attempted_at) and moves to error with metadata {"reason": reason}, so the
// normal retry path (retry limit, backoff) picks it up; the claim is cleared whatever the
// state. The step row is taken with SKIP LOCKED: a step that someone else is writing is left
// for a later round. ok is false when nothing was recovered.
func (s *Service) recoverClaim(ctx context.Context, stepID int64, token, reason, worker string) (ok bool, err error) {
	err = s.store.Tx(ctx, func(tx *store.Store) error {
		held, claimedBy, err := tx.LockClaim(ctx, stepID, token, reason == "lease_expired")
		if err != nil {
			return fmt.Errorf("locking step %d: %w", stepID, err)
		}
		if !held {
			return nil
		}
		ok = true
		state, err := sm.StepState(ctx, tx, stepID)
		if err != nil {
			return err
		}
		if state != models.StateInProgress {
			return clearClaim(ctx, tx, stepID)
		}
		meta := map[string]any{"reason": reason}
		if claimedBy != nil {
			meta["claimed_by"] = *claimedBy
		}
		if worker != "" {
			meta["worker_id"] = worker
		}
		if _, err := sm.TransitionStep(ctx, tx, stepID, models.StateError, meta); err != nil {
			return err
		}
		res, err := json.Marshal(map[string]any{"error": "attempt lost: " + reason, "reason": reason})
		if err != nil {
			return fmt.Errorf("encoding recovery of step %d: %w", stepID, err)
		}
		if err := tx.RecordLostAttempt(ctx, stepID, res); err != nil {
			return fmt.Errorf("recording lost attempt of step %d: %w", stepID, err)
		}
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("recovering claim on step %d: %w", stepID, err)
	}
	return ok, nil
}
