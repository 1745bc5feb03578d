package orchestration

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/taskerhq/tasker/internal/dbretry"
	"github.com/taskerhq/tasker/internal/handler"
	"github.com/taskerhq/tasker/internal/models"
	sm "github.com/taskerhq/tasker/internal/statemachine"
	"github.com/taskerhq/tasker/internal/store"
)

// result is the outcome of one attempt, waiting to be recorded.
type result struct {
	step    claimedStep
	name    string
	out     handler.Output
	runErr  error
	elapsed time.Duration
	log     *slog.Logger      // the attempt's logger; nil: built when needed (Engine.stepLog)
	trace   trace.SpanContext // the run's span (see trace.go)
	slot    bool              // the recorder holds the worker's slot (see Engine.work)
}

// maxRecordBatch caps the attempts recorded by one transaction. It is above the steps that
// 100 workers hold with their prefetch (500), so that such an engine records a round of its
// steps in one call rather than two: with 256, 10,000 one-step tasks at 100 workers drained
// at 3,835 steps a second on average against 4,171 with 512 (seven back-to-back pairs, 5 won),
// with less database CPU a step in 6 of the 7 (BENCHMARKS.md, "Engine: a chain claims each
// step in the recording before it").
const maxRecordBatch = 512

// recorder records finished attempts with group commit: one goroutine takes every result
// waiting when it becomes free (up to maxRecordBatch) and records them all in one transaction
// (see recordBatch). While one batch commits, the next one gathers, so the batch size follows
// the load and an idle engine records a lone result at once.
//
// A worker hands its slot to the recorder with its result. While the engine runs (between
// Start and Stop), the recorder claims, beside each recording, as many ready steps as it holds
// slots (up to ClaimBatch, and within the engine's workers and prefetch depth: see
// Engine.claimable): the claim (see claim) runs in a transaction of its own, on another
// connection, at the same time as the recording, and its steps start on those slots as soon
// as it commits, while the recording may still run. A busy engine thus keeps two backends at
// work, one recording and one claiming, rather than one doing both in turn: the recording and
// the claim write different rows (the recorded steps are claimed, the claimed ones are not),
// and each takes its locks in the engine's order (task, then step; a claim takes task locks
// with SKIP LOCKED). The steps that the recorded attempts make ready (a task's next steps) are
// not among those the claim beside it sees (it reads before the recording commits): the next
// claim takes them. The slots a claim leaves over are freed, and the dispatcher woken to fill
// them.
//
// Or the recorder claims in the transaction that records the batch, after the recording: one
// backend does both in turn, with one commit a batch, and the steps the batch made ready are
// among those it claims. Two backends at once pay only while the database has cores to spare:
// where other engines keep it busy too, every step costs more CPU with the claim beside
// (BENCHMARKS.md). And a small batch records quickly, while the claim beside it misses the
// steps the recording makes ready, which the claim in the recording takes. So with
// Config.Claims at ClaimsAuto the recorder claims beside a batch of claimBesideMin attempts or
// more while no other engine holds a live claim and its last claim found ready steps queued
// beyond those its recordings make ready, and in the recording otherwise (see placeClaims).
// Since a claim in the recording sees everything the recording made ready, the recorder then
// wakes the dispatcher only when the claim took as many steps as it asked for (there may be
// more), and no recording of the engine wakes its dispatcher a second time through its own
// notifications (see ownCompletions).
type recorder struct {
	e      *Engine
	in     chan result
	done   chan struct{}
	streak *dbretry.Streak
	// reconnected receives when the events hub reconnects: a recording backing off from a
	// lost database tries again at once.
	reconnected <-chan struct{}
	// beside is where ClaimsAuto claims (true: beside the recording, until a check says
	// otherwise), as of checked (zero: never checked).
	beside  bool
	checked time.Time
	// queued says whether, as the last claim of the recorder found, ready steps wait beyond
	// those the engine's recordings make ready (see placeClaims and noteClaim): true until a
	// claim finds otherwise.
	queued bool
}

