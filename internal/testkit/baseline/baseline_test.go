package baseline_test

import (
	"context"
	"database/sql"
	"math"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/taskerhq/tasker/internal/models"
	"github.com/taskerhq/tasker/internal/testkit/baseline"
	"github.com/taskerhq/tasker/internal/testkit/fixture"
)

// TestBaselineMatchesViews checks that the naive implementation and the views give the same
// answer for every step and task of generated data in every scenario, plus hand-built edge
// cases: backoff (explicit and implicit), exhausted and non-retryable failures, null retry
// columns, claimed steps, cancelled and manually resolved parents, tasks without steps.
func TestBaselineMatchesViews(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := fixture.Generated(t, 3, 2500)
	b := fixture.New(t, db)
	b.Task(fixture.Shape{Name: "empty"})
	d := b.Task(fixture.Diamond)
	d.Complete("start_workflow")
	d.Fail("branch_one_process", 1*time.Second) // implicit backoff of 2 s not elapsed
	d.Transition("branch_two_process", 0, models.StateCancelled)
	p := b.Task(fixture.ParallelMerge)
	p.Set("fetch_user_data", fixture.Backoff(30), fixture.AttemptedAgo(0))  // explicit, pending
	p.Set("fetch_order_data", fixture.Backoff(5), fixture.AttemptedAgo(60)) // explicit, elapsed
	p.Transition("fetch_inventory_data", 0, models.StateResolvedManually)
	p.Set("fetch_pricing_data", fixture.InProcess(true))
	m := b.Task(fixture.Mixed)
	m.Fail("init_auth", time.Minute)
	m.Set("init_auth", fixture.Retryable(false))
	m.Fail("init_config", time.Minute)
	m.Set("init_config", fixture.Null("retry_limit"), fixture.Null("attempts"))
	l := b.Task(fixture.Linear)
	for i := 0; i < 3; i++ {
		l.Fail("initialize_data", time.Hour)
	}
	l.TaskTransition(0, models.StateInProgress, models.StateError)
	tr := b.Task(fixture.Tree)
	tr.Complete("root_initialization", "branch_a_setup")
	tr.Fail("branch_b_setup", 10*time.Second)
	tr.Set("branch_b_setup", fixture.RetryLimit(1))

	var taskIDs []int64
	if err := db.Raw(`SELECT task_id FROM tasker_tasks ORDER BY task_id`).Scan(&taskIDs).Error; err != nil {
		t.Fatal(err)
	}
	// The views read the clock through now(), which PostgreSQL fixes at the start of the
	// transaction: both views are read in one transaction, and the baseline is evaluated at
	// that transaction's now(), so a step whose retry time falls between two reads cannot be
	// judged ready by one side and in backoff by the other.
	var (
		now      time.Time
		views    []models.StepReadinessStatus
		contexts []models.TaskExecutionContext
		err      error
	)
	err = db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if err := tx.Raw(`SELECT now()`).Scan(&now).Error; err != nil {
			return err
		}
		if views, err = models.ReadinessByTaskIDs(ctx, tx, taskIDs); err != nil {
			return err
		}
		contexts, err = models.ExecutionContextsByTaskIDs(ctx, tx, taskIDs)
		return err
	}, &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	byStep := make(map[int64]models.StepReadinessStatus, len(views))
	for _, v := range views {
		byStep[v.WorkflowStepID] = v
	}
	naive, err := baseline.TaskContexts(ctx, db, taskIDs, now)
	if err != nil {
		t.Fatal(err)
	}
	if len(contexts) != len(naive) || len(contexts) != len(taskIDs) {
		t.Fatalf("%d tasks, %d view rows, %d baseline rows", len(taskIDs), len(contexts), len(naive))
	}
	compared, ready, reasons := 0, 0, map[string]int{}
	for i, v := range contexts {
		n := naive[i]
		// The baseline leaves NamedTaskID zero; percentages are compared within rounding.
		got := v
		got.NamedTaskID, got.CompletionPercentage = 0, n.CompletionPercentage
		if got != n || math.Abs(v.CompletionPercentage-n.CompletionPercentage) > 0.001 {
			t.Errorf("task %d: view %+v\nbaseline %+v", v.TaskID, v, n)
		}
		steps, err := baseline.Steps(ctx, db, v.TaskID, now)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range steps {
			w, ok := byStep[s.WorkflowStepID]
			if !ok {
				t.Fatalf("step %d missing from the view", s.WorkflowStepID)
			}
			reason := ""
			if w.BlockingReason != nil {
				reason = string(*w.BlockingReason)
			}
			if w.CurrentState != s.CurrentState || w.ReadyForExecution != s.ReadyForExecution ||
				w.DependenciesSatisfied != s.DependenciesSatisfied || w.RetryEligible != s.RetryEligible ||
				w.TotalParents != s.TotalParents || w.CompletedParents != s.CompletedParents ||
				reason != s.BlockingReason || !sameTime(w.LastFailureAt, s.LastFailureAt) ||
				!sameTime(w.NextRetryAt, s.NextRetryAt) {
				t.Errorf("step %d (%s): view %+v\nbaseline %+v", s.WorkflowStepID, w.Name, w, s)
			}
			compared++
			if s.ReadyForExecution {
				ready++
			}
			reasons[s.BlockingReason]++
		}
		ids, err := baseline.ReadySteps(ctx, db, v.TaskID, now)
		if err != nil {
			t.Fatal(err)
		}
		if len(ids) != v.ReadySteps {
			t.Errorf("task %d: ReadySteps gave %d ids, the view counts %d", v.TaskID, len(ids), v.ReadySteps)
		}
	}
	if compared != len(views) || ready == 0 {
		t.Errorf("compared %d of %d steps, %d ready", compared, len(views), ready)
	}
	for _, r := range []string{"", "already_processed", "in_progress", "terminal_state", "dependencies_not_satisfied",
		"retries_exhausted", "not_retryable", "backoff"} {
		if reasons[r] == 0 {
			t.Errorf("no step with blocking reason %q was compared: %v", r, reasons)
		}
	}
}

func sameTime(a, b *time.Time) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return a.Sub(*b).Abs() < time.Microsecond
}
