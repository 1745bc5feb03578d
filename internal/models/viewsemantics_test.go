package models_test

// Acceptance tests of the live views against the domain contract (docs/SEMANTICS.md §3–8). Every
// subtest builds its situation with internal/testkit/fixture in its own database and reads it back
// through the batch readers of views.go. Times are relative to the database's now().

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"gorm.io/gorm"

	"github.com/taskerhq/tasker/db"
	"github.com/taskerhq/tasker/internal/database"
	"github.com/taskerhq/tasker/internal/models"
	"github.com/taskerhq/tasker/internal/testkit/dbtest"
	"github.com/taskerhq/tasker/internal/testkit/fixture"
)

// Blocking reasons of docs/SEMANTICS.md §3.4; "" means ready.
const (
	alreadyProcessed = "already_processed"
	inProgress       = "in_progress"
	terminalState    = "terminal_state"
	depsNotSatisfied = "dependencies_not_satisfied"
	retriesExhausted = "retries_exhausted"
	notRetryable     = "not_retryable"
	backoff          = "backoff"
)

// Small shapes for rules that need no more than a step or two.
var (
	single = fixture.Shape{Name: "single", Steps: []fixture.Step{{Name: "only"}}}
	pair   = fixture.Shape{Name: "pair", Steps: []fixture.Step{
		{Name: "parent"}, {Name: "child", Parents: []string{"parent"}}}}
	empty = fixture.Shape{Name: "empty"}
)

// roots returns a shape of n independent steps root_1 … root_n.
func roots(n int) fixture.Shape {
	s := fixture.Shape{Name: fmt.Sprintf("roots_%d", n)}
	for i := 1; i <= n; i++ {
		s.Steps = append(s.Steps, fixture.Step{Name: fmt.Sprintf("root_%d", i)})
	}
	return s
}

// env is one subtest's database and fixture builder.
type env struct {
	t  *testing.T
	db *gorm.DB
	b  *fixture.Builder
}

// newEnv marks t parallel and gives it a fresh migrated database.
func newEnv(t *testing.T) *env {
	t.Helper()
	t.Parallel()
	db := dbtest.New(t)
	return &env{t: t, db: db, b: fixture.New(t, db)}
}

// stepRows reads the rows of one per-step view for tk with read and returns them by step
// name, checking one row per step of tk; row gives a row's step, task and (when the view has
// it, else "") step name.
func stepRows[T any](e *env, tk *fixture.Task, view string,
	read func(context.Context, *gorm.DB, []int64) ([]T, error), row func(T) (step, task int64, name string)) map[string]T {
	e.t.Helper()
	rows, err := read(context.Background(), e.db, []int64{tk.ID})
	if err != nil {
		e.t.Fatalf("reading %s: %v", view, err)
	}
	if len(rows) != len(tk.Steps) {
		e.t.Fatalf("%s has %d rows for task %d, want one per step (%d)", view, len(rows), tk.ID, len(tk.Steps))
	}
	out := make(map[string]T, len(rows))
	for _, r := range rows {
		step, task, name := row(r)
		want := tk.Name(step)
		if want == "" || task != tk.ID || (name != "" && name != want) {
			e.t.Fatalf("%s row %+v does not belong to task %d step %q", view, r, tk.ID, want)
		}
		out[want] = r
	}
	return out
}

// readiness reads the readiness rows of tk by step name, checking one row per step.
func (e *env) readiness(tk *fixture.Task) map[string]models.StepReadinessStatus {
	e.t.Helper()
	return stepRows(e, tk, "readiness", models.ReadinessByTaskIDs,
		func(r models.StepReadinessStatus) (int64, int64, string) { return r.WorkflowStepID, r.TaskID, r.Name })
}

// step reads the readiness row of one step of tk.
func (e *env) step(tk *fixture.Task, name string) models.StepReadinessStatus {
	e.t.Helper()
	return e.readiness(tk)[name]
}

// dag reads the DAG rows of tk by step name, checking one row per step.
func (e *env) dag(tk *fixture.Task) map[string]models.StepDagRelationship {
	e.t.Helper()
	return stepRows(e, tk, "dag", models.DagByTaskIDs,
		func(r models.StepDagRelationship) (int64, int64, string) { return r.WorkflowStepID, r.TaskID, "" })
}

// context reads the one execution context row of tk.
func (e *env) context(tk *fixture.Task) models.TaskExecutionContext {
	e.t.Helper()
	rows, err := models.ExecutionContextsByTaskIDs(context.Background(), e.db, []int64{tk.ID})
	if err != nil {
		e.t.Fatalf("reading execution context: %v", err)
	}
	if len(rows) != 1 || rows[0].TaskID != tk.ID || rows[0].NamedTaskID != tk.NamedTaskID {
		e.t.Fatalf("execution context of task %d: got %+v, want exactly one row of it", tk.ID, rows)
	}
	return rows[0]
}

// summary reads the one workflow summary row of tk.
func (e *env) summary(tk *fixture.Task) models.TaskWorkflowSummary {
	e.t.Helper()
	rows, err := models.WorkflowSummariesByTaskIDs(context.Background(), e.db, []int64{tk.ID})
	if err != nil {
		e.t.Fatalf("reading workflow summary: %v", err)
	}
	if len(rows) != 1 || rows[0].TaskID != tk.ID || rows[0].NamedTaskID != tk.NamedTaskID {
		e.t.Fatalf("workflow summary of task %d: got %+v, want exactly one row of it", tk.ID, rows)
	}
	return rows[0]
}

// taskWant is the part of docs/SEMANTICS.md §5 shared by the execution context and the summary.
type taskWant struct {
	Status                                                            models.State // "" reads as pending
	Total, Pending, InProgress, Completed, Failed, Ready, PermBlocked int
	ExecutionStatus                                                   models.ExecutionStatus
	Action                                                            models.RecommendedAction
	Health                                                            models.HealthStatus
	Percent                                                           float64
}

// checkTask compares both task views of tk with want.
func (e *env) checkTask(tk *fixture.Task, want taskWant) {
	e.t.Helper()
	if want.Status == "" {
		want.Status = models.StatePending
	}
	c := e.context(tk)
	got := taskWant{c.Status, c.TotalSteps, c.PendingSteps, c.InProgressSteps, c.CompletedSteps, c.FailedSteps,
		c.ReadySteps, c.PermanentlyBlockedSteps, c.ExecutionStatus, c.RecommendedAction, c.HealthStatus,
		c.CompletionPercentage}
	if got != want {
		e.t.Errorf("execution context:\n got %+v\nwant %+v", got, want)
	}
	s := e.summary(tk)
	got = taskWant{s.Status, s.TotalSteps, s.PendingSteps, s.InProgressSteps, s.CompletedSteps, s.FailedSteps,
		s.ReadySteps, s.PermanentlyBlockedSteps, s.ExecutionStatus, s.RecommendedAction, s.HealthStatus,
		s.CompletionPercentage}
	if got != want {
		e.t.Errorf("workflow summary:\n got %+v\nwant %+v", got, want)
	}
}