// noteClaim notes what a claim of the recorder found (see placeClaims): beside a recording,
// which reads before the recording commits, a claim that took at least half of the asked steps
// found a queue of ready steps; in a recording, which asks for every step the engine can take,
// a claim that took all it asked for found one (it may have more), one that took fewer found
// none beyond what the recording made ready. Chains of steps, whose ready steps all come from
// recordings, thus claim in their recordings whatever their batches' size (40 chains of 50
// steps, batches of about 16: 14-72 % faster than claiming beside; BENCHMARKS.md, "Engine: a
// chain claims each step in the recording before it"), and a queue of tasks claims beside.
func (r *recorder) noteClaim(beside bool, asked, took int) {
	if asked <= 0 {
		return
	}
	if beside {
		r.queued = 2*took >= asked
		return
	}
	r.queued = took >= asked
}

// claimBesideMin is the smallest recorded batch for which ClaimsAuto claims beside the
// recording. A small batch records in about a millisecond, and a claim beside it, reading
// before the recording commits, cannot take the steps the recording makes ready: a chain of
// steps, recorded one step a batch, then needed a second claim after every recording, the
// dispatcher's, for the step that the claim in the recording takes at once (BENCHMARKS.md,
// "Engine: a chain claims each step in the recording before it").
const claimBesideMin = 8

// othersCheckInterval is how often, at most, a recorder with ClaimsAuto looks for other
// engines' live claims (one statement, reading the steps in process).
const othersCheckInterval = 250 * time.Millisecond

func newRecorder(e *Engine) *recorder {
	return &recorder{e: e, in: make(chan result, 2*(e.cfg.Workers+e.cfg.Prefetch)), done: make(chan struct{}), beside: true, queued: true,
		streak: dbretry.New(e.log, "orchestration: recording attempts", 50*time.Millisecond, 2*time.Second)}
}

// submit queues a result; it blocks while the queue is full, which holds the worker (and so
// further claims) back until the recorder catches up.
func (r *recorder) submit(res result) { r.in <- res }

// close stops the recorder once every queued result is recorded; it waits for that.
func (r *recorder) close() {
	close(r.in)
	<-r.done
}

// gatherWait is how long the recorder waits for the results of steps still running before it
// records a batch (see gather): about one commit, which a batch of noop steps takes to finish.
const gatherWait = time.Millisecond

// gather returns first and the results after it (up to maxRecordBatch): those waiting, and
// while workers still run steps that this batch will not record, those that arrive within
// gatherWait. The slots of a batch are reused by the steps claimed beside it (see recorder),
// so a batch that waits a moment for the steps that finish with it keeps the engine's steps
// moving together: one recording and one claim for all its workers rather than a pair for the
// few that were first, then another for the rest.
func (r *recorder) gather(first result) []result {
	batch := []result{first}
	var deadline <-chan time.Time
	for len(batch) < maxRecordBatch {
		var res result
		var ok bool
		select {
		case res, ok = <-r.in:
		default:
			if r.e.running.Load() <= 0 {
				return batch // no step is running: no result is on its way
			}
			if deadline == nil {
				t := time.NewTimer(gatherWait)
				defer t.Stop()
				deadline = t.C
			}
			select {
			case res, ok = <-r.in:
			case <-deadline:
				return batch
			}
		}
		if !ok {
			return batch
		}
		batch = append(batch, res)
	}
	return batch
}

func (r *recorder) run(reconnected <-chan struct{}) {
	r.reconnected = reconnected
	defer close(r.done)
	e := r.e
	for first := range r.in {
		batch := r.gather(first)
		slots := 0
		for _, res := range batch {
			if res.slot {
				slots++
			}
		}
		claim := 0
		if e.claiming.Load() {
			claim = min(slots, e.cfg.ClaimBatch, e.claimable(slots))
		}
		if claim > 0 && !r.placeClaims(len(batch)) {
			// The claim reads after the recording, in its transaction: it sees every step the
			// recording made ready, so it asks for as many as the engine can take, with the
			// free slots too; when it takes fewer, none is left for the dispatcher to claim
			// (what others make ready wakes it with their notifications), unless a failure was
			// recorded, whose retry time the dispatcher reads after a claim.
			if claim == slots {
				extra := e.reserveSlots(e.cfg.ClaimBatch - claim)
				claim, slots = claim+extra, slots+extra
			}
			runs, claimed := r.flush(batch, claim, true)
			e.startRuns(runs)
			e.releaseSlots(slots - len(runs))
			if claimed {
				r.noteClaim(false, claim, len(runs))
			}
			if claimed && len(runs) < claim && !e.retryDirty.Load() {
				continue
			}
		} else {
			claimed := r.claimBeside(claim)
			r.flush(batch, 0, true)
			if took, ok := <-claimed; ok {
				r.noteClaim(true, claim, took)
			}
			e.releaseSlots(slots - claim)
		}
		e.wake()
	}
}

