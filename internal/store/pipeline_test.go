package store

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/taskerhq/tasker/internal/database"
	"github.com/taskerhq/tasker/internal/testkit/dbtest"
	"github.com/taskerhq/tasker/internal/testkit/sqllog"
)

// TestRecordAndClaimIsOneTransactionInOneRoundTrip: on the engine pool, the recording of a
// batch and the claim after it go to the database as one pipeline, two statements and no
// BEGIN or COMMIT, which PostgreSQL runs as one transaction:
//   - the claim reads after the recording: recording the first step of a two-step chain
//     claims the second, which the recording made ready;
//   - when the claim fails (here: start metadata that is not JSON), the recording is rolled
//     back with it: the recorded step is still claimed and in_progress, and the call returns
//     the error.
func TestRecordAndClaimIsOneTransactionInOneRoundTrip(t *testing.T) {
	t.Parallel()
	url := dbtest.NewURL(t)
	s, _ := openAt(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	seed(t, s,
		`INSERT INTO tasker_dependent_systems (name) VALUES ('pipeline')`,
		`INSERT INTO tasker_named_tasks (task_namespace_id, name) VALUES (1, 'pipeline_chain')`,
		`INSERT INTO tasker_named_steps (dependent_system_id, name) SELECT dependent_system_id, x
		 FROM tasker_dependent_systems, (VALUES ('first'), ('second')) AS v(x)`,
		`INSERT INTO tasker_tasks (named_task_id) SELECT named_task_id FROM tasker_named_tasks, generate_series(1, 2)`,
		`INSERT INTO tasker_workflow_steps (task_id, named_step_id)
		 SELECT t.task_id, ns.named_step_id FROM tasker_tasks t, tasker_named_steps ns ORDER BY t.task_id, ns.named_step_id`,
		`INSERT INTO tasker_workflow_step_edges (from_step_id, to_step_id)
		 SELECT a.workflow_step_id, b.workflow_step_id FROM tasker_workflow_steps a JOIN tasker_workflow_steps b
		 ON b.task_id = a.task_id AND b.workflow_step_id = a.workflow_step_id + 1
		 WHERE a.named_step_id = (SELECT min(named_step_id) FROM tasker_named_steps)`)
	trace := &sqllog.Log{}
	pool, err := database.OpenEngine(ctx, url, database.Options{MaxOpenConns: 1, Tracer: trace}, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pool.Close() })
	engine := s.WithEngine(pool)
	meta := startMeta("pipeline")

	var firsts []ClaimedStep
	if err := engine.EngineStatement(ctx, false, func(st *Store) error {
		var err error
		firsts, err = st.ClaimAndStart(ctx, ClaimRequest{N: 8, Worker: "pipeline", Lease: time.Minute, Start: meta})
		return err
	}); err != nil || len(firsts) != 2 {
		t.Fatalf("claimed %d first steps (%v), want the 2 of the 2 tasks", len(firsts), err)
	}

	// The claim fails: the recording of the first task's first step goes with it.
	tasks, outcomes := firstSuccesses(firsts[:1], "pipeline")
	bad := meta
	bad.Step = json.RawMessage(`not json`)
	trace.Take()
	_, _, err = engine.RecordAndClaim(ctx, false, tasks, outcomes, Busy{}, ClaimRequest{N: 8, Worker: "pipeline", Lease: time.Minute, Start: bad})
	if err == nil || !strings.Contains(err.Error(), "json") {
		t.Fatalf("a pipeline whose claim fails: %v, want the claim's error", err)
	}
	if got := stepState(t, s, firsts[0].StepID); got != "true:in_progress" {
		t.Errorf("the step recorded before a claim that failed: in_process:history %s, want true:in_progress (rolled back)", got)
	}

	// Both succeed: the claim takes the second step the recording made ready.
	kept, claimed, err := engine.RecordAndClaim(ctx, false, tasks, outcomes, Busy{}, ClaimRequest{N: 8, Worker: "pipeline", Lease: time.Minute, Start: meta})
	if err != nil {
		t.Fatal(err)
	}
	if len(kept) != 1 || kept[0] != firsts[0].Token {
		t.Errorf("recorded %v, want the first step's claim %s", kept, firsts[0].Token)
	}
	if len(claimed) != 1 || claimed[0].StepID != firsts[0].StepID+1 || claimed[0].CurrentState != "pending" ||
		string(claimed[0].Input.Parents) != `{"first": {}}` {
		t.Errorf("claimed %+v, want the second step of the first task, with its parent's results", claimed)
	}
	if got := stepState(t, s, firsts[0].StepID); got != "false:in_progress,complete" {
		t.Errorf("the recorded step: in_process:history %s, want false:in_progress,complete", got)
	}
	if got := stepState(t, s, firsts[0].StepID+1); got != "true:in_progress" {
		t.Errorf("the step claimed after the recording: in_process:history %s, want true:in_progress", got)
	}
	sent := trace.Take()
	for i := range sent {
		sent[i] = strings.Fields(sent[i])[0]
	}
	// Each pipeline is its two statements (with, for the first, a preparation the tracer does
	// not see): neither BEGIN nor COMMIT.
	if want := []string{"select", "with", "select", "with"}; !slices.Equal(sent, want) {
		t.Errorf("statements sent %q, want %q", sent, want)
	}
}

// stepState is a step's in_process flag and its history, "in_process:state,state".
func stepState(t *testing.T, s *Store, stepID int64) string {
	t.Helper()
	var got string
	if err := s.db.Raw(`SELECT ws.in_process || ':' || coalesce(string_agg(st.to_state, ',' ORDER BY st.sort_key), '')
		FROM tasker_workflow_steps ws LEFT JOIN tasker_workflow_step_transitions st USING (workflow_step_id)
		WHERE ws.workflow_step_id = ? GROUP BY ws.workflow_step_id, ws.in_process`, stepID).Row().Scan(&got); err != nil {
		t.Fatal(err)
	}
	return got
}
