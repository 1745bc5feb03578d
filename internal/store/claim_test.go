package store

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/taskerhq/tasker/internal/database"
)

// seedHistory writes, with plain SQL, stuck tasks of eight steps each, then the live work:
//   - stuck: tasks that ran and stopped, in turn in error, cancelled and resolved_manually
//     (their transitions written in one statement, as the engine writes them): three pending
//     steps, two in error with their retries exhausted, two in error waiting out an hour's
//     backoff, one resolved_manually (not processed). None of them can run.
//   - live: ten new tasks of one pending step each (ready), and one task in_progress with a
//     step waiting out an hour's backoff, a step whose retries are exhausted, and a pending
//     step whose parent is the waiting one.
func seedHistory(t *testing.T, s *Store, stuck int) {
	t.Helper()
	stmts := []string{
		`INSERT INTO tasker_dependent_systems (name) VALUES ('history')`,
		`INSERT INTO tasker_named_tasks (task_namespace_id, name) VALUES (1, 'history')`,
		`INSERT INTO tasker_named_steps (dependent_system_id, name)
		 SELECT d.dependent_system_id, 'h' || i FROM tasker_dependent_systems d, generate_series(1, 8) i
		 WHERE d.name = 'history'`,
		`INSERT INTO tasker_tasks (named_task_id)
		 SELECT named_task_id FROM tasker_named_tasks, generate_series(1, @stuck) WHERE name = 'history'`,
		`INSERT INTO tasker_workflow_steps (task_id, named_step_id, attempts, last_attempted_at, backoff_request_seconds)
		 SELECT t.task_id, ns.named_step_id,
		        CASE WHEN ns.name IN ('h4', 'h5') THEN 3 WHEN ns.name IN ('h6', 'h7') THEN 1 ELSE 0 END,
		        CASE WHEN ns.name IN ('h4', 'h5', 'h6', 'h7') THEN now() END,
		        CASE WHEN ns.name IN ('h6', 'h7') THEN 3600 END
		 FROM tasker_tasks t CROSS JOIN tasker_named_steps ns
		 WHERE ns.name LIKE 'h_' ORDER BY t.task_id, ns.name`,
		`INSERT INTO tasker_workflow_step_transitions (workflow_step_id, to_state, from_state, sort_key, most_recent)
		 SELECT ws.workflow_step_id, CASE WHEN ns.name = 'h8' THEN 'resolved_manually' ELSE 'error' END,
		        'pending', 1, true
		 FROM tasker_workflow_steps ws JOIN tasker_named_steps ns ON ns.named_step_id = ws.named_step_id
		 WHERE ns.name IN ('h4', 'h5', 'h6', 'h7', 'h8')`,
		`INSERT INTO tasker_task_transitions (task_id, to_state, from_state, sort_key, most_recent)
		 SELECT task_id, 'in_progress', NULL, 1, false FROM tasker_tasks
		 UNION ALL
		 SELECT task_id, (ARRAY['error', 'cancelled', 'resolved_manually'])[task_id % 3 + 1], 'in_progress', 2, true
		 FROM tasker_tasks`,
		// The live work, after the history (the claim walks the oldest steps first).
		`INSERT INTO tasker_tasks (named_task_id)
		 SELECT named_task_id FROM tasker_named_tasks, generate_series(1, 11) WHERE name = 'history'`,
		`INSERT INTO tasker_workflow_steps (task_id, named_step_id)
		 SELECT t.task_id, ns.named_step_id FROM tasker_tasks t, tasker_named_steps ns
		 WHERE t.task_id > @stuck AND t.task_id <= @stuck + 10 AND ns.name = 'h1'`,
		`INSERT INTO tasker_workflow_steps (task_id, named_step_id, attempts, last_attempted_at, backoff_request_seconds)
		 SELECT @stuck + 11, ns.named_step_id, CASE ns.name WHEN 'h1' THEN 1 WHEN 'h2' THEN 3 ELSE 0 END,
		        CASE WHEN ns.name IN ('h1', 'h2') THEN now() END, CASE ns.name WHEN 'h1' THEN 3600 END
		 FROM tasker_named_steps ns WHERE ns.name IN ('h1', 'h2', 'h3') ORDER BY ns.name`,
		`INSERT INTO tasker_workflow_step_transitions (workflow_step_id, to_state, from_state, sort_key, most_recent)
		 SELECT ws.workflow_step_id, 'error', 'in_progress', 1, true
		 FROM tasker_workflow_steps ws JOIN tasker_named_steps ns ON ns.named_step_id = ws.named_step_id
		 WHERE ws.task_id = @stuck + 11 AND ns.name IN ('h1', 'h2')`,
		`INSERT INTO tasker_workflow_step_edges (from_step_id, to_step_id)
		 SELECT a.workflow_step_id, b.workflow_step_id
		 FROM tasker_workflow_steps a, tasker_workflow_steps b
		 WHERE a.task_id = @stuck + 11 AND b.task_id = @stuck + 11
		   AND a.named_step_id = (SELECT named_step_id FROM tasker_named_steps WHERE name = 'h1')
		   AND b.named_step_id = (SELECT named_step_id FROM tasker_named_steps WHERE name = 'h3')`,
		`INSERT INTO tasker_task_transitions (task_id, to_state, from_state, sort_key, most_recent)
		 VALUES (@stuck + 11, 'in_progress', NULL, 1, true)`,
	}
	for _, q := range stmts {
		var args []any
		if strings.Contains(q, "@stuck") {
			args = append(args, map[string]any{"stuck": stuck})
		}
		if err := s.db.Exec(q, args...).Error; err != nil {
			t.Fatalf("seeding: %v\n%s", err, q)
		}
	}
	// The steady state: the index entries of the steps' versions before their task stopped
	// (the trigger rewrote them) are gone, as autovacuum leaves them.
	if err := s.db.Exec(`VACUUM ANALYZE`).Error; err != nil {
		t.Fatal(err)
	}
}