// placeClaims reports whether the recorder claims beside its next recording, of batch
// attempts, (true) or in it (see recorder and Config.Claims). With ClaimsAuto, a batch of fewer
// than claimBesideMin attempts claims in its recording, and so does any batch while the last
// claim found no queue of ready steps beyond those the recordings make ready (see noteClaim):
// the claim beside a recording finds only such a queue. Otherwise it asks the database, at
// most every othersCheckInterval, whether another engine holds a live claim
// (store.OthersClaiming): beside while none does. A failed check keeps the last answer (beside
// at first): the recording that follows meets the same database and reports what failed.
func (r *recorder) placeClaims(batch int) bool {
	e := r.e
	switch e.cfg.Claims {
	case ClaimsBeside:
		return true
	case ClaimsInRecording:
		return false
	}
	if batch < claimBesideMin || !r.queued {
		return false
	}
	if time.Since(r.checked) < othersCheckInterval {
		return r.beside
	}
	r.checked = time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), claimTimeout)
	defer cancel()
	others, err := e.st.OthersClaiming(ctx, e.cfg.WorkerID)
	if err != nil {
		e.log.Debug("orchestration: looking for other engines' claims failed", "error", err)
		return r.beside
	}
	if r.beside == others {
		if others {
			e.log.Info("orchestration: another engine claims steps; claiming in the recordings' transactions")
		} else {
			e.log.Info("orchestration: no other engine claims steps; claiming beside the recordings")
		}
	}
	r.beside = !others
	return r.beside
}

// claimBeside claims up to n ready steps with n of the slots the recorder holds, in a
// goroutine, and returns a channel closed once the claim is over, after it has been sent the
// number of steps claimed (nothing when the claim failed or n was 0): its steps run, on their
// slots, and the slots it left over are freed. A claim that fails frees its slots: the
// dispatcher, woken, claims again and backs off while the database refuses (see dispatch).
func (r *recorder) claimBeside(n int) <-chan int {
	done := make(chan int, 1)
	if n <= 0 {
		close(done)
		return done
	}
	e := r.e
	go func() {
		defer close(done)
		runs, err := e.claim(context.Background(), n)
		if err != nil {
			e.log.Debug("orchestration: the claim beside a recording failed; the dispatcher claims again", "error", err)
		}
		e.startRuns(runs)
		if len(runs) < n {
			e.releaseSlots(n - len(runs))
			e.wake()
		}
		if err == nil {
			done <- len(runs)
		}
	}()
	return done
}

// flush records one batch, claims up to claim ready steps in the same transaction (see
// Config.Claims; none beside it), reports every outcome to the observer and returns
// the runs of the claimed steps, ready to run (see claimed), and whether the claim ran, after
// the recording, in its transaction, which committed (false when it claimed nothing). known
// says whether the recording may take the steps' current transitions from their claims (see
// recordBatch). When the database refuses the batch, it is recorded again without claiming
// and reading every current transition, and then, if still refused, each of its results is
// recorded alone, so that one result the database refuses cannot take the others down with
// it; a batch that failed for want of a database is not split (each result would wait as long
// again).
func (r *recorder) flush(batch []result, claim int, known bool) ([]*run, bool) {
	e := r.e
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	began := time.Now()
	ctx, spans := startRecord(ctx, batch)
	// A lost connection (a database restart, a failover) is retried, with backoff, for up to
	// the timeout above rather than leaving the steps to their leases: retrying is safe, since
	// a batch that did commit has released its claims, and a second recording of it finds
	// them gone.
	var kept map[string]bool
	var c claimed
	err := dbretry.Do(ctx, r.streak, r.reconnected, func() error {
		var err error
		kept, c, err = e.recordBatch(ctx, batch, claim, known)
		return err
	})
	endRecord(spans, err)
	if err != nil && !dbretry.Transient(err) {
		if claim > 0 || known {
			e.log.Warn("orchestration: recording a batch failed; recording it again without claiming, reading every step",
				"attempts", len(batch), "error", err)
			runs, _ := r.flush(batch, 0, false)
			return runs, false
		}
		if len(batch) > 1 {
			e.log.Warn("orchestration: recording a batch failed; recording its attempts one by one",
				"attempts", len(batch), "error", err)
			for _, res := range batch {
				r.flush([]result{res}, 0, false)
			}
			return nil, false
		}
	}
	if err != nil {
		e.log.Error("orchestration: recording attempts failed; the lease will recover their steps",
			"attempts", len(batch), "error", err)
	}
	for _, res := range batch {
		ok := kept[res.step.Token]
		if res.runErr != nil || err != nil {
			e.retryDirty.Store(true)
		}
		e.observeFinished(res.name, finishOutcome(res.runErr, ok, err), res.elapsed)
		log := res.log
		if log == nil && (err != nil || !ok) {
			log = e.stepLog(res.step)
		}
		switch {
		case err != nil:
			log.Debug("orchestration: attempt not recorded; the lease will recover the step", "error", err)
		case !ok:
			log.Info("orchestration: claim lost before recording, result discarded")
		}
	}
	if claim == 0 {
		return nil, false
	}
	runs, err := e.claimed(ctx, began, claim, c, err)
	return runs, err == nil
}

