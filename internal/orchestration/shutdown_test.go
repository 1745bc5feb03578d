package orchestration_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/taskerhq/tasker/internal/orchestration"
)

const singleYAML = `
namespace: tests
name: single
version: 1.0.0
steps:
  - name: only
    handler: {kind: noop}
`

// TestStopDuringAClaimsCommitRunsTheClaimedStep stops the engine while PostgreSQL commits a
// claim: a deferred trigger makes the commit of a claim take a second and ignore a cancel
// request, like a commit that completed on the server an instant before the client gave up.
// The claim committed, so its step must be run and recorded during the drain, not left
// claimed until its lease expires.
func TestStopDuringAClaimsCommitRunsTheClaimedStep(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil, singleYAML)
	if err := h.db.Exec(`
		CREATE FUNCTION slow_claim_commit() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			BEGIN PERFORM pg_sleep(1); EXCEPTION WHEN query_canceled THEN NULL; END;
			RETURN NULL;
		END $$;
		CREATE CONSTRAINT TRIGGER slow_claim_commit AFTER UPDATE ON tasker_workflow_steps
		DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.in_process AND NOT OLD.in_process)
		EXECUTE FUNCTION slow_claim_commit()`).Error; err != nil {
		t.Fatal(err)
	}
	eng := h.engine(orchestration.Config{})
	id := h.create("tests", "single", "")

	// The slow commit is the one that has run for more than 100 ms: the engine's other
	// commits (a claim that found nothing, as the engine starts) take a millisecond, and one
	// of them seen here would stop the engine before it claimed the step. A claim beside a
	// recording is a statement of its own, committed as it ends (its deferred trigger runs
	// then); a claim in a recording's transaction commits with COMMIT.
	committing := func(want bool, what string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			var n int64
			if err := h.db.Raw(`SELECT count(*) FROM pg_stat_activity
				WHERE datname = current_database() AND pid <> pg_backend_pid()
				  AND state = 'active' AND (query ILIKE 'commit%' OR query ILIKE '%with ready as%')
				  AND clock_timestamp() - query_start > interval '100 milliseconds'`).Scan(&n).Error; err != nil {
				t.Fatal(err)
			}
			if (n > 0) == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("waited 20s for %s", what)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	committing(true, "a claim to reach its commit")
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := eng.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	// PostgreSQL finishes the commit whether or not the engine still waits for it.
	committing(false, "the claim's commit to end")
	only := h.steps(id)["only"]
	if !slices.Equal(only.History, []string{"in_progress", "complete"}) || only.InProcess || only.Attempts != 1 {
		t.Errorf("step claimed as the engine stopped: history %v, in_process %v, attempts %d; want it run to complete",
			only.History, only.InProcess, only.Attempts)
	}
}