var errRollback = errors.New("rolled back")

// scan is what EXPLAIN (ANALYZE, BUFFERS) says of one engine statement: the rows its walk of
// a partial index visited (returned or removed by the scan's filter, over all loops), the
// shared buffers the statement touched, how many rows of the readiness view it computed
// (the loops of its subquery r), how many times it read a task's current state (the loops of
// the probes of tasker_task_transitions_most_recent_idx) and a step row by its primary key,
// and how many step rows it fetched by their ctid.
type scan struct {
	Candidates int
	Buffers    int
	Readiness  int
	TaskStates int
	StepKeys   int
	StepTIDs   int
}

// explainWalk runs q (with args) under EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) in an engine
// transaction that is rolled back, and reports the walk of index; it fails the test when the
// statement does not walk that index.
func explainWalk(t *testing.T, s *Store, index, q string, args any) scan {
	t.Helper()
	ctx := context.Background()
	var raw string
	err := s.EngineTx(ctx, false, func(tx *Store) error {
		var params []any
		if args != nil {
			params = append(params, args)
		}
		if err := tx.conn(ctx).Raw(`EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) `+q, params...).Row().Scan(&raw); err != nil {
			return err
		}
		return errRollback
	})
	if !errors.Is(err, errRollback) {
		t.Fatal(err)
	}
	type node struct {
		NodeType    string  `json:"Node Type"`
		Relation    string  `json:"Relation Name"`
		Alias       string  `json:"Alias"`
		IndexName   string  `json:"Index Name"`
		ActualRows  float64 `json:"Actual Rows"`
		ActualLoops float64 `json:"Actual Loops"`
		Removed     float64 `json:"Rows Removed by Filter"`
		SharedHit   int     `json:"Shared Hit Blocks"`
		SharedRead  int     `json:"Shared Read Blocks"`
		Plans       []json.RawMessage
	}
	var top []struct{ Plan json.RawMessage }
	if err := json.Unmarshal([]byte(raw), &top); err != nil || len(top) != 1 {
		t.Fatalf("reading the plan: %v\n%s", err, raw)
	}
	var out scan
	found := false
	var walk func(json.RawMessage, bool)
	walk = func(m json.RawMessage, root bool) {
		var n node
		if err := json.Unmarshal(m, &n); err != nil {
			t.Fatal(err)
		}
		if root {
			out.Buffers = n.SharedHit + n.SharedRead
		}
		switch {
		case n.NodeType == "Subquery Scan" && n.Alias == "r":
			out.Readiness += int(n.ActualLoops)
		case n.IndexName == "tasker_task_transitions_most_recent_idx":
			out.TaskStates += int(n.ActualLoops)
		case n.IndexName == "tasker_workflow_steps_pkey":
			out.StepKeys += int(n.ActualLoops)
		case n.NodeType == "Tid Scan" && n.Relation == "tasker_workflow_steps":
			out.StepTIDs += int(n.ActualLoops)
		}
		if n.IndexName == index {
			found = true
			out.Candidates += int((n.ActualRows + n.Removed) * n.ActualLoops)
		}
		for _, p := range n.Plans {
			walk(p, false)
		}
	}
	walk(top[0].Plan, true)
	if !found {
		t.Fatalf("the statement does not walk %s:\n%s", index, raw)
	}
	return out
}