// checkReady asserts a step's readiness and blocking reason ("" for ready).
func checkReady(t *testing.T, name string, r models.StepReadinessStatus, reason string) {
	t.Helper()
	if r.ReadyForExecution != (reason == "") || reasonOf(r) != reason {
		t.Errorf("%s: ready_for_execution = %v, blocking_reason = %q; want ready = %v, reason %q",
			name, r.ReadyForExecution, reasonOf(r), reason == "", reason)
	}
}

func reasonOf(r models.StepReadinessStatus) string {
	if r.BlockingReason == nil {
		return ""
	}
	return string(*r.BlockingReason)
}

func eq[T comparable](t *testing.T, what string, got, want T) {
	t.Helper()
	if got != want {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
}

// eqIDs asserts a jsonb id array: present (not SQL null) and equal to want, in order.
func eqIDs(t *testing.T, what string, got, want []int64) {
	t.Helper()
	if got == nil || !slices.Equal(got, want) {
		t.Errorf("%s = %v (nil: %v), want %v", what, got, got == nil, want)
	}
}

func eqTime(t *testing.T, what string, got *time.Time, want time.Time) {
	t.Helper()
	if got == nil || !got.Equal(want) {
		t.Errorf("%s = %v, want %v", what, got, want)
	}
}

func isNull(t *testing.T, what string, got *time.Time) {
	t.Helper()
	if got != nil {
		t.Errorf("%s = %v, want null", what, *got)
	}
}

// failJustNow fails a step now on its 4th attempt (of 10), so that it waits out a 16 s
// implicit backoff: ample margin for a slow test machine.
func failJustNow(tk *fixture.Task, step string) time.Time {
	tk.Set(step, fixture.Attempts(3), fixture.RetryLimit(10))
	return tk.Fail(step, 0)
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// readyNames lists the names of the ready steps of a readiness map, sorted.
func readyNames(rows map[string]models.StepReadinessStatus) []string {
	var out []string
	for n, r := range rows {
		if r.ReadyForExecution {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

// §8: the four-step task, fresh and as it runs.
func TestFourStepTask(t *testing.T) {
	t.Run("fresh", func(t *testing.T) {
		e := newEnv(t)
		tk := e.b.Task(fixture.FourStep)
		r := e.readiness(tk)
		if got := readyNames(r); !slices.Equal(got, []string{"one", "two"}) {
			t.Errorf("ready steps = %v, want [one two]", got)
		}
		for _, n := range []string{"one", "two"} {
			checkReady(t, n, r[n], "")
			eq(t, n+" current_state", r[n].CurrentState, models.StatePending)
			eq(t, n+" dependencies_satisfied", r[n].DependenciesSatisfied, true)
			eq(t, n+" retry_eligible", r[n].RetryEligible, true)
			eq(t, n+" attempts", r[n].Attempts, 0)
			eq(t, n+" retry_limit", r[n].RetryLimit, 3)
			isNull(t, n+" last_failure_at", r[n].LastFailureAt)
			isNull(t, n+" next_retry_at", r[n].NextRetryAt)
		}
		for _, n := range []string{"three", "four"} {
			checkReady(t, n, r[n], depsNotSatisfied)
			eq(t, n+" total_parents", r[n].TotalParents, 1)
			eq(t, n+" completed_parents", r[n].CompletedParents, 0)
		}
		e.checkTask(tk, taskWant{Total: 4, Pending: 4, Ready: 2,
			ExecutionStatus: "has_ready_steps", Action: "execute_ready_steps", Health: "healthy"})
		d := e.dag(tk)
		for n, depth := range map[string]int{"one": 0, "two": 0, "three": 1, "four": 2} {
			eq(t, n+" min_depth_from_root", d[n].MinDepthFromRoot, depth)
			eq(t, n+" dependency_level", d[n].DependencyLevel, depth)
		}
		s := e.summary(tk)
		eqIDs(t, "root_step_ids", s.RootStepIDs, tk.StepIDs("one", "two"))
		eq(t, "root_step_count", s.RootStepCount, 2)
		eqIDs(t, "ready_step_ids", s.ReadyStepIDs, tk.StepIDs("one", "two"))
		eqIDs(t, "blocked_step_ids", s.BlockedStepIDs, tk.StepIDs("three", "four"))
		eq(t, "blocking_reasons", fmt.Sprint(s.BlockingReasons), fmt.Sprint([]string{depsNotSatisfied, depsNotSatisfied}))
		eq(t, "max_dependency_level", s.MaxDependencyLevel, 2)
		eq(t, "parallelism_potential", s.ParallelismPotential, "moderate_parallelism")
	})

	t.Run("runs to all_complete one step at a time", func(t *testing.T) {
		e := newEnv(t)
		tk := e.b.Task(fixture.FourStep)
		tk.TaskTransition(0, models.StateInProgress)
		tk.Complete("two")
		if got := readyNames(e.readiness(tk)); !slices.Equal(got, []string{"one", "three"}) {
			t.Errorf("after two completes, ready = %v, want [one three]", got)
		}
		tk.Complete("one", "three")
		if got := readyNames(e.readiness(tk)); !slices.Equal(got, []string{"four"}) {
			t.Errorf("after one, two, three complete, ready = %v, want [four]", got)
		}
		e.checkTask(tk, taskWant{Status: models.StateInProgress, Total: 4, Pending: 1, Completed: 3, Ready: 1,
			ExecutionStatus: "has_ready_steps", Action: "execute_ready_steps", Health: "healthy", Percent: 75})
		tk.Complete("four")
		r := e.readiness(tk)
		for _, n := range []string{"one", "two", "three", "four"} {
			checkReady(t, n, r[n], alreadyProcessed)
		}
		e.checkTask(tk, taskWant{Status: models.StateInProgress, Total: 4, Completed: 4,
			ExecutionStatus: "all_complete", Action: "finalize_task", Health: "healthy", Percent: 100})
	})
}

// §4 and §8: DAG relationships of the five standard shapes.
func TestDagOfStandardShapes(t *testing.T) {
	cases := []struct {
		shape             fixture.Shape
		shortest, longest int // of the last step, from the §8 table
	}{
		{fixture.Linear, 5, 5},
		{fixture.Diamond, 4, 4},
		{fixture.ParallelMerge, 1, 2},
		{fixture.Tree, 3, 3},
		{fixture.Mixed, 3, 4},
	}
	for _, c := range cases {
		t.Run(c.shape.Name, func(t *testing.T) {
			e := newEnv(t)
			// Two tasks of one shape: depth is computed per task.
			for _, tk := range []*fixture.Task{e.b.Task(c.shape), e.b.Task(c.shape)} {
				d := e.dag(tk)
				last := d[c.shape.Last()]
				eq(t, "min_depth_from_root of "+c.shape.Last(), last.MinDepthFromRoot, c.shortest)
				eq(t, "dependency_level of "+c.shape.Last(), last.DependencyLevel, c.longest)
				checkDagAgainstShape(t, tk, c.shape, d)
				s := e.summary(tk)
				eq(t, "max_dependency_level", s.MaxDependencyLevel, c.longest)
				var roots []int64
				for _, st := range c.shape.Steps {
					if len(st.Parents) == 0 {
						roots = append(roots, tk.Step(st.Name))
					}
				}
				eqIDs(t, "root_step_ids", s.RootStepIDs, roots)
				eq(t, "root_step_count", s.RootStepCount, len(roots))
			}
		})
	}
}

// checkDagAgainstShape compares every DAG row with what the shape declares. Parents precede
// children in a Shape, so depths follow in one pass.
func checkDagAgainstShape(t *testing.T, tk *fixture.Task, s fixture.Shape, d map[string]models.StepDagRelationship) {
	t.Helper()
	children := map[string][]string{}
	minDepth, level := map[string]int{}, map[string]int{}
	for _, st := range s.Steps {
		for i, p := range st.Parents {
			children[p] = append(children[p], st.Name)
			if i == 0 || minDepth[p]+1 < minDepth[st.Name] {
				minDepth[st.Name] = minDepth[p] + 1
			}
			level[st.Name] = max(level[st.Name], level[p]+1)
		}
	}
	for _, st := range s.Steps {
		n, r := st.Name, d[st.Name]
		parents, kids := tk.StepIDs(st.Parents...), tk.StepIDs(children[n]...)
		slices.Sort(parents)
		slices.Sort(kids)
		eqIDs(t, n+" parent_step_ids", r.ParentStepIDs, parents)
		eqIDs(t, n+" child_step_ids", r.ChildStepIDs, kids)
		eq(t, n+" parent_count", r.ParentCount, len(parents))
		eq(t, n+" child_count", r.ChildCount, len(kids))
		eq(t, n+" is_root_step", r.IsRootStep, len(parents) == 0)
		eq(t, n+" is_leaf_step", r.IsLeafStep, len(kids) == 0)
		eq(t, n+" min_depth_from_root", r.MinDepthFromRoot, minDepth[n])
		eq(t, n+" dependency_level", r.DependencyLevel, level[n])
		eq(t, n+" named_step_id", r.NamedStepID, tk.Row(n).NamedStepID)
	}
}

// §3.1 and §8: a diamond's merge waits for both branches; a cancelled parent blocks.
func TestDependenciesSatisfied(t *testing.T) {
	const a, b, merge = "branch_one_validate", "branch_two_validate", "merge_branches"
	cases := []struct {
		name      string
		setup     func(tk *fixture.Task)
		satisfied bool
		completed int
	}{
		{"no parent done", func(tk *fixture.Task) {}, false, 0},
		{"one branch complete", func(tk *fixture.Task) { tk.Complete(a) }, false, 1},
		{"both branches complete", func(tk *fixture.Task) { tk.Complete(a, b) }, true, 2},
		{"complete and resolved_manually", func(tk *fixture.Task) {
			tk.Complete(a)
			tk.Transition(b, 0, models.StateResolvedManually)
		}, true, 2},
		{"both resolved_manually", func(tk *fixture.Task) {
			tk.Transition(a, 0, models.StateResolvedManually)
			tk.Transition(b, 0, models.StateResolvedManually)
		}, true, 2},
		{"complete and cancelled", func(tk *fixture.Task) {
			tk.Complete(a)
			tk.Transition(b, time.Hour, models.StateCancelled)
		}, false, 1},
		{"complete and in error", func(tk *fixture.Task) {
			tk.Complete(a)
			tk.Fail(b, time.Hour)
		}, false, 1},
		{"complete and in progress", func(tk *fixture.Task) {
			tk.Complete(a)
			tk.Transition(b, 0, models.StateInProgress)
		}, false, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			tk := e.b.Task(fixture.Diamond)
			c.setup(tk)
			r := e.readiness(tk)
			m := r[merge]
			eq(t, "dependencies_satisfied", m.DependenciesSatisfied, c.satisfied)
			eq(t, "total_parents", m.TotalParents, 2)
			eq(t, "completed_parents", m.CompletedParents, c.completed)
			want := ""
			if !c.satisfied {
				want = depsNotSatisfied
			}
			checkReady(t, merge, m, want)
			root := r["start_workflow"]
			eq(t, "root dependencies_satisfied", root.DependenciesSatisfied, true)
			eq(t, "root total_parents", root.TotalParents, 0)
			eq(t, "root completed_parents", root.CompletedParents, 0)
			checkReady(t, "end_workflow", r["end_workflow"], depsNotSatisfied)
		})
	}
}

// §3.2: retry eligibility, with nulls read as their defaults.
func TestRetryEligible(t *testing.T) {
	cases := []struct {
		name      string
		cols      []fixture.Column
		inError   bool // the step failed an hour ago (its backoff has elapsed)
		eligible  bool
		reason    string
		attempts  int
		retryLim  int
		retryable bool
	}{
		{"fresh", nil, false, true, "", 0, 3, true},
		{"first attempt although not retryable", []fixture.Column{fixture.Retryable(false)},
			false, true, "", 0, 3, false},
		{"first attempt although retry_limit is 0", []fixture.Column{fixture.RetryLimit(0)},
			false, true, "", 0, 0, true},
		{"null attempts read as 0", []fixture.Column{fixture.Null("attempts"), fixture.Retryable(false)},
			false, true, "", 0, 3, false},
		{"attempts below the limit", []fixture.Column{fixture.Attempts(2)}, true, true, "", 2, 3, true},
		{"attempts at the limit", []fixture.Column{fixture.Attempts(3)}, true, false, retriesExhausted, 3, 3, true},
		{"attempts above the limit", []fixture.Column{fixture.Attempts(5)}, true, false, retriesExhausted, 5, 3, true},
		{"attempts at the limit while pending", []fixture.Column{fixture.Attempts(3)},
			false, false, retriesExhausted, 3, 3, true},
		{"null retry_limit reads as 3, below it", []fixture.Column{fixture.Null("retry_limit"), fixture.Attempts(2)},
			true, true, "", 2, 3, true},
		{"null retry_limit reads as 3, at it", []fixture.Column{fixture.Null("retry_limit"), fixture.Attempts(3)},
			true, false, retriesExhausted, 3, 3, true},
		{"not retryable after an attempt", []fixture.Column{fixture.Retryable(false), fixture.Attempts(1)},
			true, false, notRetryable, 1, 3, false},
		{"not retryable and exhausted", []fixture.Column{fixture.Retryable(false), fixture.Attempts(3)},
			true, false, retriesExhausted, 3, 3, false},
		{"raised retry_limit", []fixture.Column{fixture.Attempts(3), fixture.RetryLimit(4)},
			true, true, "", 3, 4, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			tk := e.b.Task(single)
			if c.inError {
				tk.Transition("only", time.Hour, models.StateInProgress, models.StateError)
			}
			tk.Set("only", c.cols...)
			r := e.step(tk, "only")
			eq(t, "retry_eligible", r.RetryEligible, c.eligible)
			checkReady(t, "only", r, c.reason)
			eq(t, "attempts", r.Attempts, c.attempts)
			eq(t, "retry_limit", r.RetryLimit, c.retryLim)
			eq(t, "row retryable", tk.Row("only").Retryable, c.retryable)
		})
	}
}

// §3.3: a ready step, and each of the seven conditions failing alone.
func TestReadinessConditions(t *testing.T) {
	cases := []struct {
		name     string
		shape    fixture.Shape
		step     string
		setup    func(tk *fixture.Task)
		state    models.State
		deps     bool
		eligible bool
		reason   string
	}{
		{"all hold", single, "only", func(tk *fixture.Task) {}, models.StatePending, true, true, ""},
		{"all hold in error after backoff", single, "only", func(tk *fixture.Task) { tk.Fail("only", time.Minute) },
			models.StateError, true, true, ""},
		{"1: state in_progress", single, "only", func(tk *fixture.Task) {
			tk.Transition("only", 0, models.StateInProgress)
		}, models.StateInProgress, true, true, inProgress},
		{"1: state complete", single, "only", func(tk *fixture.Task) {
			tk.Transition("only", 0, models.StateInProgress, models.StateComplete)
		}, models.StateComplete, true, true, terminalState},
		{"1: state cancelled", single, "only", func(tk *fixture.Task) {
			tk.Transition("only", 0, models.StateCancelled)
		}, models.StateCancelled, true, true, terminalState},
		{"1: state resolved_manually", single, "only", func(tk *fixture.Task) {
			tk.Transition("only", 0, models.StateResolvedManually)
		}, models.StateResolvedManually, true, true, terminalState},
		{"2: processed", single, "only", func(tk *fixture.Task) {
			tk.Set("only", fixture.Processed(true))
		}, models.StatePending, true, true, alreadyProcessed},
		{"3: dependencies not satisfied", pair, "child", func(tk *fixture.Task) {},
			models.StatePending, false, true, depsNotSatisfied},
		{"4: not retry-eligible", single, "only", func(tk *fixture.Task) {
			tk.Set("only", fixture.Attempts(3))
		}, models.StatePending, true, false, retriesExhausted},
		{"5: in_process", single, "only", func(tk *fixture.Task) {
			tk.Set("only", fixture.InProcess(true))
		}, models.StatePending, true, true, inProgress},
		{"6: explicit backoff", single, "only", func(tk *fixture.Task) {
			tk.Set("only", fixture.Backoff(30), fixture.AttemptedAgo(0))
		}, models.StatePending, true, true, backoff},
		{"7: implicit backoff", single, "only", func(tk *fixture.Task) { failJustNow(tk, "only") },
			models.StateError, true, true, backoff},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			tk := e.b.Task(c.shape)
			c.setup(tk)
			r := e.step(tk, c.step)
			eq(t, "current_state", r.CurrentState, c.state)
			eq(t, "dependencies_satisfied", r.DependenciesSatisfied, c.deps)
			eq(t, "retry_eligible", r.RetryEligible, c.eligible)
			checkReady(t, c.step, r, c.reason)
		})
	}
}

// §3.3 conditions 6 and 7, next_retry_at and §8's backoff examples.
func TestBackoff(t *testing.T) {
	type result struct {
		reason    string
		failedAt  *time.Time // the error transition, when the step is in error
		nextRetry func(row models.WorkflowStep, failedAt time.Time) time.Time
	}
	explicit := func(secs int) func(models.WorkflowStep, time.Time) time.Time {
		return func(row models.WorkflowStep, _ time.Time) time.Time {
			return row.LastAttemptedAt.Add(time.Duration(secs) * time.Second)
		}
	}
	implicit := func(secs int) func(models.WorkflowStep, time.Time) time.Time {
		return func(_ models.WorkflowStep, failedAt time.Time) time.Time {
			return failedAt.Add(time.Duration(secs) * time.Second)
		}
	}
	both := func(exp, imp int) func(models.WorkflowStep, time.Time) time.Time {
		return func(row models.WorkflowStep, failedAt time.Time) time.Time {
			return later(explicit(exp)(row, failedAt), implicit(imp)(row, failedAt))
		}
	}
	cases := []struct {
		name      string
		setup     func(tk *fixture.Task) (failedAt time.Time) // zero when not in error
		reason    string
		nextRetry func(row models.WorkflowStep, failedAt time.Time) time.Time
	}{
		{"explicit 30 s, attempted just now", func(tk *fixture.Task) time.Time {
			tk.Set("only", fixture.Attempts(1), fixture.Backoff(30), fixture.AttemptedAgo(0))
			return time.Time{}
		}, backoff, explicit(30)},
		{"explicit 30 s, attempted 31 s ago", func(tk *fixture.Task) time.Time {
			tk.Set("only", fixture.Attempts(1), fixture.Backoff(30), fixture.AttemptedAgo(31*time.Second))
			return time.Time{}
		}, "", explicit(30)},
		{"explicit delay before the first attempt", func(tk *fixture.Task) time.Time {
			tk.Set("only", fixture.Backoff(30), fixture.AttemptedAgo(0))
			return time.Time{}
		}, backoff, explicit(30)},
		{"explicit delay while in error", func(tk *fixture.Task) time.Time {
			at := tk.Fail("only", time.Minute)
			tk.Set("only", fixture.Backoff(120))
			return at
		}, backoff, both(120, 2)},
		{"2nd attempt failed just now: 4 s", func(tk *fixture.Task) time.Time {
			tk.Set("only", fixture.Attempts(1))
			return tk.Fail("only", 0)
		}, backoff, implicit(4)},
		{"2nd attempt failed 2 s ago", func(tk *fixture.Task) time.Time {
			tk.Set("only", fixture.Attempts(1))
			return tk.Fail("only", 2*time.Second)
		}, backoff, implicit(4)},
		{"2nd attempt failed 5 s ago", func(tk *fixture.Task) time.Time {
			tk.Set("only", fixture.Attempts(1))
			return tk.Fail("only", 5*time.Second)
		}, "", implicit(4)},
		{"capped at 30 s, failed 25 s ago", func(tk *fixture.Task) time.Time {
			tk.Set("only", fixture.Attempts(9), fixture.RetryLimit(20))
			return tk.Fail("only", 25*time.Second)
		}, backoff, implicit(30)},
		{"capped at 30 s, failed 31 s ago", func(tk *fixture.Task) time.Time {
			tk.Set("only", fixture.Attempts(9), fixture.RetryLimit(20))
			return tk.Fail("only", 31*time.Second)
		}, "", implicit(30)},
		{"both, explicit later", func(tk *fixture.Task) time.Time {
			at := tk.Fail("only", time.Second) // 1 attempt: 2 s
			tk.Set("only", fixture.Backoff(30))
			return at
		}, backoff, both(30, 2)},
		{"both, implicit later", func(tk *fixture.Task) time.Time {
			tk.Set("only", fixture.Attempts(3), fixture.RetryLimit(5))
			at := tk.Fail("only", time.Second) // 4 attempts: 16 s
			tk.Set("only", fixture.Backoff(2))
			return at
		}, backoff, both(2, 16)},
		{"explicit elapsed, implicit not", func(tk *fixture.Task) time.Time {
			tk.Set("only", fixture.Attempts(3), fixture.RetryLimit(5))
			at := tk.Fail("only", 10*time.Second) // 16 s
			tk.Set("only", fixture.Backoff(5))
			return at
		}, backoff, both(5, 16)},
		{"implicit elapsed, explicit not", func(tk *fixture.Task) time.Time {
			at := tk.Fail("only", 10*time.Second) // 2 s
			tk.Set("only", fixture.Backoff(30))
			return at
		}, backoff, both(30, 2)},
		{"both elapsed", func(tk *fixture.Task) time.Time {
			at := tk.Fail("only", 40*time.Second)
			tk.Set("only", fixture.Backoff(30))
			return at
		}, "", both(30, 2)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			tk := e.b.Task(single)
			failedAt := c.setup(tk)
			row := tk.Row("only")
			r := e.step(tk, "only")
			checkReady(t, "only", r, c.reason)
			if failedAt.IsZero() {
				isNull(t, "last_failure_at", r.LastFailureAt)
			} else {
				eqTime(t, "last_failure_at", r.LastFailureAt, failedAt)
			}
			if row.LastAttemptedAt != nil {
				eqTime(t, "last_attempted_at", r.LastAttemptedAt, *row.LastAttemptedAt)
			}
			eqTime(t, "next_retry_at", r.NextRetryAt, c.nextRetry(row, failedAt))
			if row.BackoffRequestSeconds != nil {
				if r.BackoffRequestSeconds == nil || *r.BackoffRequestSeconds != *row.BackoffRequestSeconds {
					t.Errorf("backoff_request_seconds = %v, want %d", r.BackoffRequestSeconds, *row.BackoffRequestSeconds)
				}
			}
		})
	}
}

