package orchestration

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"

	"gorm.io/gorm"

	"github.com/taskerhq/tasker/internal/models"
	sm "github.com/taskerhq/tasker/internal/statemachine"
)

// recoveryBatch caps the expired claims recovered by one RecoverExpired round.
const recoveryBatch = 100

// RecoverExpired recovers steps whose claim lease has run out (their worker died or lost the
// database): each is handled by recoverClaim with reason "lease_expired", then its task is
// finalised. Expired claims are taken with SKIP LOCKED, so every process can run recovery at
// once and each claim is recovered exactly once. It returns how many steps it recovered.
func RecoverExpired(ctx context.Context, db *gorm.DB, log *slog.Logger) (int, error) {
	var expired []struct {
		WorkflowStepID int64
		TaskID         int64
		Token          string
	}
	if err := db.WithContext(ctx).Raw(`
		SELECT workflow_step_id, task_id, claim_token::text AS token
		FROM tasker_workflow_steps
		WHERE in_process AND claim_expires_at < now() AND claim_token IS NOT NULL
		ORDER BY claim_expires_at
		LIMIT ?`, recoveryBatch).Scan(&expired).Error; err != nil {
		return 0, fmt.Errorf("finding expired claims: %w", err)
	}
	n := 0
	for _, x := range expired {
		ok, err := recoverClaim(ctx, db, x.WorkflowStepID, x.Token, "lease_expired", "")
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
		if _, err := FinalizeTask(ctx, db, x.TaskID); err != nil {
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
func recoverClaim(ctx context.Context, db *gorm.DB, stepID int64, token, reason, worker string) (ok bool, err error) {
	err = db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var rows []struct{ ClaimedBy *string }
		cond := ""
		if reason == "lease_expired" {
			cond = " AND claim_expires_at < now()"
		}
		if err := tx.Raw(`SELECT claimed_by FROM tasker_workflow_steps
			WHERE workflow_step_id = ? AND in_process AND claim_token = ?::uuid`+cond+`
			FOR UPDATE SKIP LOCKED`, stepID, token).Scan(&rows).Error; err != nil {
			return fmt.Errorf("locking step %d: %w", stepID, err)
		}
		if len(rows) == 0 {
			return nil
		}
		ok = true
		state, err := sm.StepState(ctx, tx, stepID)
		if err != nil {
			return err
		}
		if state != models.StateInProgress {
			return clearClaim(tx, stepID)
		}
		meta := map[string]any{"reason": reason}
		if rows[0].ClaimedBy != nil {
			meta["claimed_by"] = *rows[0].ClaimedBy
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
		if err := tx.Exec(`UPDATE tasker_workflow_steps
			SET attempts = coalesce(attempts, 0) + 1, last_attempted_at = now(), results = ?::jsonb,
			    in_process = false, claimed_by = NULL, claim_token = NULL, claim_expires_at = NULL,
			    updated_at = now()
			WHERE workflow_step_id = ?`, string(res), stepID).Error; err != nil {
			return fmt.Errorf("recording lost attempt of step %d: %w", stepID, err)
		}
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("recovering claim on step %d: %w", stepID, err)
	}
	return ok, nil
}
