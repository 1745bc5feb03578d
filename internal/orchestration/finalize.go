package orchestration

import (
	"context"
	"fmt"

	"github.com/taskerhq/tasker/internal/errs"
	"github.com/taskerhq/tasker/internal/models"
	sm "github.com/taskerhq/tasker/internal/statemachine"
	"github.com/taskerhq/tasker/internal/store"
)

// FinalizeTask settles a task from its execution context (SEMANTICS §7) and returns the task's
// state afterwards: all_complete → complete (through in_progress when pending) with
// complete = true; blocked_by_failures (which implies nothing ready and nothing running) →
// error; anything else leaves it as it is. Only a pending or in_progress task is moved.
//
// It locks the task row first, so finalisations of one task are serialised: when two workers
// finish a task's last two steps at once, the second to take the lock reads both results and
// the task is completed exactly once.
func (s *Service) FinalizeTask(ctx context.Context, taskID int64) (models.State, error) {
	var state models.State
	err := s.store.Tx(ctx, func(tx *store.Store) error {
		if err := lockTask(ctx, tx, taskID); err != nil {
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
func finalizeLocked(ctx context.Context, tx *store.Store, taskID int64) (models.State, error) {
	states, err := finalizeTasks(ctx, tx, []int64{taskID})
	if err != nil {
		return "", err
	}
	state, ok := states[taskID]
	if !ok {
		return "", taskNotFound(taskID)
	}
	return state, nil
}

// finalizeTasks settles tasks whose row locks tx already holds, with a constant number of
// statements: their execution contexts are read in one and the moves they call for (see
// FinalizeTask) are written in one batch, whose statement also flags the completed ones (the
// task transitions' trigger, migration 00064). It returns each task's state afterwards; a
// task that does not exist is absent.
func finalizeTasks(ctx context.Context, tx *store.Store, taskIDs []int64) (map[int64]models.State, error) {
	s, err := planSettling(ctx, tx, taskIDs)
	if err != nil {
		return nil, err
	}
	if err := sm.TransitionHeldTasks(ctx, tx, s.moves, s.known); err != nil {
		return nil, err
	}
	return s.states, nil
}

// settling is what finalising tasks calls for, read but not yet written: the tasks' moves, in
// the order they must be made, each task's state once they are made, and what the moves'
// writer knows of the tasks: their current transitions, read under their locks, and the
// guards of the completing moves, proven by every step being complete or resolved_manually
// (terminal states).
type settling struct {
	moves  []sm.Move
	states map[int64]models.State
	known  sm.Known
}

// planSettling reads, for tasks whose row locks tx holds, what settling them calls for (see
// FinalizeTask), in one statement, or two when an execution context must be read. The
// caller makes the moves, with the tasks still locked.
func planSettling(ctx context.Context, tx *store.Store, taskIDs []int64) (settling, error) {
	settleable, finished, states, current, err := settleableTasks(ctx, tx, taskIDs)
	if err != nil {
		return settling{}, err
	}
	ecs, err := tx.ExecutionContexts(ctx, settleable)
	if err != nil {
		return settling{}, err
	}
	ecs = append(ecs, finished...)
	s := settling{states: states, known: sm.Known{Current: current, Proven: map[int64]bool{}}}
	for _, ec := range ecs {
		states[ec.TaskID] = ec.Status
		if ec.Status != models.StatePending && ec.Status != models.StateInProgress {
			continue
		}
		switch ec.ExecutionStatus {
		case "all_complete":
			if ec.Status == models.StatePending {
				s.moves = append(s.moves, sm.Move{ID: ec.TaskID, To: models.StateInProgress, Metadata: map[string]any{"reason": "finalize"}})
			}
			s.moves = append(s.moves, sm.Move{ID: ec.TaskID, To: models.StateComplete, Metadata: map[string]any{
				"completed_steps": ec.CompletedSteps, "total_steps": ec.TotalSteps}})
			s.known.Proven[ec.TaskID] = true
			states[ec.TaskID] = models.StateComplete
		case "blocked_by_failures":
			s.moves = append(s.moves, sm.Move{ID: ec.TaskID, To: models.StateError, Metadata: map[string]any{
				"reason": "blocked_by_failures", "permanently_blocked_steps": ec.PermanentlyBlockedSteps,
				"failed_steps": ec.FailedSteps}})
			states[ec.TaskID] = models.StateError
		}
	}
	return s, nil
}

// settleableTasks returns the tasks among ids that may be settled (see store.TasksSettling)
// and the current state of each: a task moves only when its execution status is all_complete
// or blocked_by_failures; both need no step running, all_complete needs every step complete
// or resolved_manually, and blocked_by_failures a permanently blocked step. A task with steps,
// none running and every one complete or resolved_manually is all_complete with every step
// completed (the view's rule, SEMANTICS §5): its execution context is returned as such
// (finished) without reading the view. For the others that may be settled (settleable) the
// execution context, which computes the readiness of every step, is read. The caller holds
// the locks of the tasks, so they exist and these counts, and their current transitions
// (current), stay true until it commits.
func settleableTasks(ctx context.Context, tx *store.Store, ids []int64) (settleable []int64, finished []models.TaskExecutionContext,
	states map[int64]models.State, current map[int64]store.OwnerState, err error) {
	rows, err := tx.TasksSettling(ctx, ids)
	if err != nil {
		return nil, nil, nil, nil, fmt.Errorf("reading which tasks may be settled: %w", err)
	}
	states = make(map[int64]models.State, len(rows))
	current = make(map[int64]store.OwnerState, len(rows))
	for _, r := range rows {
		state := r.State()
		states[r.TaskID] = state
		current[r.TaskID] = r.Current
		open := state == models.StatePending || state == models.StateInProgress
		switch {
		case !open || r.Running > 0:
		case r.Unfinished == 0 && r.Total > 0:
			finished = append(finished, models.TaskExecutionContext{TaskID: r.TaskID, Status: state,
				TotalSteps: r.Total, CompletedSteps: r.Total, ExecutionStatus: "all_complete"})
		case r.Unfinished == 0 || r.Blocked > 0:
			settleable = append(settleable, r.TaskID)
		}
	}
	return settleable, finished, states, current, nil
}

// lockTask takes the task's row lock (the same lock the state machine takes), or returns an
// errs.NotFound.
func lockTask(ctx context.Context, tx *store.Store, taskID int64) error {
	ok, err := tx.LockTask(ctx, taskID)
	if err != nil {
		return fmt.Errorf("locking task %d: %w", taskID, err)
	}
	if !ok {
		return taskNotFound(taskID)
	}
	return nil
}

// taskNotFound is the error for a task that does not exist.
func taskNotFound(taskID int64) error {
	return errs.E(errs.NotFound, "%s %d not found", sm.KindTask, taskID)
}
