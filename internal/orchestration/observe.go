package orchestration

import (
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
	// StepStarted reports a claimed step given a worker, with how long it waited for one
	// since its claim committed: a prefetched step waits for a handler to return, the others
	// start at once (see Config.Prefetch).
	StepStarted(step string, waited time.Duration)
	// StepFinished reports the end of one attempt of a step: its outcome (one of the Outcome
	// constants) and how long its handler ran.
	StepFinished(step string, outcome string, took time.Duration)
	// StepsRecovered reports n steps whose claim lease had run out (their worker died or lost
	// the database), taken back by this process's recovery (see Service.RecoverExpired).
	StepsRecovered(n int)
	// EngineCall reports one of the engine's calls into the database that succeeded: call (one
	// of the Call constants), the attempts it recorded and the steps it claimed, and how long
	// it took, from the engine's side (the round trip included). Batch sizes and call times
	// show where an engine's time goes: calls that take long for few steps point at the
	// database, small batches at idle workers.
	EngineCall(call string, recorded, claimed int, took time.Duration)
}

// The engine's calls reported to an Observer.
const (
	CallClaim          = "claim"            // a claim of its own: beside a recording, or for idle workers
	CallRecord         = "record"           // a recording with no claim in it
	CallRecordAndClaim = "record_and_claim" // a recording and the claim after it, one transaction
)

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

// observeCall reports one of the engine's calls that succeeded to the Observer, if any.
func (e *Engine) observeCall(call string, recorded, claimed int, began time.Time) {
	if e.cfg.Observer != nil {
		e.cfg.Observer.EngineCall(call, recorded, claimed, time.Since(began))
	}
}

func (e *Engine) observeStarted(r *run) {
	if e.cfg.Observer != nil {
		e.cfg.Observer.StepStarted(r.in.Name, time.Since(r.queued))
	}
}

func (e *Engine) observeFinished(step, outcome string, took time.Duration) {
	if e.cfg.Observer != nil {
		e.cfg.Observer.StepFinished(step, outcome, took)
	}
}

// observeClaims reports claimed steps to the Observer, only when there is one, with how long
// each had been ready, which their claim read (store.ClaimedStep.ReadyFor): reporting holds
// nothing up.
func (e *Engine) observeClaims(steps []claimedStep) {
	if e.cfg.Observer == nil {
		return
	}
	for _, s := range steps {
		e.cfg.Observer.StepClaimed(s.Input.Name, s.ReadyFor)
	}
}
