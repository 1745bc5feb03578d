package orchestration

import (
	"context"
	"errors"
	"fmt"
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
}

// claimTimeout bounds one claim transaction, which takes milliseconds: it is also how long
// Stop may wait for a claim in flight when the database hangs.
const claimTimeout = 10 * time.Second

// claim claims up to n ready steps and starts them in one transaction, with a constant
// number of statements however many it claims:
//   - the claim statement (store.ClaimReady) marks them in_process with fresh claim tokens;
//   - one call starts them (see startSteps): each moves to in_progress (a step in error goes
//     through pending, retry_requested, so that the retry is in its history), from the current
//     transition the claim read (one written since makes the claim fail and write nothing), and
//     the pending tasks of the claimed steps move to in_progress. Their rows are taken with
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
		c, err = e.claimIn(ctx, tx, n)
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
func (e *Engine) claimIn(ctx context.Context, tx *store.Store, n int) (claimed, error) {
	if n <= 0 {
		return claimed{}, nil
	}
	rows, err := tx.ClaimReady(ctx, n, e.cfg.WorkerID, e.cfg.LeaseDuration, e.cfg.Observer != nil)
	if err != nil {
		return claimed{}, fmt.Errorf("claiming ready steps: %w", err)
	}
	if len(rows) == 0 {
		return claimed{}, nil
	}
	steps := make([]claimedStep, len(rows))
	for i, r := range rows {
		steps[i].ClaimedStep = r
	}
	if steps, err = e.startSteps(ctx, tx, steps); err != nil {
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

// startSteps starts claimed steps and their pending tasks in one call (store.StartClaimed)
// and returns the started steps. The state machine
// checks each step's moves against the transition table and encodes their metadata; a step
// whose moves it refuses is released, in the same transaction, and not returned. Neither the
// steps' current transitions nor the guards of the moves are read again:
//   - the claim returned each step's current transition (store.ClaimedStep), read in its
//     snapshot, so the moves are planned from it. A transition committed between that
//     snapshot and the claim's lock (an operator's, on a step no engine held) took the sort
//     key the move would write: the call then fails on the history's unique sort keys and
//     writes nothing, and the claim's transaction is rolled back (its steps return to the
//     queue; a busy engine records its batch again without claiming). A race of a few
//     milliseconds with an operator costs a retry, where a read of every claimed step's
//     transitions cost every claim a round trip;
//   - the claim took only steps whose readiness (every parent complete or resolved_manually,
//     states no step leaves) it read.
func (e *Engine) startSteps(ctx context.Context, tx *store.Store, rows []claimedStep) ([]claimedStep, error) {
	starts := make([]store.StepStart, 0, len(rows))
	out := rows[:0:0]
	for _, r := range rows {
		st := store.StepStart{StepID: r.StepID, TaskID: r.TaskID, TaskNew: r.TaskNew, SortKey: r.CurrentSortKey}
		if r.CurrentSortKey > 0 {
			state := string(r.CurrentState)
			st.FromState = &state
		}
		from := r.CurrentState
		var err error
		if from == models.StateError {
			st.RetryMetadata, err = sm.Metadata(sm.KindStep, from, models.StatePending,
				map[string]any{"reason": "retry", "worker_id": e.cfg.WorkerID})
			from = models.StatePending
		}
		if err == nil {
			st.Metadata, err = sm.Metadata(sm.KindStep, from, models.StateInProgress,
				map[string]any{"worker_id": e.cfg.WorkerID, "attempt": r.Attempt})
		}
		if err != nil {
			e.log.Info("orchestration: claimed step no longer startable, released", "step_id", r.StepID, "reason", err.Error())
			if err := tx.ReleaseClaim(ctx, r.StepID, r.Token); err != nil {
				return nil, fmt.Errorf("releasing claim of step %d: %w", r.StepID, err)
			}
			continue
		}
		starts = append(starts, st)
		out = append(out, r)
	}
	if len(starts) == 0 {
		return out, nil
	}
	taskMeta, err := sm.Metadata(sm.KindTask, models.StatePending, models.StateInProgress, map[string]any{"worker_id": e.cfg.WorkerID})
	if err != nil {
		return nil, err
	}
	err = tx.StartClaimed(ctx, starts, taskMeta)
	if errors.Is(err, gorm.ErrDuplicatedKey) {
		return nil, fmt.Errorf("starting claimed steps: a transition of one was committed between the claim's read and its lock "+
			"(the claim is rolled back; its steps are claimed again from their new history): %w", err)
	}
	if err != nil {
		return nil, fmt.Errorf("starting claimed steps: %w", err)
	}
	return out, nil
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
