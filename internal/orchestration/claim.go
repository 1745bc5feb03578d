package orchestration

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"go.opentelemetry.io/otel/trace"
	"gorm.io/gorm"

	"github.com/taskerhq/tasker/internal/models"
	sm "github.com/taskerhq/tasker/internal/statemachine"
	"github.com/taskerhq/tasker/internal/store"
)

// claimedStep is a step this engine claimed and moved to in_progress.
type claimedStep struct {
	store.ClaimedStep
	trace trace.SpanContext // the claim's span (see trace.go)
	// started is the step's current transition as the claim wrote it (in_progress). While the
	// claim is held it stays the current one: every writer that moves a claimed step off
	// in_progress (an operator, recovery) clears the claim in the same transaction, and the
	// recording of the attempt moves only steps whose claims it finds held, under their locks.
	started store.OwnerState
}

// claimTimeout bounds one claim transaction, which takes milliseconds: it is also how long
// Stop may wait for a claim in flight when the database hangs.
const claimTimeout = 10 * time.Second

// claim claims up to n ready steps and starts them in one transaction, with a constant
// number of statements however many it claims:
//   - the claim statement (store.ClaimReady) marks them in_process with fresh claim tokens;
//   - one batch of moves takes each to in_progress; a step in error goes through pending
//     (retry_requested) so that the retry is in its history. The moves start from the current
//     transitions the claim read (see startSteps: one written since makes the claim fail and
//     write nothing). A step whose moves are refused is released in the same transaction and
//     not returned;
//   - the pending tasks of the claimed steps move to in_progress. Their rows are taken with
//     SKIP LOCKED, so the claim, which already holds step locks, never waits for a task lock
//     (the engine's lock order is task, then step); a task skipped here is started by the
//     claim of its next step, or settled by its finalisation;
//   - the started steps' claims are watched (see watch) before the commit, while the claim
//     holds the steps' row locks: an operator's change to a claimed step (a cancellation) can
//     only commit after the claim, so its event reaches a watcher that already listens. Their
//     inputs came with the claim statement (store.ClaimReady), read under the same locks: the
//     inputs of the attempt about to run, without a statement of their own.
//
// The transaction is not cancelled with ctx (a shutdown): cancelling it while COMMIT is in
// flight would report an error for a claim PostgreSQL made, and its steps would wait for their
// lease. claimTimeout bounds it instead, so a claim that returns no error is one the caller
// must run or release, and one that began before a shutdown always ends with its steps
// returned or not claimed.
//
// It returns the runs of the started steps, one per step, in claim order, with their inputs,
// ready to run (see claimed).
func (e *Engine) claim(ctx context.Context, n int) ([]*run, error) {
	began := time.Now()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), claimTimeout)
	defer cancel()
	var c claimed
	err := e.st.EngineTx(ctx, e.cfg.AsyncCommit, func(tx *store.Store) error {
		c.close()
		var err error
		c, err = e.claimIn(ctx, tx, n, settling{})
		return err
	})
	return e.claimed(ctx, began, n, c, err)
}

// claimed is what claimIn took in a transaction not yet committed: the started steps and
// their runs (watched, inputs read), one per step, in claim order.
type claimed struct {
	steps []claimedStep
	runs  []*run
}

// close stops watching the claims of a transaction that did not commit.
func (c claimed) close() { closeRuns(c.runs) }