// §3.3: when last_failure_at and next_retry_at are null.
func TestFailureAndRetryTimesAreNullWhenTheyDoNotApply(t *testing.T) {
	cases := []struct {
		name        string
		setup       func(tk *fixture.Task)
		reason      string
		nullFailure bool
		nullRetry   bool
	}{
		{"fresh pending: neither backoff applies", func(tk *fixture.Task) {}, "", true, true},
		{"in error", func(tk *fixture.Task) { tk.Fail("only", time.Minute) }, "", false, false},
		{"retried: error then pending", func(tk *fixture.Task) {
			tk.Fail("only", time.Minute)
			tk.Transition("only", 0, models.StatePending)
		}, "", true, true},
		{"processed", func(tk *fixture.Task) {
			tk.Set("only", fixture.Processed(true), fixture.Backoff(30), fixture.AttemptedAgo(0))
		}, alreadyProcessed, true, true},
		{"processed in error", func(tk *fixture.Task) {
			tk.Fail("only", 0)
			tk.Set("only", fixture.Processed(true), fixture.Backoff(30))
		}, alreadyProcessed, false, true},
		{"complete", func(tk *fixture.Task) {
			tk.Complete("only")
			tk.Set("only", fixture.Backoff(30))
		}, alreadyProcessed, true, true},
		{"cancelled", func(tk *fixture.Task) {
			tk.Fail("only", 0)
			tk.Set("only", fixture.Backoff(30))
			tk.Transition("only", 0, models.StateCancelled)
		}, terminalState, true, true},
		{"resolved_manually", func(tk *fixture.Task) {
			tk.Fail("only", 0)
			tk.Set("only", fixture.Backoff(30))
			tk.Transition("only", 0, models.StateResolvedManually)
		}, terminalState, true, true},
		{"in_progress", func(tk *fixture.Task) {
			tk.Fail("only", 0)
			tk.Set("only", fixture.Backoff(30))
			tk.Transition("only", 0, models.StatePending, models.StateInProgress)
		}, inProgress, true, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			tk := e.b.Task(single)
			c.setup(tk)
			r := e.step(tk, "only")
			checkReady(t, "only", r, c.reason)
			if c.nullFailure {
				isNull(t, "last_failure_at", r.LastFailureAt)
			} else if r.LastFailureAt == nil {
				t.Errorf("last_failure_at is null for a step in error")
			}
			if c.nullRetry {
				isNull(t, "next_retry_at", r.NextRetryAt)
			} else if r.NextRetryAt == nil {
				t.Errorf("next_retry_at is null for a step in error")
			}
		})
	}
}

