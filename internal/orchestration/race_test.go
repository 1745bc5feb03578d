package orchestration_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/taskerhq/tasker/internal/database"
	"github.com/taskerhq/tasker/internal/errs"
	"github.com/taskerhq/tasker/internal/models"
	"github.com/taskerhq/tasker/internal/orchestration"
	sm "github.com/taskerhq/tasker/internal/statemachine"
	"github.com/taskerhq/tasker/internal/testkit/wait"
)

const racedYAML = `
namespace: tests
name: raced
version: 1.0.0
steps:
  - name: a
    handler: {kind: sleep, config: {duration: 15ms}}
  - name: b
    depends_on: a
    handler: {kind: sleep, config: {duration: 15ms}}
  - name: c
    depends_on: a
    handler: {kind: fail, config: {times: 1, retry_after: 1s, error: failing once}}
  - name: d
    depends_on: [b, c]
    handler: {kind: noop}
`

// TestOperatorsRacingEnginesKeepEveryHistoryWellFormed: while two engines run tasks (their
// recordings moving steps from the transitions their claims wrote, without reading them
// again), operators cancel tasks and steps, resolve failed steps and retry them. Every task
// ends settled, and every history of a task or step is one the state machine allows: sort
// keys 1..n, one current row (the last), each row from the state the one before went to (the
// first from none), each move in the transition table; no step is left claimed.
func TestOperatorsRacingEnginesKeepEveryHistoryWellFormed(t *testing.T) {
	t.Parallel()
	h := newHarness(t, nil, racedYAML)
	const tasks = 90
	ids := h.runOnTwoEngines("raced", tasks, 200*time.Millisecond)

	ctx := context.Background()
	ops := orchestration.NewService(openDB(t, h.url), nil)
	steps := make([]map[string]*stepInfo, tasks)
	for i, id := range ids {
		steps[i] = h.steps(id)
	}
	var wg sync.WaitGroup
	errc := make(chan error, tasks*4)
	for i, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(i%15) * 10 * time.Millisecond)
			refusedOK := func(err error) {
				if err != nil && !errs.Is(err, errs.IllegalTransition) {
					errc <- fmt.Errorf("task %d: %w", id, err)
				}
			}
			st := steps[i]
			switch i % 3 {
			case 0:
				refusedOK(ops.CancelTask(ctx, id, map[string]any{"by": "test"}))
			case 1:
				refusedOK(ops.CancelStep(ctx, st["b"].ID, nil))
			case 2:
				refusedOK(ops.ResolveStep(ctx, st["c"].ID, "racing", nil))
				refusedOK(ops.RetryStep(ctx, st["c"].ID, nil))
			}
		}()
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}

	wait.Until(t, 60*time.Second, "every task to end (none pending or in_progress)", func() bool {
		var open int64
		if err := h.db.Raw(`SELECT count(*) FROM unnest(?::bigint[]) AS u(id)
			WHERE coalesce((SELECT to_state FROM tasker_task_transitions WHERE task_id = u.id AND most_recent), 'pending')
			      IN ('pending', 'in_progress')`, database.Array[int64](ids)).Row().Scan(&open); err != nil {
			t.Fatal(err)
		}
		return open == 0
	})

	type row struct {
		Owner      int64
		SortKey    int
		FromState  *string
		ToState    string
		MostRecent bool
	}
	check := func(kind sm.Kind, q string) {
		var rows []row
		if err := h.db.Raw(q, database.Array[int64](ids)).Scan(&rows).Error; err != nil {
			t.Fatal(err)
		}
		byOwner := map[int64][]row{}
		var order []int64
		for _, r := range rows {
			if _, ok := byOwner[r.Owner]; !ok {
				order = append(order, r.Owner)
			}
			byOwner[r.Owner] = append(byOwner[r.Owner], r)
		}
		for _, owner := range order {
			hist := byOwner[owner]
			prev := models.StatePending
			for i, r := range hist {
				var bad error
				switch {
				case r.SortKey != i+1:
					bad = fmt.Errorf("sort key %d at place %d", r.SortKey, i+1)
				case r.MostRecent != (i == len(hist)-1):
					bad = fmt.Errorf("most_recent %v at place %d of %d", r.MostRecent, i+1, len(hist))
				case (i == 0) != (r.FromState == nil) || (i > 0 && models.State(*r.FromState) != prev):
					bad = fmt.Errorf("from %v after %s", r.FromState, prev)
				}
				if _, ok := sm.Event(kind, prev, models.State(r.ToState)); bad == nil && !ok {
					bad = errors.New("a move the table refuses")
				}
				if bad != nil {
					t.Errorf("%s %d, transition %d (%v -> %s): %v", kind, owner, i+1, r.FromState, r.ToState, bad)
					break
				}
				prev = models.State(r.ToState)
			}
		}
	}
	check(sm.KindTask, `SELECT task_id AS owner, sort_key, from_state, to_state, most_recent FROM tasker_task_transitions
		WHERE task_id = ANY(?::bigint[]) ORDER BY task_id, sort_key`)
	check(sm.KindStep, `SELECT t.workflow_step_id AS owner, t.sort_key, t.from_state, t.to_state, t.most_recent
		FROM tasker_workflow_step_transitions t JOIN tasker_workflow_steps s USING (workflow_step_id)
		WHERE s.task_id = ANY(?::bigint[]) ORDER BY t.workflow_step_id, t.sort_key`)
	var claimed int64
	if err := h.db.Raw(`SELECT count(*) FROM tasker_workflow_steps WHERE task_id = ANY(?::bigint[]) AND in_process`,
		database.Array[int64](ids)).Row().Scan(&claimed); err != nil {
		t.Fatal(err)
	}
	if claimed != 0 {
		t.Errorf("%d steps still claimed", claimed)
	}
	var states []struct {
		State string
		N     int
	}
	h.db.Raw(`SELECT to_state AS state, count(*) AS n FROM tasker_task_transitions WHERE task_id = ANY(?::bigint[])
		AND most_recent GROUP BY 1 ORDER BY 1`, database.Array[int64](ids)).Scan(&states)
	var racing int64
	h.db.Raw(`SELECT count(*) FROM tasker_workflow_step_transitions t JOIN tasker_workflow_steps s USING (workflow_step_id)
		WHERE s.task_id = ANY(?::bigint[]) AND t.from_state = 'in_progress' AND t.to_state = 'cancelled'`,
		database.Array[int64](ids)).Row().Scan(&racing)
	t.Logf("tasks ended %v; %d running steps cancelled", states, racing)
}