// stepOutcome is what one attempt writes to its step row, and the move of its step.
type stepOutcome struct {
	store.StepOutcome
	move sm.Move
}

// recordBatch records finished attempts in one transaction, with a constant number of
// statements however many it records, and, on the busy path (known), claims up to claim ready
// steps in the same transaction (only where Config.Claims places claims there), the steps the
// batch made ready among them; the reading path (a batch the database refused once: see
// flush) never claims. On the busy path the transaction is one round trip: the recording
// alone is a statement of its own, and with a claim the two statements go as one pipeline
// (recordAndClaim). It returns the claims whose attempts were recorded (kept, by claim token)
// and what it claimed, which the caller hands to claimed.
//
// With known (the busy path), one call records and settles (store.RecordAndSettle, migration
// 00066): the tasks of the batch are locked first, in id order (the engine's lock order is
// task, then step), so the recordings of one task's steps, in this engine or another, are
// serialised and the last one sees every result: a task is completed exactly once; the steps
// whose claims are still held (same token, still in_process) are locked and get their
// outcomes; each moves from in_progress (its current transition while its claim is held) as
// its outcome says, with the metadata encoded here by the state machine, which checks the
// move; and their tasks are settled from their execution contexts (see FinalizeTask). An
// attempt whose claim was taken away (cancelled, recovered) is discarded, not written.
//
// Without known, the same is done statement by statement through the state machine, which
// reads every step's current transition and refuses a move the transition table does not
// allow, and the tasks are settled by finalizeTasks.
func (e *Engine) recordBatch(ctx context.Context, batch []result, claim int, known bool) (map[string]bool, claimed, error) {
	plan, err := e.planRecord(batch, known)
	if err != nil {
		return nil, claimed{}, fmt.Errorf("recording %d attempts: %w", len(batch), err)
	}
	// The moves to complete the recording writes are the engine's own (see ownCompletions):
	// noted before it is sent, so that their notifications find them, and forgotten where it
	// did not write them.
	e.own.add(plan.completions())
	kept, c, err := e.sendRecord(ctx, batch, plan, claim)
	e.own.remove(plan.unwritten(kept, err))
	return kept, c, err
}

// sendRecord records batch as planned by p, and claims up to claim ready steps in the same
// transaction (see recordBatch).
func (e *Engine) sendRecord(ctx context.Context, batch []result, plan recordPlan, claim int) (map[string]bool, claimed, error) {
	began := time.Now()
	if claim > 0 && plan.held != nil {
		kept, c, err := e.recordAndClaim(ctx, plan, claim)
		if err == nil {
			e.observeCall(CallRecordAndClaim, len(kept), len(c.steps), began)
		}
		return kept, c, err
	}
	// A recording on the busy path is one statement (RecordAndSettle): it runs as a
	// transaction of its own, without BEGIN and COMMIT.
	inTx := e.st.EngineTx
	if plan.held != nil {
		inTx = e.st.EngineStatement
	}
	kept := map[string]bool{}
	err := inTx(ctx, e.cfg.AsyncCommit, func(tx *store.Store) error {
		clear(kept)
		return e.recordIn(ctx, tx, batch, plan, kept)
	})
	if err != nil {
		return nil, claimed{}, fmt.Errorf("recording %d attempts: %w", len(batch), err)
	}
	e.observeCall(CallRecord, len(kept), 0, began)
	return kept, claimed{}, nil
}

