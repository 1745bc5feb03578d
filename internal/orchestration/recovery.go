package orchestration

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"

	"github.com/taskerhq/tasker/internal/dbretry"
	"github.com/taskerhq/tasker/internal/models"
	sm "github.com/taskerhq/tasker/internal/statemachine"
	"github.com/taskerhq/tasker/internal/store"
)

// recoveryBatch caps the expired claims recovered by one RecoverExpired round.
const recoveryBatch = 100

// RecoverExpired recovers steps whose claim lease has run out (their worker died or lost the
// database): each is taken back with reason "lease_expired" (see recoverClaims) and its task
// settled. Expired claims are taken with SKIP LOCKED, so every process can run recovery at
// once and each claim is recovered exactly once. It returns how many steps it recovered.
//
// It reads the expired claims recoveryBatch at a time and recovers each batch in one
// transaction of a constant number of statements, and reads again as long as a full batch was
// found and some of it recovered: a worker that died holding hundreds of claims has them all
// back in one call, not a hundred per recovery interval (30 s by default). A full batch that it
// could recover none of (others hold those rows, or the database refuses them) ends the
// call. A claim the database refuses to give back is reported in the error, after the others
// have been recovered.
func (s *Service) RecoverExpired(ctx context.Context, log *slog.Logger) (int, error) {
	total := 0
	var first error
	for {
		found, n, err := s.recoverExpiredBatch(ctx, log)
		total += n
		if first == nil {
			first = err
		}
		if found < recoveryBatch || n == 0 || ctx.Err() != nil {
			return total, first
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
	if len(expired) == 0 {
		return 0, 0, nil
	}
	recovered, err := s.recoverClaims(ctx, expired, "lease_expired", "", true)
	if err != nil && len(expired) > 1 && !dbretry.Transient(err) && ctx.Err() == nil {
		// The database refused the batch: one claim it cannot take back (a row that breaks a
		// constraint or a trigger) must not keep the others from their recovery, round after
		// round. Each is taken back alone; those refused again are reported, the others
		// recovered.
		if log != nil {
			log.Warn("orchestration: recovering a batch of expired claims failed; recovering them one by one",
				"claims", len(expired), "error", err)
		}
		recovered, err = s.recoverOneByOne(ctx, expired, log)
	}
	if log != nil && len(recovered) > 0 {
		ids := make([]int64, len(recovered))
		for i, c := range recovered {
			ids[i] = c.StepID
		}
		log.Warn("orchestration: recovered steps with expired leases", "steps", len(recovered), "step_ids", ids)
	}
	return len(expired), len(recovered), err
}

// recoverOneByOne takes back each of claims in a transaction of its own (see recoverClaims)
// and returns those it took back, and the first error of those it could not (each is logged).
func (s *Service) recoverOneByOne(ctx context.Context, claims []store.Claim, log *slog.Logger) ([]store.Claim, error) {
	var recovered []store.Claim
	var first error
	for _, c := range claims {
		got, err := s.recoverClaims(ctx, []store.Claim{c}, "lease_expired", "", true)
		if err != nil {
			if log != nil {
				log.Error("orchestration: recovering an expired claim failed; it stays claimed",
					"step_id", c.StepID, "task_id", c.TaskID, "error", err)
			}
			if first == nil {
				first = err
			}
			continue
		}
		recovered = append(recovered, got...)
	}
	return recovered, first
}

// recoverClaims takes back the claims among claims that are still held with their tokens (and,
// for reason "lease_expired", still expired), and settles their tasks, in one transaction with
// a constant number of statements however many claims it takes back:
//   - the claims' tasks are locked first, in id order (the engine's lock order is task, then
//     step); with skipLocked a task another transaction holds is passed over, its claims left
//     for a later round, otherwise its lock is waited for;
//   - the claims still held among those tasks' steps are locked, with SKIP LOCKED: a step that
//     someone else is writing is left for a later round;
//   - a step in_progress moves to error with metadata {"reason": reason} (and the claim's
//     worker as claimed_by, the recovering worker as worker_id when given), and counts its lost
//     attempt (attempts + 1, last_attempted_at), so the normal retry path (retry limit,
//     backoff) picks it up; the claim is cleared whatever the state;
//   - the tasks of the claims taken back are settled (see finalizeTasks): a task whose last
//     running step was lost may now be blocked by failures.
//
// It returns the claims it took back, in step id order.
func (s *Service) recoverClaims(ctx context.Context, claims []store.Claim, reason, worker string, skipLocked bool) ([]store.Claim, error) {
	results, err := json.Marshal(map[string]any{"error": "attempt lost: " + reason, "reason": reason})
	if err != nil {
		return nil, fmt.Errorf("encoding the recovery of lost attempts: %w", err)
	}
	var recovered []store.Claim
	err = s.store.Tx(ctx, func(tx *store.Store) error {
		recovered = nil
		tasks, err := lockClaimTasks(ctx, tx, claims, skipLocked)
		if err != nil {
			return err
		}
		var candidates []store.Claim
		for _, c := range claims {
			if tasks[c.TaskID] {
				candidates = append(candidates, c)
			}
		}
		if len(candidates) == 0 {
			return nil
		}
		held, err := tx.LockHeldClaims(ctx, candidates, reason == "lease_expired")
		if err != nil {
			return fmt.Errorf("locking claimed steps: %w", err)
		}
		if len(held) == 0 {
			return nil
		}
		claimOf := make(map[int64]store.Claim, len(candidates))
		for _, c := range candidates {
			claimOf[c.StepID] = c
		}
		ids := make([]int64, len(held))
		for i, h := range held {
			ids[i] = h.StepID
		}
		states, err := tx.OwnerStates(ctx, store.StepOwner, ids)
		if err != nil {
			return fmt.Errorf("reading the states of claimed steps: %w", err)
		}
		current := make(map[int64]store.OwnerState, len(states))
		for _, st := range states {
			current[st.ID] = st
		}
		var moves []sm.Move
		var lost, cleared, settle []int64
		for _, h := range held {
			c := claimOf[h.StepID]
			recovered = append(recovered, c)
			settle = append(settle, c.TaskID)
			if st := current[h.StepID].State; st == nil || models.State(*st) != models.StateInProgress {
				cleared = append(cleared, h.StepID)
				continue
			}
			meta := map[string]any{"reason": reason}
			if h.ClaimedBy != nil {
				meta["claimed_by"] = *h.ClaimedBy
			}
			if worker != "" {
				meta["worker_id"] = worker
			}
			moves = append(moves, sm.Move{ID: h.StepID, To: models.StateError, TaskID: c.TaskID, Metadata: meta})
			lost = append(lost, h.StepID)
		}
		if len(moves) > 0 {
			refused, err := sm.TransitionHeldStepsWhereAllowed(ctx, tx, moves, sm.Known{Current: current})
			if err != nil {
				return err
			}
			if len(refused) > 0 { // in_progress -> error is always allowed, and the steps are locked
				return refused[0]
			}
			if err := tx.RecordLostAttempts(ctx, lost, results); err != nil {
				return fmt.Errorf("recording lost attempts: %w", err)
			}
		}
		if len(cleared) > 0 {
			if err := tx.ClearClaims(ctx, cleared); err != nil {
				return fmt.Errorf("clearing claims: %w", err)
			}
		}
		slices.Sort(settle)
		_, err = finalizeTasks(ctx, tx, slices.Compact(settle))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("recovering %d claims (%s): %w", len(claims), reason, err)
	}
	return recovered, nil
}

// lockClaimTasks takes the row locks of the tasks of claims, in id order, skipping those that
// another transaction holds when skipLocked, and returns the tasks it locked.
func lockClaimTasks(ctx context.Context, tx *store.Store, claims []store.Claim, skipLocked bool) (map[int64]bool, error) {
	ids := make([]int64, 0, len(claims))
	for _, c := range claims {
		ids = append(ids, c.TaskID)
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	locked := make(map[int64]bool, len(ids))
	if skipLocked {
		rows, err := tx.LockTasksSkipLocked(ctx, ids)
		if err != nil {
			return nil, fmt.Errorf("locking the tasks of claims: %w", err)
		}
		for _, r := range rows {
			locked[r.ID] = true
		}
		return locked, nil
	}
	got, err := tx.LockOwners(ctx, store.TaskOwner, ids)
	if err != nil {
		return nil, fmt.Errorf("locking the tasks of claims: %w", err)
	}
	for _, id := range got {
		locked[id] = true
	}
	return locked, nil
}
