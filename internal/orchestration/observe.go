package orchestration

import (
	"context"
	"time"

	"github.com/taskerhq/tasker/internal/handler"
)

// Observer is told what the engine does, for metrics. Its methods are called from the
// engine's goroutines and must return quickly; they must not call back into the engine.
type Observer interface {
	// StepClaimed reports a step claimed and started, with how long it had been ready: from
	// the latest of its task's creation, its last parent's completion and the end of its
	// backoff, to the claim.
	StepClaimed(step string, readyFor time.Duration)
	// StepFinished reports the end of one attempt of a step: its outcome (one of the Outcome
	// constants) and how long its handler ran.
	StepFinished(step string, outcome string, took time.Duration)
}

// The outcomes of an attempt reported to an Observer.
const (
	OutcomeComplete       = "complete"        // the handler succeeded and the step is complete
	OutcomeError          = "error"           // the handler failed; the step may be retried
	OutcomePermanentError = "permanent_error" // the handler failed permanently
	OutcomeClaimLost      = "claim_lost"      // the step was cancelled or recovered meanwhile; result discarded
	OutcomeStopped        = "stopped"         // the engine stopped; the step was released
	OutcomeRecordFailed   = "record_failed"   // the result could not be recorded; the lease recovers the step
)

func finishOutcome(runErr error, kept bool, recordErr error) string {
	switch {
	case recordErr != nil:
		return OutcomeRecordFailed
	case !kept:
		return OutcomeClaimLost
	case runErr == nil:
		return OutcomeComplete
	case handler.IsPermanent(runErr):
		return OutcomePermanentError
	}
	return OutcomeError
}

func (e *Engine) observeFinished(step, outcome string, took time.Duration) {
	if e.cfg.Observer != nil {
		e.cfg.Observer.StepFinished(step, outcome, took)
	}
}

// observeClaims reports claimed steps to the Observer, in one statement, only when there is
// one. A failure is logged and otherwise ignored: metrics never hold up work.
func (e *Engine) observeClaims(ctx context.Context, steps []claimedStep) {
	if e.cfg.Observer == nil || len(steps) == 0 {
		return
	}
	ids := make([]int64, len(steps))
	for i, s := range steps {
		ids[i] = s.StepID
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	rows, err := e.st.ClaimLatencies(ctx, ids)
	if err != nil {
		e.log.Warn("orchestration: reading claim latencies for metrics", "error", err)
		return
	}
	for _, r := range rows {
		e.cfg.Observer.StepClaimed(r.Name, time.Duration(r.Seconds*float64(time.Second)))
	}
}