// seed runs stmts, in order, failing the test at the first that fails.
func seed(t testing.TB, s *Store, stmts ...string) {
	t.Helper()
	for _, q := range stmts {
		if err := s.db.Exec(q).Error; err != nil {
			t.Fatalf("seeding: %v\n%s", err, q)
		}
	}
}

// readySteps lists the steps the readiness view says are ready_for_execution, of tasks that
// are pending or in_progress: what the claim must claim.
func readySteps(t *testing.T, s *Store) []int64 {
	t.Helper()
	var ids []int64
	if err := s.db.Raw(`SELECT r.workflow_step_id FROM tasker_step_readiness_statuses r
		WHERE r.ready_for_execution
		  AND coalesce((SELECT tt.to_state FROM tasker_task_transitions tt
		                WHERE tt.task_id = r.task_id AND tt.most_recent), 'pending') IN ('pending', 'in_progress')
		ORDER BY 1`).Scan(&ids).Error; err != nil {
		t.Fatal(err)
	}
	return ids
}

// claimParams are the claim statement's parameters (see ClaimAndStart): n steps for worker,
// with a lease of leaseMS milliseconds, started with startMeta(worker).
func claimParams(n int, worker string, leaseMS int64) map[string]any {
	m := startMeta(worker)
	return map[string]any{"n": n, "worker": worker, "lease_ms": leaseMS,
		"step_metadata": string(m.Step), "retry_metadata": string(m.Retry), "task_metadata": string(m.Task)}
}

// claimAll claims every step it can (in batches of 100) and returns their ids, ascending.
func claimAll(t *testing.T, s *Store) []int64 {
	t.Helper()
	var ids []int64
	for {
		rows, err := s.ClaimAndStart(context.Background(), ClaimRequest{N: 100, Worker: "test", Lease: time.Minute, Start: startMeta("test")})
		if err != nil {
			t.Fatal(err)
		}
		if len(rows) == 0 {
			break
		}
		for _, r := range rows {
			ids = append(ids, r.StepID)
		}
	}
	slices.Sort(ids)
	return ids
}