// claimIn claims up to n ready steps in tx (see claim for what it does and why); the caller
// commits tx, then hands the result to claimed. It claims nothing for n <= 0.
//
// settle is the settling of tasks that tx settles (see planSettling), whose row locks it
// holds: its moves are written in the same batch as the moves that start the claimed steps'
// tasks (one statement fewer than two batches; the claim cannot take a step of a task being
// settled, which has none ready), and any refusal of them is an error, as in finalizeTasks.
func (e *Engine) claimIn(ctx context.Context, tx *store.Store, n int, settle settling) (claimed, error) {
	var steps []claimedStep
	if n > 0 {
		rows, err := tx.ClaimReady(ctx, n, e.cfg.WorkerID, e.cfg.LeaseDuration, e.cfg.Observer != nil)
		if err != nil {
			return claimed{}, fmt.Errorf("claiming ready steps: %w", err)
		}
		steps = make([]claimedStep, len(rows))
		for i, r := range rows {
			steps[i].ClaimedStep = r
		}
		if len(steps) > 0 {
			if steps, err = e.startSteps(ctx, tx, steps); err != nil {
				return claimed{}, err
			}
		}
	}
	if err := e.startTasks(ctx, tx, steps, settle); err != nil {
		return claimed{}, err
	}
	if len(steps) == 0 {
		return claimed{}, nil
	}
	c := claimed{steps: steps, runs: e.watch(steps)}
	for i, r := range c.runs {
		r.in = steps[i].Input
	}
	return c, nil
}

// claimed finishes a claim of up to n steps that began at began in a transaction that
// returned err: it traces the claim, and returns the runs of a claim that committed (err
// nil), ready to run, after reporting them to the observer and starting to check and renew
// their claims (lease renewal, claim checks on the steps' events: see claimWatch), or stops
// watching those of one that did not.
func (e *Engine) claimed(ctx context.Context, began time.Time, n int, c claimed, err error) ([]*run, error) {
	if err != nil {
		c.close()
		e.traceClaim(began, n, nil, err)
		return nil, err
	}
	e.traceClaim(began, n, c.steps, nil)
	for i := range c.runs {
		c.runs[i].s.trace = c.steps[i].trace
	}
	e.observeClaims(c.steps)
	for _, r := range c.runs {
		e.watcher.prepared(r)
	}
	return c.runs, nil
}

// startSteps moves claimed steps to in_progress in one batch and releases the refused ones;
// it returns the started steps, each with the transition it started with. Neither the steps'
// current transitions nor the guards of the moves are read again:
//   - the claim returned each step's current transition (store.ClaimedStep), read in its
//     snapshot, so the moves are planned from it. A transition committed between that
//     snapshot and the claim's lock (an operator's, on a step no engine held) took the sort
//     key the move would write: the batch then fails on the history's unique sort keys and
//     writes nothing (statemachine.Known), and the claim's transaction is rolled back (its
//     steps return to the queue; a busy engine records its batch again without claiming). A
//     race of a few milliseconds with an operator costs a retry, where a read of every
//     claimed step's transitions cost every claim a round trip;
//   - the claim took only steps whose readiness (every parent complete or resolved_manually,
//     states no step leaves) it read.
func (e *Engine) startSteps(ctx context.Context, tx *store.Store, rows []claimedStep) ([]claimedStep, error) {
	moves := make([]sm.Move, 0, len(rows)+1)
	proven := make(map[int64]bool, len(rows))
	current := make(map[int64]store.OwnerState, len(rows))
	for _, r := range rows {
		proven[r.StepID] = true
		cur := store.OwnerState{ID: r.StepID, SortKey: r.CurrentSortKey}
		if r.CurrentSortKey > 0 {
			state := string(r.CurrentState)
			cur.State = &state
		}
		current[r.StepID] = cur
		if r.CurrentState == models.StateError {
			moves = append(moves, sm.Move{ID: r.StepID, To: models.StatePending, TaskID: r.TaskID,
				Metadata: map[string]any{"reason": "retry", "worker_id": e.cfg.WorkerID}})
		}
		moves = append(moves, sm.Move{ID: r.StepID, To: models.StateInProgress, TaskID: r.TaskID,
			Metadata: map[string]any{"worker_id": e.cfg.WorkerID, "attempt": r.Attempt}})
	}
	after, refused, err := sm.TransitionHeldStepsWhereAllowed(ctx, tx, moves, sm.Known{Current: current, Proven: proven})
	if errors.Is(err, gorm.ErrDuplicatedKey) {
		return nil, fmt.Errorf("starting claimed steps: a transition of one was committed between the claim's read and its lock "+
			"(the claim is rolled back; its steps are claimed again from their new history): %w", err)
	}
	if err != nil {
		return nil, err
	}
	for i := range rows {
		rows[i].started = after[rows[i].StepID]
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
		if err := tx.ReleaseClaim(ctx, r.StepID, r.Token); err != nil {
			return nil, fmt.Errorf("releasing claim of step %d: %w", r.StepID, err)
		}
	}
	return out, nil
}