// §3.4: the first reason that applies wins.
func TestBlockingReasonOrder(t *testing.T) {
	cases := []struct {
		name   string
		shape  fixture.Shape
		step   string
		setup  func(tk *fixture.Task)
		reason string
	}{
		{"processed beats error", single, "only", func(tk *fixture.Task) {
			tk.Fail("only", time.Hour)
			tk.Set("only", fixture.Processed(true))
		}, alreadyProcessed},
		{"processed beats in_process and complete", single, "only", func(tk *fixture.Task) {
			tk.Complete("only")
			tk.Set("only", fixture.InProcess(true))
		}, alreadyProcessed},
		{"in_process beats terminal state", single, "only", func(tk *fixture.Task) {
			tk.Transition("only", 0, models.StateCancelled)
			tk.Set("only", fixture.InProcess(true))
		}, inProgress},
		{"in_progress beats unmet dependencies", pair, "child", func(tk *fixture.Task) {
			tk.Transition("child", 0, models.StateInProgress)
		}, inProgress},
		{"in_process beats unmet dependencies", pair, "child", func(tk *fixture.Task) {
			tk.Set("child", fixture.InProcess(true))
		}, inProgress},
		{"terminal state beats unmet dependencies", pair, "child", func(tk *fixture.Task) {
			tk.Transition("child", 0, models.StateCancelled)
		}, terminalState},
		{"unmet dependencies beat retries exhausted", pair, "child", func(tk *fixture.Task) {
			tk.Set("child", fixture.Attempts(3))
		}, depsNotSatisfied},
		{"unmet dependencies beat backoff", pair, "child", func(tk *fixture.Task) {
			tk.Set("child", fixture.Backoff(30), fixture.AttemptedAgo(0))
		}, depsNotSatisfied},
		{"retries exhausted beats backoff", single, "only", func(tk *fixture.Task) {
			tk.Set("only", fixture.Attempts(2))
			tk.Fail("only", 0)
		}, retriesExhausted},
		{"not retryable beats backoff", single, "only", func(tk *fixture.Task) {
			tk.Set("only", fixture.Retryable(false))
			tk.Fail("only", 0)
			tk.Set("only", fixture.Backoff(60))
		}, notRetryable},
		{"backoff", single, "only", func(tk *fixture.Task) { failJustNow(tk, "only") }, backoff},
		{"none: ready", pair, "child", func(tk *fixture.Task) { tk.Complete("parent") }, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			tk := e.b.Task(c.shape)
			c.setup(tk)
			checkReady(t, c.step, e.step(tk, c.step), c.reason)
		})
	}
}

