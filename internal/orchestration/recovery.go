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
//
// It reads the expired claims recoveryBatch at a time, and reads again as long as a full batch
// was found and some of it recovered: a worker that died holding hundreds of claims has them all
// back in one call, not a hundred per recovery interval (30 s by default). A full batch that it
// could recover none of (others hold those rows) ends the call.
func (s *Service) RecoverExpired(ctx context.Context, log *slog.Logger) (int, error) {
	total := 0
	for {
		found, n, err := s.recoverExpiredBatch(ctx, log)
		total += n
		if err != nil || found < recoveryBatch || n == 0 || ctx.Err() != nil {
			return total, err
		}
	}
}

// recoverExpiredBatch is one round of RecoverExpired: it reads up to recoveryBatch expired
// claims and recovers those it can; it returns how many it found and how many it recovered.
func (s *Service) recoverExpiredBatch(ctx context.Context, log *slog.Logger) (found, n int, err error) {
	expired, err := s.store.ExpiredClaims(ctx, recoveryBatch)
	if err != nil {
		return 0, 0, fmt.Errorf("finding expired claims: %w", err)
	}
	found = len(expired)
	for _, x := range expired {
		ok, err := s.recoverClaim(ctx, x.WorkflowStepID, x.Token, "lease_expired", "")
		if err != nil {
			return found, n, err
		}
		if !ok {
			continue
		}
		n++
		if log != nil {
			log.Warn("orchestration: recovered step with expired lease", "step_id", x.WorkflowStepID, "task_id", x.TaskID)
		}
		if _, err := s.FinalizeTask(ctx, x.TaskID); err != nil {
			return found, n, err
		}
	}
	return found, n, nil
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