// recordAndClaim records a batch on the busy path, as planned by p, and claims up to claim
// ready steps after it, in one transaction sent as one round trip (store.RecordAndClaim). The
// claim has committed before its runs are watched: they are watched with the events since it
// began (see claimWatch).
func (e *Engine) recordAndClaim(ctx context.Context, p recordPlan, claim int) (map[string]bool, claimed, error) {
	began := e.watcher.begin()
	defer e.watcher.end(began)
	tokens, rows, err := e.st.RecordAndClaim(ctx, e.cfg.AsyncCommit, p.taskIDs, p.held, p.busy, e.claimRequest(claim))
	if err != nil {
		return nil, claimed{}, fmt.Errorf("recording %d attempts and claiming ready steps: %w", len(p.held), err)
	}
	kept := make(map[string]bool, len(tokens))
	for _, t := range tokens {
		kept[t] = true
	}
	return kept, e.claimedRows(rows, began), nil
}

// recordPlan is what a batch's recording writes, encoded before its transaction begins: the
// batch's tasks (ascending, distinct), each attempt's outcome, and, for the busy path (known),
// each outcome with its move's metadata, checked and encoded by the state machine, and the
// batch's tasks of which the engine still holds claims of other steps (busy: their settling
// waits, see store.RecordAndSettle).
type recordPlan struct {
	taskIDs  []int64
	outcomes []stepOutcome
	held     []store.HeldOutcome // nil: record through the state machine (see recordReading)
	busy     store.Busy
}

// completes says whether the outcome moves its step to complete.
func (o stepOutcome) completes() bool { return o.move.To == models.StateComplete }

// completions returns the steps the recording moves to complete.
func (p recordPlan) completions() []int64 {
	var ids []int64
	for _, o := range p.outcomes {
		if o.completes() {
			ids = append(ids, o.StepID)
		}
	}
	return ids
}

// unwritten returns the steps of completions whose moves a recording that returned kept (the
// tokens of the attempts it wrote) and err did not write: all of them when it failed, else
// those whose claims it did not find held.
func (p recordPlan) unwritten(kept map[string]bool, err error) []int64 {
	var ids []int64
	for _, o := range p.outcomes {
		if o.completes() && (err != nil || !kept[o.Token]) {
			ids = append(ids, o.StepID)
		}
	}
	return ids
}

// planRecord encodes what recording batch writes (see recordPlan).
func (e *Engine) planRecord(batch []result, known bool) (recordPlan, error) {
	p := recordPlan{taskIDs: make([]int64, 0, len(batch)), outcomes: make([]stepOutcome, len(batch))}
	for _, res := range batch {
		p.taskIDs = append(p.taskIDs, res.step.TaskID)
	}
	slices.Sort(p.taskIDs)
	p.taskIDs = slices.Compact(p.taskIDs)
	if known {
		p.held = make([]store.HeldOutcome, len(batch))
		p.busy = e.watcher.witnesses(p.taskIDs)
	}
	for i, res := range batch {
		o, err := e.outcome(res)
		if err != nil {
			return recordPlan{}, err
		}
		p.outcomes[i] = o
		if known {
			meta, err := sm.Metadata(sm.KindStep, models.StateInProgress, o.move.To, o.move.Metadata)
			if err != nil {
				return recordPlan{}, fmt.Errorf("step %d: %w", o.StepID, err)
			}
			p.held[i] = store.HeldOutcome{StepOutcome: o.StepOutcome, ToState: string(o.move.To), Metadata: meta}
		}
	}
	return p, nil
}