// §5: execution_status, recommended_action, health and the step counts, rung by rung.
func TestExecutionContextLadder(t *testing.T) {
	exhaust := func(tk *fixture.Task, step string) {
		tk.Set(step, fixture.Attempts(2))
		tk.Fail(step, time.Hour)
	}
	cases := []struct {
		name  string
		shape fixture.Shape
		setup func(tk *fixture.Task)
		want  taskWant
	}{
		{"has_ready_steps", fixture.FourStep, func(tk *fixture.Task) {},
			taskWant{Total: 4, Pending: 4, Ready: 2,
				ExecutionStatus: "has_ready_steps", Action: "execute_ready_steps", Health: "healthy"}},
		{"has_ready_steps beats processing", fixture.FourStep, func(tk *fixture.Task) {
			tk.TaskTransition(0, models.StateInProgress)
			tk.Transition("one", 0, models.StateInProgress)
		}, taskWant{Status: models.StateInProgress, Total: 4, Pending: 3, InProgress: 1, Ready: 1,
			ExecutionStatus: "has_ready_steps", Action: "execute_ready_steps", Health: "healthy"}},
		{"processing: a step in_progress", single, func(tk *fixture.Task) {
			tk.Transition("only", 0, models.StateInProgress)
		}, taskWant{Total: 1, InProgress: 1,
			ExecutionStatus: "processing", Action: "wait_for_completion", Health: "healthy"}},
		{"processing: a pending step claimed (in_process)", single, func(tk *fixture.Task) {
			tk.Set("only", fixture.InProcess(true))
		}, taskWant{Total: 1, Pending: 1, InProgress: 1,
			ExecutionStatus: "processing", Action: "wait_for_completion", Health: "healthy"}},
		{"processing beats blocked_by_failures", fixture.FourStep, func(tk *fixture.Task) {
			exhaust(tk, "one")
			tk.Transition("two", 0, models.StateInProgress)
		}, taskWant{Total: 4, Pending: 2, InProgress: 1, Failed: 1, PermBlocked: 1,
			ExecutionStatus: "processing", Action: "wait_for_completion", Health: "blocked"}},
		{"blocked_by_failures: retries exhausted", single, func(tk *fixture.Task) { exhaust(tk, "only") },
			taskWant{Total: 1, Failed: 1, PermBlocked: 1,
				ExecutionStatus: "blocked_by_failures", Action: "handle_failures", Health: "blocked"}},
		{"blocked_by_failures: not retryable", single, func(tk *fixture.Task) {
			tk.Set("only", fixture.Retryable(false))
			tk.Fail("only", time.Hour)
		}, taskWant{Total: 1, Failed: 1, PermBlocked: 1,
			ExecutionStatus: "blocked_by_failures", Action: "handle_failures", Health: "blocked"}},
		{"blocked_by_failures: pending with no attempt left", single, func(tk *fixture.Task) {
			tk.Set("only", fixture.Attempts(3))
		}, taskWant{Total: 1, Pending: 1, PermBlocked: 1,
			ExecutionStatus: "blocked_by_failures", Action: "handle_failures", Health: "blocked"}},
		{"blocked_by_failures: a cancelled step", single, func(tk *fixture.Task) {
			tk.Transition("only", 0, models.StateCancelled)
		}, taskWant{Total: 1, PermBlocked: 1,
			ExecutionStatus: "blocked_by_failures", Action: "handle_failures", Health: "blocked"}},
		{"blocked_by_failures: a cancelled parent blocks its child", pair, func(tk *fixture.Task) {
			tk.Transition("parent", 0, models.StateCancelled)
		}, taskWant{Total: 2, Pending: 1, PermBlocked: 1,
			ExecutionStatus: "blocked_by_failures", Action: "handle_failures", Health: "blocked"}},
		{"recovering: exhausted but another step ready", fixture.FourStep, func(tk *fixture.Task) {
			exhaust(tk, "one")
		}, taskWant{Total: 4, Pending: 3, Failed: 1, Ready: 1, PermBlocked: 1,
			ExecutionStatus: "has_ready_steps", Action: "execute_ready_steps", Health: "recovering"}},
		{"recovering: cancelled but another step ready", fixture.FourStep, func(tk *fixture.Task) {
			tk.Transition("two", 0, models.StateCancelled)
		}, taskWant{Total: 4, Pending: 3, Ready: 1, PermBlocked: 1,
			ExecutionStatus: "has_ready_steps", Action: "execute_ready_steps", Health: "recovering"}},
		{"all_complete", fixture.FourStep, func(tk *fixture.Task) {
			tk.Complete("one", "two", "three", "four")
		}, taskWant{Total: 4, Completed: 4,
			ExecutionStatus: "all_complete", Action: "finalize_task", Health: "healthy", Percent: 100}},
		{"all_complete with a step resolved manually", pair, func(tk *fixture.Task) {
			tk.Complete("parent")
			tk.Transition("child", 0, models.StateResolvedManually)
		}, taskWant{Total: 2, Completed: 2,
			ExecutionStatus: "all_complete", Action: "finalize_task", Health: "healthy", Percent: 100}},
		{"waiting_for_dependencies: a failure backing off", single, func(tk *fixture.Task) {
			failJustNow(tk, "only")
		}, taskWant{Total: 1, Failed: 1,
			ExecutionStatus: "waiting_for_dependencies", Action: "wait_for_dependencies", Health: "recovering"}},
		{"waiting_for_dependencies: a parent backing off", pair, func(tk *fixture.Task) {
			failJustNow(tk, "parent")
		}, taskWant{Total: 2, Pending: 1, Failed: 1,
			ExecutionStatus: "waiting_for_dependencies", Action: "wait_for_dependencies", Health: "recovering"}},
		{"waiting_for_dependencies: an explicit delay", pair, func(tk *fixture.Task) {
			tk.Complete("parent")
			tk.Set("child", fixture.Backoff(60), fixture.AttemptedAgo(0))
		}, taskWant{Total: 2, Pending: 1, Completed: 1,
			ExecutionStatus: "waiting_for_dependencies", Action: "wait_for_dependencies", Health: "healthy",
			Percent: 50}},
		{"task status is the task's current state", single, func(tk *fixture.Task) {
			tk.TaskTransition(time.Minute, models.StateInProgress, models.StateError)
		}, taskWant{Status: models.StateError, Total: 1, Pending: 1, Ready: 1,
			ExecutionStatus: "has_ready_steps", Action: "execute_ready_steps", Health: "healthy"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			tk := e.b.Task(c.shape)
			c.setup(tk)
			e.checkTask(tk, c.want)
		})
	}
}