// TestClaimWorkDoesNotGrowWithStuckHistory: with 10 and with 2,000 stuck tasks (16,000 steps
// that can never run: pending steps of failed, cancelled and resolved tasks, exhausted steps,
// steps waiting out a backoff, resolved steps) before ten ready steps, the claim's walk returns
// the same candidates (the live work only) and touches about the same buffers, and so does the
// next-retry query's; and the claim claims exactly the steps the readiness view says are ready.
func TestClaimWorkDoesNotGrowWithStuckHistory(t *testing.T) {
	claimArgs := claimParams(20, "explain", 60000)
	measure := func(stuck int) (claim, retry scan) {
		s, _ := open(t)
		seedHistory(t, s, stuck)
		claim = explainWalk(t, s, "tasker_workflow_steps_runnable_idx", claimSQL, claimArgs)
		retry = explainWalk(t, s, "tasker_workflow_steps_retry_waiting_idx", nextRetrySQL, nil)
		t.Logf("%d stuck tasks: claim %+v, next retry %+v", stuck, claim, retry)

		ready := readySteps(t, s)
		if len(ready) != 10 {
			t.Fatalf("%d stuck tasks: the view says %d steps are ready, want the 10 live ones: %v", stuck, len(ready), ready)
		}
		if got := claimAll(t, s); !slices.Equal(got, ready) {
			t.Errorf("%d stuck tasks: claimed %v, the view's ready steps are %v", stuck, got, ready)
		}
		return claim, retry
	}
	smallClaim, smallRetry := measure(10)
	bigClaim, bigRetry := measure(2000)
	// The live work: ten ready steps, and the in_progress task's waiting and blocked steps.
	if smallClaim.Candidates != 12 || bigClaim.Candidates != 12 {
		t.Errorf("the claim walked %d candidates with 10 stuck tasks and %d with 2,000, want 12 both times",
			smallClaim.Candidates, bigClaim.Candidates)
	}
	if smallRetry.Candidates != 1 || bigRetry.Candidates != 1 {
		t.Errorf("the next-retry query walked %d candidates with 10 stuck tasks and %d with 2,000, want 1 both times",
			smallRetry.Candidates, bigRetry.Candidates)
	}
	// Deeper indexes may cost a page per probe; a walk of the history would cost thousands.
	if bigClaim.Buffers > smallClaim.Buffers*3/2 {
		t.Errorf("the claim touched %d buffers with 2,000 stuck tasks against %d with 10", bigClaim.Buffers, smallClaim.Buffers)
	}
	if bigRetry.Buffers > smallRetry.Buffers*3/2 {
		t.Errorf("the next-retry query touched %d buffers with 2,000 stuck tasks against %d with 10",
			bigRetry.Buffers, smallRetry.Buffers)
	}
}