// recordIn records batch, as planned by p, in tx (see recordBatch), and adds the tokens of
// the claims it found held, whose outcomes it wrote, to kept.
func (e *Engine) recordIn(ctx context.Context, tx *store.Store, batch []result, p recordPlan, kept map[string]bool) error {
	if p.held == nil {
		return e.recordReading(ctx, tx, batch, p, kept)
	}
	recorded, err := tx.RecordAndSettle(ctx, p.taskIDs, p.held, p.busy)
	if err != nil {
		return fmt.Errorf("recording attempt outcomes and settling their tasks: %w", err)
	}
	for _, t := range recorded {
		kept[t] = true
	}
	return nil
}

// recordReading records a batch in tx through the state machine (see recordBatch, without
// known): the tasks and the held claims are locked and the outcomes written
// (store.RecordHeldAttempts), the held steps moved in one batch of transitions, their current
// transitions read, and their tasks settled (finalizeTasks). It adds the tokens of the claims
// it found held to kept.
func (e *Engine) recordReading(ctx context.Context, tx *store.Store, batch []result, p recordPlan, kept map[string]bool) error {
	written := make([]store.StepOutcome, len(p.outcomes))
	for i, o := range p.outcomes {
		written[i] = o.StepOutcome
	}
	recorded, err := tx.RecordHeldAttempts(ctx, p.taskIDs, written)
	if err != nil {
		return fmt.Errorf("locking tasks and claimed steps, recording attempt outcomes: %w", err)
	}
	// kept holds the tokens of the claims still held, whose outcomes were written: of two
	// results of one step in a batch (an attempt whose claim was lost and recovered, and the
	// step's next attempt), only the one of the claim still held is recorded.
	for _, t := range recorded {
		kept[t] = true
	}
	moves := make([]sm.Move, 0, len(batch))
	var settle []int64
	for i, res := range batch {
		if kept[res.step.Token] {
			moves = append(moves, p.outcomes[i].move)
			settle = append(settle, res.step.TaskID)
		}
	}
	refused, err := sm.TransitionHeldStepsWhereAllowed(ctx, tx, moves, sm.Known{})
	if err != nil {
		return err
	}
	if len(refused) > 0 {
		// Only an engine holding the claim moves an in_progress step, so this does not
		// happen. The outcome is already written: the batch fails, and its results are
		// recorded one by one (see flush), this step's left to its lease.
		return fmt.Errorf("finished step %d refused its move: %w", refused[0].ID, refused[0])
	}
	slices.Sort(settle)
	_, err = finalizeTasks(ctx, tx, slices.Compact(settle))
	return err
}

// outcome turns a handler's result into what its step records: complete with the results
// (results that are not valid JSON make a permanent failure), or error with the failure.
func (e *Engine) outcome(res result) (stepOutcome, error) {
	s := res.step
	meta := map[string]any{"worker_id": e.cfg.WorkerID, "attempt": s.Attempt, "duration_ms": res.elapsed.Milliseconds()}
	runErr := res.runErr
	if runErr == nil {
		results := res.out.Results
		if len(results) == 0 {
			results = json.RawMessage(`{}`)
		}
		if json.Valid(results) {
			return stepOutcome{StepOutcome: store.StepOutcome{StepID: s.StepID, Token: s.Token, Success: true, Results: results},
				move: sm.Move{ID: s.StepID, To: models.StateComplete, TaskID: s.TaskID, Metadata: meta}}, nil
		}
		runErr = handler.Permanent(fmt.Errorf("handler returned results that are not valid JSON"))
	}
	permanent := handler.IsPermanent(runErr)
	var backoff *int
	if d, ok := handler.RetryAfter(runErr); ok {
		secs := min(int(math.Ceil(d.Seconds())), int(handler.MaxRetryAfter/time.Second))
		backoff = &secs
	}
	failure := map[string]any{"error": runErr.Error(), "attempt": s.Attempt, "permanent": permanent}
	if backoff != nil {
		failure["retry_after_seconds"] = *backoff
	}
	resJSON, err := json.Marshal(failure)
	if err != nil {
		return stepOutcome{}, fmt.Errorf("encoding failure of step %d: %w", s.StepID, err)
	}
	for k, v := range failure {
		meta[k] = v
	}
	return stepOutcome{StepOutcome: store.StepOutcome{StepID: s.StepID, Token: s.Token, Results: resJSON, Backoff: backoff, Permanent: permanent},
		move: sm.Move{ID: s.StepID, To: models.StateError, TaskID: s.TaskID, Metadata: meta}}, nil
}