// §5 and §6: a task without steps has a row in both task views.
func TestEmptyTask(t *testing.T) {
	e := newEnv(t)
	tk := e.b.Task(empty)
	e.checkTask(tk, taskWant{ExecutionStatus: "waiting_for_dependencies", Action: "wait_for_dependencies",
		Health: "healthy"})
	s := e.summary(tk)
	eqIDs(t, "root_step_ids", s.RootStepIDs, []int64{})
	eqIDs(t, "ready_step_ids", s.ReadyStepIDs, []int64{})
	eqIDs(t, "blocked_step_ids", s.BlockedStepIDs, []int64{})
	if s.BlockingReasons == nil || len(s.BlockingReasons) != 0 {
		t.Errorf("blocking_reasons = %v (nil: %v), want []", s.BlockingReasons, s.BlockingReasons == nil)
	}
	eq(t, "root_step_count", s.RootStepCount, 0)
	eq(t, "max_dependency_level", s.MaxDependencyLevel, 0)
	eq(t, "parallelism_potential", s.ParallelismPotential, "no_ready_work")
	e.readiness(tk) // zero rows
	e.dag(tk)
}

// §5: completion_percentage, two decimals.
func TestCompletionPercentage(t *testing.T) {
	cases := []struct {
		name  string
		shape fixture.Shape
		setup func(tk *fixture.Task)
		want  float64
	}{
		{"none of 3", roots(3), func(tk *fixture.Task) {}, 0},
		{"1 of 3", roots(3), func(tk *fixture.Task) { tk.Complete("root_1") }, 33.33},
		{"2 of 3", roots(3), func(tk *fixture.Task) { tk.Complete("root_1", "root_2") }, 66.67},
		{"1 of 3 resolved manually", roots(3), func(tk *fixture.Task) {
			tk.Transition("root_2", 0, models.StateResolvedManually)
		}, 33.33},
		{"1 of 3 cancelled counts as not completed", roots(3), func(tk *fixture.Task) {
			tk.Transition("root_2", 0, models.StateCancelled)
		}, 0},
		{"1 of 4", fixture.FourStep, func(tk *fixture.Task) { tk.Complete("two") }, 25},
		{"1 of 6", fixture.Linear, func(tk *fixture.Task) { tk.Complete("initialize_data") }, 16.67},
		{"6 of 7", fixture.Diamond, func(tk *fixture.Task) {
			tk.Complete("start_workflow", "branch_one_process", "branch_two_process",
				"branch_one_validate", "branch_two_validate", "merge_branches")
		}, 85.71},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			tk := e.b.Task(c.shape)
			c.setup(tk)
			eq(t, "execution context completion_percentage", e.context(tk).CompletionPercentage, c.want)
			eq(t, "workflow summary completion_percentage", e.summary(tk).CompletionPercentage, c.want)
		})
	}
}