// TestClaimComputesReadinessOnlyWhereParentsAreDone: in a queue of chains (a root step and
// three steps after it, each after the one before), the claim walks every candidate in id
// order, but computes the readiness view's row only for the candidates whose parents are all
// complete or resolved_manually: the roots, and the steps after a finished or resolved step.
// It still claims exactly what the view says is ready.
func TestClaimComputesReadinessOnlyWhereParentsAreDone(t *testing.T) {
	s, _ := open(t)
	stmts := []string{
		`INSERT INTO tasker_dependent_systems (name) VALUES ('chains')`,
		`INSERT INTO tasker_named_tasks (task_namespace_id, name) VALUES (1, 'chain')`,
		`INSERT INTO tasker_named_steps (dependent_system_id, name)
		 SELECT d.dependent_system_id, 'c' || i FROM tasker_dependent_systems d, generate_series(1, 4) i`,
		`INSERT INTO tasker_tasks (named_task_id) SELECT named_task_id FROM tasker_named_tasks, generate_series(1, 40)`,
		`INSERT INTO tasker_workflow_steps (task_id, named_step_id)
		 SELECT t.task_id, ns.named_step_id FROM tasker_tasks t CROSS JOIN tasker_named_steps ns ORDER BY t.task_id, ns.name`,
		`INSERT INTO tasker_workflow_step_edges (from_step_id, to_step_id)
		 SELECT a.workflow_step_id, b.workflow_step_id
		 FROM tasker_workflow_steps a JOIN tasker_named_steps an ON an.named_step_id = a.named_step_id,
		      tasker_workflow_steps b JOIN tasker_named_steps bn ON bn.named_step_id = b.named_step_id
		 WHERE a.task_id = b.task_id AND substr(bn.name, 2)::int = substr(an.name, 2)::int + 1`,
		// In tasks 1 and 2 the root has run (complete, processed); in task 3 an operator
		// resolved it: their second steps are ready, and so are the other tasks' roots.
		`UPDATE tasker_workflow_steps ws SET processed = true, attempts = 1 FROM tasker_named_steps ns
		 WHERE ns.named_step_id = ws.named_step_id AND ns.name = 'c1' AND ws.task_id IN (1, 2)`,
		`INSERT INTO tasker_workflow_step_transitions (workflow_step_id, to_state, from_state, sort_key, most_recent)
		 SELECT ws.workflow_step_id, CASE WHEN ws.task_id = 3 THEN 'resolved_manually' ELSE 'complete' END,
		        'pending', 1, true
		 FROM tasker_workflow_steps ws JOIN tasker_named_steps ns ON ns.named_step_id = ws.named_step_id
		 WHERE ns.name = 'c1' AND ws.task_id IN (1, 2, 3)`,
		`INSERT INTO tasker_task_transitions (task_id, to_state, from_state, sort_key, most_recent)
		 SELECT task_id, 'in_progress', NULL, 1, true FROM tasker_tasks WHERE task_id IN (1, 2, 3)`,
		`VACUUM ANALYZE`,
	}
	seed(t, s, stmts...)
	ready := readySteps(t, s)
	// Tasks 1-3: their second step (the root is done or resolved); tasks 4-40: their root.
	if len(ready) != 40 {
		t.Fatalf("the view says %d steps are ready, want 40: %v", len(ready), ready)
	}
	// The first 20 ready steps are the second steps of tasks 1-3 and the roots of tasks 4-20.
	// To find them the walk passes 75 candidates: the last three steps of tasks 1-3, the
	// resolved root of task 3 (unprocessed, so still a candidate), the four steps of tasks
	// 4-19, the root of task 20, and its second step (the walk is pulled one row ahead). Only
	// 21 have no unfinished parent: the 20 ready ones and task 3's resolved root, which the
	// view itself refuses.
	walk := explainWalk(t, s, "tasker_workflow_steps_runnable_idx", claimSQL,
		claimParams(20, "explain", 60000))
	if walk.Candidates != 75 || walk.Readiness != 21 {
		t.Errorf("the claim walked %d candidates and computed the readiness of %d, want 75 and 21 (%+v)",
			walk.Candidates, walk.Readiness, walk)
	}
	// Only those 21 read their task's state, once each (the view may refuse one first). The
	// 20 it locks are fetched by the ctid the walk found them at; steps are probed by their key
	// only by the view (its row of each of the 21), the update (the 20 claimed) and the
	// parents' results (the finished roots of tasks 1-3): 44.
	if walk.TaskStates > walk.Readiness || walk.StepTIDs != 20 || walk.StepKeys != 44 {
		t.Errorf("the claim read %d task states, fetched %d steps by ctid and probed %d by key, want at most 21, 20 and 44 (%+v)",
			walk.TaskStates, walk.StepTIDs, walk.StepKeys, walk)
	}
	if got := claimAll(t, s); !slices.Equal(got, ready) {
		t.Errorf("claimed %v, the view's ready steps are %v", got, ready)
	}
}