// startTasks moves the pending tasks of started steps to in_progress, skipping task rows that
// another transaction holds (see claim). Losing the race to another engine (the task is
// already in_progress) or to an operator is not an error. The moves of settle (see claimIn)
// go first, in the same batch, with what settle knows of their tasks; a refusal of one of
// them is returned.
func (e *Engine) startTasks(ctx context.Context, tx *store.Store, steps []claimedStep, settle settling) error {
	var ids []int64
	for _, s := range steps {
		if s.TaskNew && !slices.Contains(ids, s.TaskID) {
			ids = append(ids, s.TaskID)
		}
	}
	moves := slices.Clip(settle.moves)
	known := settle.known
	if len(ids) > 0 {
		free, err := tx.LockTasksSkipLocked(ctx, ids)
		if err != nil {
			return fmt.Errorf("locking tasks to start: %w", err)
		}
		if len(free) > 0 {
			// The current transitions of the tasks locked here came with their locks. A task
			// that settle also moves (the caller holds its lock, so it is locked here too) has
			// the same current transition in both reads.
			known.Current = make(map[int64]store.OwnerState, len(settle.known.Current)+len(free))
			maps.Copy(known.Current, settle.known.Current)
		}
		for _, t := range free {
			known.Current[t.ID] = t
			moves = append(moves, sm.Move{ID: t.ID, To: models.StateInProgress, Metadata: map[string]any{"worker_id": e.cfg.WorkerID}})
		}
	}
	if len(moves) == 0 {
		return nil
	}
	refused, err := sm.TransitionHeldTasksWhereAllowed(ctx, tx, moves, known)
	if err != nil {
		return err
	}
	for _, te := range refused {
		if slices.ContainsFunc(settle.moves, func(m sm.Move) bool { return m.ID == te.ID }) {
			return te
		}
	}
	return nil
}

// claimKeys returns the step ids and claim tokens of n claimed steps, step(i) being the i-th.
func claimKeys(n int, step func(i int) claimedStep) ([]int64, []string) {
	ids := make([]int64, n)
	tokens := make([]string, n)
	for i := range n {
		s := step(i)
		ids[i], tokens[i] = s.StepID, s.Token
	}
	return ids, tokens
}

// clearClaim clears any claim on a step (used when an operator makes the step terminal).
func clearClaim(ctx context.Context, tx *store.Store, stepID int64) error {
	if err := tx.ClearClaim(ctx, stepID); err != nil {
		return fmt.Errorf("clearing claim of step %d: %w", stepID, err)
	}
	return nil
}

// nextRetryIn returns how long until the earliest waiting retry becomes due, if any.
func (e *Engine) nextRetryIn(ctx context.Context) (time.Duration, bool, error) {
	var at *time.Time
	var now time.Time
	err := e.st.EngineTx(ctx, e.cfg.AsyncCommit, func(tx *store.Store) (err error) {
		at, now, err = tx.NextRetry(ctx)
		return err
	})
	if err != nil {
		return 0, false, fmt.Errorf("reading next retry time: %w", err)
	}
	if at == nil {
		return 0, false, nil
	}
	// A little slack so that the readiness view agrees once the timer fires.
	return at.Sub(now) + 10*time.Millisecond, true, nil
}