// §6: the summary's step lists and parallelism_potential.
func TestWorkflowSummary(t *testing.T) {
	t.Run("blocked steps with parallel reasons", func(t *testing.T) {
		e := newEnv(t)
		tk := e.b.Task(fixture.FourStep)
		tk.Set("one", fixture.Attempts(2))
		tk.Fail("one", time.Hour)              // retries exhausted
		tk.Set("two", fixture.InProcess(true)) // claimed, still pending
		s := e.summary(tk)
		eqIDs(t, "ready_step_ids", s.ReadyStepIDs, []int64{})
		eqIDs(t, "blocked_step_ids", s.BlockedStepIDs, tk.StepIDs("one", "two", "three", "four"))
		eq(t, "blocking_reasons", fmt.Sprint(s.BlockingReasons),
			fmt.Sprint([]string{retriesExhausted, inProgress, depsNotSatisfied, depsNotSatisfied}))
		eq(t, "parallelism_potential", s.ParallelismPotential, "no_ready_work")
	})
	t.Run("only pending and error steps are listed as blocked", func(t *testing.T) {
		e := newEnv(t)
		tk := e.b.Task(fixture.Mixed)
		tk.Transition("init_auth", 0, models.StateCancelled)
		failJustNow(tk, "init_config")
		s := e.summary(tk)
		eqIDs(t, "root_step_ids", s.RootStepIDs, tk.StepIDs("init_auth", "init_config"))
		eq(t, "root_step_count", s.RootStepCount, 2)
		eqIDs(t, "ready_step_ids", s.ReadyStepIDs, []int64{})
		blocked := []string{"init_config", "validate_permissions", "setup_environment", "begin_processing",
			"process_critical_data", "process_optional_data", "cleanup_temp_files", "finalize_and_report"}
		eqIDs(t, "blocked_step_ids", s.BlockedStepIDs, tk.StepIDs(blocked...))
		want := []string{backoff}
		for range blocked[1:] {
			want = append(want, depsNotSatisfied)
		}
		eq(t, "blocking_reasons", fmt.Sprint(s.BlockingReasons), fmt.Sprint(want))
		eq(t, "max_dependency_level", s.MaxDependencyLevel, 4)
	})
	t.Run("complete and in_progress steps are neither ready nor blocked", func(t *testing.T) {
		e := newEnv(t)
		tk := e.b.Task(fixture.Linear)
		tk.Complete("initialize_data")
		tk.Transition("validate_input", 0, models.StateInProgress)
		s := e.summary(tk)
		eqIDs(t, "root_step_ids", s.RootStepIDs, tk.StepIDs("initialize_data"))
		eqIDs(t, "ready_step_ids", s.ReadyStepIDs, []int64{})
		eqIDs(t, "blocked_step_ids", s.BlockedStepIDs,
			tk.StepIDs("process_data", "transform_results", "validate_output", "finalize_workflow"))
		eq(t, "blocking_reasons", fmt.Sprint(s.BlockingReasons),
			fmt.Sprint([]string{depsNotSatisfied, depsNotSatisfied, depsNotSatisfied, depsNotSatisfied}))
		eq(t, "max_dependency_level", s.MaxDependencyLevel, 5)
	})

	parallelism := []struct {
		name  string
		shape fixture.Shape
		setup func(tk *fixture.Task)
		ready int
		want  models.ParallelismPotential
	}{
		{"0 ready", single, func(tk *fixture.Task) { tk.Transition("only", 0, models.StateInProgress) },
			0, "no_ready_work"},
		{"1 ready", roots(1), func(tk *fixture.Task) {}, 1, "sequential_only"},
		{"2 ready", roots(2), func(tk *fixture.Task) {}, 2, "moderate_parallelism"},
		{"5 ready", roots(5), func(tk *fixture.Task) {}, 5, "moderate_parallelism"},
		{"6 ready", roots(6), func(tk *fixture.Task) {}, 6, "high_parallelism"},
		{"6 roots, 1 claimed: 5 ready", roots(6), func(tk *fixture.Task) {
			tk.Set("root_6", fixture.InProcess(true))
		}, 5, "moderate_parallelism"},
		{"tree after its root: 2 ready", fixture.Tree, func(tk *fixture.Task) {
			tk.Complete("root_initialization")
		}, 2, "moderate_parallelism"},
	}
	for _, c := range parallelism {
		t.Run("parallelism: "+c.name, func(t *testing.T) {
			e := newEnv(t)
			tk := e.b.Task(c.shape)
			c.setup(tk)
			s := e.summary(tk)
			eq(t, "ready_steps", s.ReadySteps, c.ready)
			eq(t, "len(ready_step_ids)", len(s.ReadyStepIDs), c.ready)
			eq(t, "parallelism_potential", s.ParallelismPotential, c.want)
			var ready []int64
			for n, r := range e.readiness(tk) {
				if r.ReadyForExecution {
					ready = append(ready, tk.Step(n))
				}
			}
			slices.Sort(ready)
			if ready == nil {
				ready = []int64{}
			}
			eqIDs(t, "ready_step_ids", s.ReadyStepIDs, ready)
		})
	}
}