// TestExpiredClaimsWalkOnlyTheRunningSteps: recovery's query walks the index of the claimed
// unfinished steps, so with 2,000 stuck tasks of history it reads as many candidates as there
// are claims, and returns the expired ones, the oldest lease first.
func TestExpiredClaimsWalkOnlyTheRunningSteps(t *testing.T) {
	s, _ := open(t)
	seedHistory(t, s, 2000)
	ctx := context.Background()
	var expiredFirst []int64
	for _, lease := range []time.Duration{-time.Hour, -time.Minute, time.Hour} {
		rows, err := s.ClaimAndStart(ctx, ClaimRequest{N: 3, Worker: "test", Lease: lease, Start: startMeta("test")})
		if err != nil || len(rows) != 3 {
			t.Fatalf("claiming 3 steps: %d, %v", len(rows), err)
		}
		if lease < 0 {
			for _, r := range rows {
				expiredFirst = append(expiredFirst, r.StepID)
			}
		}
	}
	walk := explainWalk(t, s, "tasker_workflow_steps_claimed_idx", expiredClaimsSQL, 100)
	if walk.Candidates != 9 {
		t.Errorf("recovery walked %d claimed steps, want the 9 claims (%+v)", walk.Candidates, walk)
	}
	expired, err := s.ExpiredClaims(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	var got []int64
	for _, c := range expired {
		got = append(got, c.StepID)
	}
	// Within one claim the leases are equal; across claims the older lease comes first.
	if len(got) != 6 || !sameSet(got[:3], expiredFirst[:3]) || !sameSet(got[3:], expiredFirst[3:]) {
		t.Errorf("expired claims %v, want %v (the hour-old leases first)", got, expiredFirst)
	}
}

// sameSet reports whether a and b hold the same ids.
func sameSet(a, b []int64) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// TestTaskInactiveFollowsTheTaskState: a task's transition sets task_inactive on its
// unprocessed steps, so that a failed task that an operator sets back to pending has its
// steps claimed again, and a task that fails again drops out of the claim's walk.
func TestTaskInactiveFollowsTheTaskState(t *testing.T) {
	s, _ := open(t)
	seedHistory(t, s, 3)
	// The stuck task in error (seedHistory puts the stuck tasks in error, cancelled and resolved_manually in turn).
	var task int64
	if err := s.db.Raw(`SELECT task_id FROM tasker_task_transitions WHERE most_recent AND to_state = 'error'
		ORDER BY task_id LIMIT 1`).Row().Scan(&task); err != nil {
		t.Fatal(err)
	}
	inactive := func() []bool {
		var flags []bool
		if err := s.db.Raw(`SELECT task_inactive FROM tasker_workflow_steps WHERE task_id = ? AND NOT processed
			ORDER BY workflow_step_id`, task).Scan(&flags).Error; err != nil {
			t.Fatal(err)
		}
		return flags
	}
	move := func(to string) {
		t.Helper()
		if err := s.Tx(context.Background(), func(tx *Store) error {
			if err := tx.db.Exec(`UPDATE tasker_task_transitions SET most_recent = false WHERE task_id = ? AND most_recent`,
				task).Error; err != nil {
				return err
			}
			return tx.db.Exec(`INSERT INTO tasker_task_transitions (task_id, to_state, sort_key, most_recent)
				SELECT ?, ?, max(sort_key) + 1, true FROM tasker_task_transitions WHERE task_id = ?`, task, to, task).Error
		}); err != nil {
			t.Fatal(err)
		}
	}
	if got := inactive(); len(got) != 8 || slices.Contains(got, false) {
		t.Fatalf("the steps of a task in error have task_inactive %v, want 8 times true", got)
	}
	move("pending")
	if got := inactive(); len(got) != 8 || slices.Contains(got, true) {
		t.Fatalf("the steps of a task back to pending have task_inactive %v, want 8 times false", got)
	}
	ready := readySteps(t, s)
	if len(ready) != 13 { // the 10 live steps and the task's three pending ones
		t.Fatalf("the view says %d steps are ready, want 13: %v", len(ready), ready)
	}
	var claimed []int64
	if err := s.Tx(context.Background(), func(tx *Store) error {
		claimed = claimAll(t, tx)
		return errRollback
	}); !errors.Is(err, errRollback) {
		t.Fatal(err)
	}
	if !slices.Equal(claimed, ready) {
		t.Errorf("claimed %v, the view's ready steps are %v", claimed, ready)
	}
	move("error")
	if got := inactive(); len(got) != 8 || slices.Contains(got, false) {
		t.Fatalf("the steps of a task in error again have task_inactive %v, want 8 times true", got)
	}
	want := readySteps(t, s)
	if got := claimAll(t, s); len(got) != 10 || !slices.Equal(got, want) {
		t.Errorf("claimed %v, the view's ready steps are %v (want the 10 live ones)", got, want)
	}
}

// TestRenewLeasesAndClaimsHeldAnswerForTheHeldClaimsOnly: of three claimed steps, one whose
// token was replaced (as by another engine's recovery) and one that finished, only the one
// still held is renewed and reported held, each statement answering for every step at once.
func TestRenewLeasesAndClaimsHeldAnswerForTheHeldClaimsOnly(t *testing.T) {
	t.Parallel()
	s, trace := open(t)
	seedHistory(t, s, 0)
	ctx := context.Background()
	claimed, err := s.ClaimAndStart(ctx, ClaimRequest{N: 3, Worker: "test", Lease: time.Minute, Start: startMeta("test")})
	if err != nil || len(claimed) != 3 {
		t.Fatalf("claimed %d steps (%v), want 3", len(claimed), err)
	}
	ids, tokens := make([]int64, 3), make([]string, 3)
	for i, c := range claimed {
		ids[i], tokens[i] = c.StepID, c.Token
	}
	if err := s.db.Exec(`UPDATE tasker_workflow_steps SET claim_token = gen_random_uuid() WHERE workflow_step_id = ?`, ids[1]).Error; err != nil {
		t.Fatal(err)
	}
	if err := s.db.Exec(`UPDATE tasker_workflow_steps SET in_process = false, claim_token = NULL WHERE workflow_step_id = ?`, ids[2]).Error; err != nil {
		t.Fatal(err)
	}
	trace.Take()
	held, err := s.ClaimsHeld(ctx, ids, tokens)
	if err != nil || !slices.Equal(held, ids[:1]) {
		t.Fatalf("ClaimsHeld: %v (%v), want %v", held, err, ids[:1])
	}
	renewed, err := s.RenewLeases(ctx, ids, tokens, time.Hour)
	if err != nil || !slices.Equal(renewed, ids[:1]) {
		t.Fatalf("RenewLeases: %v (%v), want %v", renewed, err, ids[:1])
	}
	if run := trace.Take(); len(run) != 2 {
		t.Errorf("checking and renewing three claims ran %d statements, want 2: %q", len(run), run)
	}
	var leases []bool
	if err := s.db.Raw(`SELECT coalesce(claim_expires_at > now() + interval '30 minutes', false)
		FROM unnest(?::bigint[]) WITH ORDINALITY AS u(id, ord) JOIN tasker_workflow_steps ws ON ws.workflow_step_id = u.id
		ORDER BY u.ord`, database.Array[int64](ids)).Scan(&leases).Error; err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(leases, []bool{true, false, false}) {
		t.Errorf("leases extended past 30 minutes: %v, want only the held claim's", leases)
	}
}

// TestClaimReadsHowLongEachStepWasReady: asked for it, the claim reads how long each step had
// been ready: since its last parent finished, since the end of its backoff (the later of the
// implicit one after its failure and the delay it asked for), or since its task was created.
func TestClaimReadsHowLongEachStepWasReady(t *testing.T) {
	s, _ := open(t)
	stmts := []string{
		`INSERT INTO tasker_dependent_systems (name) VALUES ('ready')`,
		`INSERT INTO tasker_named_tasks (task_namespace_id, name) VALUES (1, 'ready')`,
		`INSERT INTO tasker_named_steps (dependent_system_id, name)
		 SELECT dependent_system_id, n FROM tasker_dependent_systems, unnest(ARRAY['parent', 'child', 'retried', 'root']) n`,
		// Task 1 (100 s old): parent finished 7 s ago, child waits for it.
		// Task 2 (50 s old): retried failed 20 s ago (implicit backoff 2 s) and asked for 5 s.
		// Task 3 (4 s old): root.
		`INSERT INTO tasker_tasks (named_task_id, created_at)
		 SELECT named_task_id, now() - a * interval '1 second' FROM tasker_named_tasks, unnest(ARRAY[100, 50, 4]) a`,
		`INSERT INTO tasker_workflow_steps (task_id, named_step_id, processed, attempts, last_attempted_at, backoff_request_seconds)
		 SELECT CASE ns.name WHEN 'retried' THEN 2 WHEN 'root' THEN 3 ELSE 1 END, ns.named_step_id,
		        ns.name = 'parent', CASE WHEN ns.name IN ('parent', 'retried') THEN 1 ELSE 0 END,
		        CASE ns.name WHEN 'retried' THEN now() - interval '20 seconds' WHEN 'parent' THEN now() - interval '7 seconds' END,
		        CASE ns.name WHEN 'retried' THEN 5 END
		 FROM tasker_named_steps ns ORDER BY ns.named_step_id`,
		`INSERT INTO tasker_workflow_step_edges (from_step_id, to_step_id)
		 SELECT a.workflow_step_id, b.workflow_step_id FROM tasker_workflow_steps a, tasker_workflow_steps b
		 WHERE a.task_id = 1 AND b.task_id = 1 AND a.workflow_step_id < b.workflow_step_id`,
		`INSERT INTO tasker_workflow_step_transitions (workflow_step_id, to_state, from_state, sort_key, most_recent, created_at)
		 SELECT ws.workflow_step_id, CASE ws.task_id WHEN 1 THEN 'complete' ELSE 'error' END, 'in_progress', 1, true,
		        now() - CASE ws.task_id WHEN 1 THEN interval '7 seconds' ELSE interval '20 seconds' END
		 FROM tasker_workflow_steps ws WHERE ws.processed OR ws.task_id = 2`,
		`INSERT INTO tasker_task_transitions (task_id, to_state, sort_key, most_recent) VALUES (1, 'in_progress', 1, true), (2, 'in_progress', 1, true)`,
	}
	seed(t, s, stmts...)
	ctx := context.Background()
	claimed, err := s.ClaimAndStart(ctx, ClaimRequest{N: 10, Worker: "test", Lease: time.Minute, ReadyFor: true, Start: startMeta("test")})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]time.Duration{"child": 7 * time.Second, "retried": 15 * time.Second, "root": 4 * time.Second}
	if len(claimed) != len(want) {
		t.Fatalf("claimed %d steps, want %d: %+v", len(claimed), len(want), claimed)
	}
	for _, c := range claimed {
		w, ok := want[c.Input.Name]
		if !ok || c.ReadyFor < w || c.ReadyFor > w+time.Second {
			t.Errorf("step %s had been ready for %s, want %s (within the second the test took)", c.Input.Name, c.ReadyFor, w)
		}
	}
}

