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

// claim claims up to n ready steps and starts them in one statement (store.ClaimAndStart)
// however many it claims, a transaction of its own (store.EngineStatement: no BEGIN or
// COMMIT of its own to wait for):
//   - the claim marks them in_process with fresh claim tokens;
//   - in the same statement, each moves to in_progress (a step in error goes through pending,
//     retry_requested, so that the retry is in its history), from the current transition the
//     claim read (one written since makes the claim fail and write nothing), and the pending
//     tasks of the claimed steps move to in_progress. Their rows are taken with SKIP LOCKED,
//     so the claim, which already holds step locks, never waits for a task lock (the engine's
//     lock order is task, then step); a task skipped here is started by the claim of its next
//     step, or settled by its finalisation. The moves' metadata was encoded, and the moves
//     checked against the transition table, by the state machine (see startMetadata);
//   - the started steps' claims are watched (see watch) with every event of their steps
//     since the claim began: an operator's change to a claimed step (a cancellation) can
//     only commit after the claim, which holds the steps' row locks until it commits, so its
//     event arrives after the claim began, and is routed to the step's run whether it arrives
//     before the run is watched (the claim has committed as it ended) or after. Their
//     inputs came with the claim statement, read under the same locks: the inputs of the
//     attempt about to run, without a statement of their own.
//
// The claim is not cancelled with ctx (a shutdown): cancelling it while it commits would
// report an error for a claim PostgreSQL made, and its steps would wait for their lease.
// claimTimeout bounds it instead, so a claim that returns no error is one the caller must
// run or release, and one that began before a shutdown always ends with its steps returned
// or not claimed.
//
// It returns the runs of the started steps, one per step, in claim order, with their inputs,
// ready to run (see claimed).
func (e *Engine) claim(ctx context.Context, n int) ([]*run, error) {
	began := time.Now()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), claimTimeout)
	defer cancel()
	var c claimed
	since := e.watcher.begin()
	defer e.watcher.end(since)
	err := e.st.EngineStatement(ctx, e.cfg.AsyncCommit, func(st *store.Store) error {
		c.close()
		var err error
		c, err = e.claimIn(ctx, st, n, since)
		return err
	})
	if err == nil {
		e.observeCall(CallClaim, 0, len(c.steps), began)
	}
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

// claimIn claims up to n ready steps on st, for a claim that began at began (see claim for
// what it does and why); the caller hands the result to claimed. It claims nothing for n <= 0.
func (e *Engine) claimIn(ctx context.Context, st *store.Store, n int, began time.Time) (claimed, error) {
	if n <= 0 {
		return claimed{}, nil
	}
	rows, err := st.ClaimAndStart(ctx, e.claimRequest(n))
	if err != nil {
		return claimed{}, claimError(err)
	}
	return e.claimedRows(rows, began), nil
}

// claimRequest asks for up to n ready steps for the engine's workers.
func (e *Engine) claimRequest(n int) store.ClaimRequest {
	return store.ClaimRequest{N: n, Worker: e.cfg.WorkerID, Lease: e.cfg.LeaseDuration, ReadyFor: e.cfg.Observer != nil,
		Start: e.startMeta}
}

// claimError is the error of a claim statement that failed with err.
func claimError(err error) error {
	if errors.Is(err, gorm.ErrDuplicatedKey) {
		return fmt.Errorf("claiming ready steps: a transition of a claimed step was committed between the claim's read "+
			"and its lock (the claim is rolled back; its steps are claimed again from their new history): %w", err)
	}
	return fmt.Errorf("claiming ready steps: %w", err)
}

// claimedRows makes the runs of the steps a claim that began at began took (rows), and
// watches their claims.
func (e *Engine) claimedRows(rows []store.ClaimedStep, began time.Time) claimed {
	if len(rows) == 0 {
		return claimed{}
	}
	steps := make([]claimedStep, len(rows))
	for i, r := range rows {
		steps[i].ClaimedStep = r
	}
	c := claimed{steps: steps, runs: e.watch(steps, began)}
	for i, r := range c.runs {
		r.in = steps[i].Input
	}
	return c
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

// startMetadata encodes, through the state machine, the metadata of the moves with which
// the claims of worker start what they claim (see store.StartMetadata): a step to in_progress
// (the claim adds the attempt's number), a step in error to pending before it (reason retry),
// a pending task to in_progress. The state machine refuses a move its transition table does
// not allow, so the claim writes only moves it has checked.
func startMetadata(worker string) (store.StartMetadata, error) {
	var m store.StartMetadata
	var err error
	if m.Step, err = sm.Metadata(sm.KindStep, models.StatePending, models.StateInProgress,
		map[string]any{"worker_id": worker}); err != nil {
		return m, fmt.Errorf("encoding a step's start: %w", err)
	}
	if m.Retry, err = sm.Metadata(sm.KindStep, models.StateError, models.StatePending,
		map[string]any{"reason": "retry", "worker_id": worker}); err != nil {
		return m, fmt.Errorf("encoding a step's retry: %w", err)
	}
	if m.Task, err = sm.Metadata(sm.KindTask, models.StatePending, models.StateInProgress,
		map[string]any{"worker_id": worker}); err != nil {
		return m, fmt.Errorf("encoding a task's start: %w", err)
	}
	return m, nil
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