// One row per step or per task, and batch reads by ANY return exactly the asked rows.
func TestRowCountsAndBatchReads(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	four, diamond, none, linear := e.b.Task(fixture.FourStep), e.b.Task(fixture.Diamond), e.b.Task(empty),
		e.b.Task(fixture.Linear)

	const steps, tasks = 4 + 7 + 0 + 6, 4
	for _, p := range db.Projections {
		if p.Kind != db.LiveView {
			continue
		}
		key, want := p.Key[0], int64(tasks)
		if key == "workflow_step_id" {
			want = steps
		}
		var n, distinct int64
		if err := e.db.Raw("SELECT count(*), count(DISTINCT "+key+") FROM "+p.Name).Row().Scan(&n, &distinct); err != nil {
			t.Fatalf("counting %s: %v", p.Name, err)
		}
		if n != want || distinct != want {
			t.Errorf("%s has %d rows (%d distinct %s), want %d", p.Name, n, distinct, key, want)
		}
	}

	asked := []int64{linear.ID, four.ID, none.ID}
	wantSteps := append(four.StepIDs("one", "two", "three", "four"), linear.StepIDs(
		"initialize_data", "validate_input", "process_data", "transform_results", "validate_output", "finalize_workflow")...)
	if four.ID > linear.ID {
		t.Fatalf("tasks were expected to be created in order")
	}
	r, err := models.ReadinessByTaskIDs(ctx, e.db, asked)
	if err != nil {
		t.Fatal(err)
	}
	eqIDs(t, "readiness step ids by task", stepIDsOf(r, func(x models.StepReadinessStatus) int64 { return x.WorkflowStepID }), wantSteps)
	d, err := models.DagByTaskIDs(ctx, e.db, asked)
	if err != nil {
		t.Fatal(err)
	}
	eqIDs(t, "dag step ids by task", stepIDsOf(d, func(x models.StepDagRelationship) int64 { return x.WorkflowStepID }), wantSteps)
	c, err := models.ExecutionContextsByTaskIDs(ctx, e.db, asked)
	if err != nil {
		t.Fatal(err)
	}
	eqIDs(t, "execution context task ids", stepIDsOf(c, func(x models.TaskExecutionContext) int64 { return x.TaskID }),
		[]int64{four.ID, none.ID, linear.ID})
	s, err := models.WorkflowSummariesByTaskIDs(ctx, e.db, asked)
	if err != nil {
		t.Fatal(err)
	}
	eqIDs(t, "workflow summary task ids", stepIDsOf(s, func(x models.TaskWorkflowSummary) int64 { return x.TaskID }),
		[]int64{four.ID, none.ID, linear.ID})

	some := []int64{diamond.Step("merge_branches"), four.Step("three"), linear.Step("finalize_workflow")}
	rs, err := models.ReadinessByStepIDs(ctx, e.db, some)
	if err != nil {
		t.Fatal(err)
	}
	wantByStep := slices.Clone(some)
	slices.Sort(wantByStep)
	eqIDs(t, "readiness by step ids", stepIDsOf(rs, func(x models.StepReadinessStatus) int64 { return x.WorkflowStepID }), wantByStep)
	ds, err := models.DagByStepIDs(ctx, e.db, some)
	if err != nil {
		t.Fatal(err)
	}
	eqIDs(t, "dag by step ids", stepIDsOf(ds, func(x models.StepDagRelationship) int64 { return x.WorkflowStepID }), wantByStep)
	for _, x := range rs {
		if x.WorkflowStepID == diamond.Step("merge_branches") && x.TaskID != diamond.ID {
			t.Errorf("merge_branches read with task_id %d, want %d", x.TaskID, diamond.ID)
		}
	}

	if got, err := models.ReadinessByTaskIDs(ctx, e.db, []int64{-1}); err != nil || len(got) != 0 {
		t.Errorf("reading an unknown task: %v rows, err %v; want none", len(got), err)
	}
}

func stepIDsOf[T any](rows []T, id func(T) int64) []int64 {
	out := []int64{}
	for _, r := range rows {
		out = append(out, id(r))
	}
	return out
}

// statementCounter counts the statements a pool sends.
type statementCounter struct{ n atomic.Int64 }

func (c *statementCounter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	c.n.Add(1)
	return ctx
}

func (c *statementCounter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// Read models refuse every write before any SQL is sent.
func TestViewModelsAreReadOnly(t *testing.T) {
	t.Parallel()
	counter := &statementCounter{}
	db, err := database.Open(context.Background(), dbtest.NewURL(t), database.Options{Tracer: counter})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = database.Close(db) })

	before := counter.n.Load()
	var rows []models.StepReadinessStatus
	if err := db.Find(&rows).Error; err != nil {
		t.Fatalf("reading the readiness view: %v", err)
	}
	if counter.n.Load() == before {
		t.Fatal("the statement counter does not see statements")
	}

	readModels := map[string]func() any{
		"StepReadinessStatus":  func() any { return &models.StepReadinessStatus{WorkflowStepID: 1, TaskID: 1} },
		"StepDagRelationship":  func() any { return &models.StepDagRelationship{WorkflowStepID: 1, TaskID: 1} },
		"TaskExecutionContext": func() any { return &models.TaskExecutionContext{TaskID: 1} },
		"TaskWorkflowSummary": func() any {
			return &models.TaskWorkflowSummary{TaskExecutionContext: models.TaskExecutionContext{TaskID: 1}}
		},
	}
	writes := map[string]func(db *gorm.DB, m any) error{
		"Create":  func(db *gorm.DB, m any) error { return db.Create(m).Error },
		"Save":    func(db *gorm.DB, m any) error { return db.Save(m).Error },
		"Delete":  func(db *gorm.DB, m any) error { return db.Delete(m).Error },
		"Update":  func(db *gorm.DB, m any) error { return db.Model(m).Update("task_id", 2).Error },
		"Updates": func(db *gorm.DB, m any) error { return db.Model(m).Updates(map[string]any{"task_id": 2}).Error },
	}
	for mName, newModel := range readModels {
		for wName, write := range writes {
			before := counter.n.Load()
			err := write(db, newModel())
			if !errors.Is(err, models.ErrReadOnly) {
				t.Errorf("%s on %s: err = %v, want ErrReadOnly", wName, mName, err)
			}
			if sent := counter.n.Load() - before; sent != 0 {
				t.Errorf("%s on %s sent %d statements, want none", wName, mName, sent)
			}
		}
	}
}