// TestOthersClaimingSeesOnlyOtherEnginesLiveClaims: a step claimed by the asking engine and
// one claimed by another engine whose lease expired do not count; a live claim of another
// engine does, and one statement answers for every step.
func TestOthersClaimingSeesOnlyOtherEnginesLiveClaims(t *testing.T) {
	t.Parallel()
	s, trace := open(t)
	seedHistory(t, s, 0)
	ctx := context.Background()
	var ids []int64
	if err := s.db.Raw(`SELECT workflow_step_id FROM tasker_workflow_steps WHERE NOT processed AND NOT in_process
		ORDER BY workflow_step_id LIMIT 3`).Scan(&ids).Error; err != nil || len(ids) != 3 {
		t.Fatalf("steps to claim: %v (%v), want 3", ids, err)
	}
	claim := func(id int64, worker string, lease string) {
		t.Helper()
		if err := s.db.Exec(`UPDATE tasker_workflow_steps SET in_process = true, claimed_by = ?,
			claim_token = gen_random_uuid(), claim_expires_at = now() + CAST(? AS interval) WHERE workflow_step_id = ?`,
			worker, lease, id).Error; err != nil {
			t.Fatal(err)
		}
	}
	ask := func() bool {
		t.Helper()
		trace.Take()
		others, err := s.OthersClaiming(ctx, "me")
		if err != nil {
			t.Fatal(err)
		}
		if run := trace.Take(); len(run) != 1 {
			t.Errorf("OthersClaiming ran %d statements, want 1: %q", len(run), run)
		}
		return others
	}
	if ask() {
		t.Fatal("others claiming with no step in process")
	}
	claim(ids[0], "me", "1 hour")
	claim(ids[1], "gone", "-1 minute")
	if ask() {
		t.Fatal("others claiming with only the asker's claim and an expired one")
	}
	claim(ids[2], "other", "1 hour")
	if !ask() {
		t.Fatal("no others claiming with another engine's live claim")
	}
}
