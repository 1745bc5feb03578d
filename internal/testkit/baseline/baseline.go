// Package baseline answers "which steps of this task are ready" and "what is this task's
// status" the naive way, one query at a time: a query for the task's steps, then per step a
// query for its current state and one for its parents, then per parent a query for the
// parent's state, with the retry and backoff rules evaluated in Go. It stands for the approach
// the live views replace and exists to be measured against them; it gives the same answers as
// tasker_step_readiness_statuses and tasker_task_execution_contexts (docs/SEMANTICS.md §3 and
// §5), which its tests check on the same data.
//
// Its cost grows as 1 + 2·steps + edges statements per task. Nothing here is used by the
// server.
package baseline

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"gorm.io/gorm"

	"github.com/taskerhq/tasker/internal/models"
)

// StepStatus is the readiness of one step (the columns of the readiness view that decide it).
type StepStatus struct {
	WorkflowStepID        int64
	TaskID                int64
	CurrentState          models.State
	DependenciesSatisfied bool
	RetryEligible         bool
	ReadyForExecution     bool
	TotalParents          int
	CompletedParents      int
	LastFailureAt         *time.Time
	NextRetryAt           *time.Time
	// BlockingReason is "" when the step is ready.
	BlockingReason string
	// InProcess is the step's in_process flag (a worker has claimed it).
	InProcess bool
}

type stepRow struct {
	WorkflowStepID        int64
	TaskID                int64
	Retryable             bool
	RetryLimit            *int
	Attempts              *int
	LastAttemptedAt       *time.Time
	BackoffRequestSeconds *int
	Processed             bool
	InProcess             bool
}

type transitionRow struct {
	ToState   string
	CreatedAt time.Time
}

// currentState reads one step's current transition (one statement). ok is false when the
// step has no transition (it is pending).
func currentState(ctx context.Context, db *gorm.DB, stepID int64) (transitionRow, bool, error) {
	var tr transitionRow
	err := db.WithContext(ctx).Raw(`SELECT to_state, created_at FROM tasker_workflow_step_transitions
		WHERE workflow_step_id = ? AND most_recent`, stepID).Take(&tr).Error
	if errors.Is(err, gorm.ErrRecordNotFound) {
		return tr, false, nil
	}
	if err != nil {
		return tr, false, fmt.Errorf("reading state of step %d: %w", stepID, err)
	}
	return tr, true, nil
}

// Steps evaluates the readiness of every step of a task, in step id order, at time now.
func Steps(ctx context.Context, db *gorm.DB, taskID int64, now time.Time) ([]StepStatus, error) {
	var rows []stepRow
	if err := db.WithContext(ctx).Raw(`SELECT workflow_step_id, task_id, retryable, retry_limit, attempts,
		last_attempted_at, backoff_request_seconds, processed, in_process
		FROM tasker_workflow_steps WHERE task_id = ? ORDER BY workflow_step_id`, taskID).Scan(&rows).Error; err != nil {
		return nil, fmt.Errorf("reading steps of task %d: %w", taskID, err)
	}
	out := make([]StepStatus, 0, len(rows))
	for _, r := range rows {
		st, err := evaluate(ctx, db, r, now)
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	return out, nil
}

// ReadySteps returns the ids of the task's steps that are ready for execution now, ascending.
func ReadySteps(ctx context.Context, db *gorm.DB, taskID int64, now time.Time) ([]int64, error) {
	steps, err := Steps(ctx, db, taskID, now)
	if err != nil {
		return nil, err
	}
	var ready []int64
	for _, s := range steps {
		if s.ReadyForExecution {
			ready = append(ready, s.WorkflowStepID)
		}
	}
	return ready, nil
}

func evaluate(ctx context.Context, db *gorm.DB, r stepRow, now time.Time) (StepStatus, error) {
	st := StepStatus{WorkflowStepID: r.WorkflowStepID, TaskID: r.TaskID, CurrentState: models.StatePending,
		InProcess: r.InProcess}
	cur, ok, err := currentState(ctx, db, r.WorkflowStepID)
	if err != nil {
		return st, err
	}
	if ok {
		st.CurrentState = models.State(cur.ToState)
		if st.CurrentState == models.StateError {
			t := cur.CreatedAt
			st.LastFailureAt = &t
		}
	}
	var parents []int64
	if err := db.WithContext(ctx).Raw(`SELECT from_step_id FROM tasker_workflow_step_edges WHERE to_step_id = ?`,
		r.WorkflowStepID).Scan(&parents).Error; err != nil {
		return st, fmt.Errorf("reading parents of step %d: %w", r.WorkflowStepID, err)
	}
	st.TotalParents = len(parents)
	for _, p := range parents {
		pcur, ok, err := currentState(ctx, db, p)
		if err != nil {
			return st, err
		}
		if ok && models.State(pcur.ToState).SatisfiesDependency() {
			st.CompletedParents++
		}
	}
	st.DependenciesSatisfied = st.CompletedParents == st.TotalParents

	attempts, limit := 0, 3
	if r.Attempts != nil {
		attempts = *r.Attempts
	}
	if r.RetryLimit != nil {
		limit = *r.RetryLimit
	}
	st.RetryEligible = attempts == 0 || (r.Retryable && attempts < limit)

	var explicitAt, implicitAt *time.Time
	if r.BackoffRequestSeconds != nil && r.LastAttemptedAt != nil {
		t := r.LastAttemptedAt.Add(time.Duration(*r.BackoffRequestSeconds) * time.Second)
		explicitAt = &t
	}
	if st.LastFailureAt != nil {
		secs := math.Min(math.Pow(2, float64(attempts)), 30)
		t := st.LastFailureAt.Add(time.Duration(secs) * time.Second)
		implicitAt = &t
	}
	elapsed := (explicitAt == nil || !explicitAt.After(now)) && (implicitAt == nil || !implicitAt.After(now))
	waiting := st.CurrentState == models.StatePending || st.CurrentState == models.StateError
	if waiting && !r.Processed {
		st.NextRetryAt = later(explicitAt, implicitAt)
	}
	st.ReadyForExecution = waiting && !r.Processed && st.DependenciesSatisfied && st.RetryEligible &&
		!r.InProcess && elapsed

	switch {
	case st.ReadyForExecution:
	case r.Processed:
		st.BlockingReason = "already_processed"
	case st.CurrentState == models.StateInProgress || r.InProcess:
		st.BlockingReason = "in_progress"
	case st.CurrentState == models.StateComplete || st.CurrentState == models.StateCancelled ||
		st.CurrentState == models.StateResolvedManually:
		st.BlockingReason = "terminal_state"
	case !st.DependenciesSatisfied:
		st.BlockingReason = "dependencies_not_satisfied"
	case !st.RetryEligible && attempts >= limit:
		st.BlockingReason = "retries_exhausted"
	case !st.RetryEligible:
		st.BlockingReason = "not_retryable"
	case !elapsed:
		st.BlockingReason = "backoff"
	}
	return st, nil
}

func later(a, b *time.Time) *time.Time {
	switch {
	case a == nil:
		return b
	case b == nil || a.After(*b):
		return a
	default:
		return b
	}
}

// TaskContext computes one task's execution context (docs/SEMANTICS.md §5): a query for the task's
// state, then Steps. It fills every column of the view but NamedTaskID, which no rule reads.
func TaskContext(ctx context.Context, db *gorm.DB, taskID int64, now time.Time) (models.TaskExecutionContext, error) {
	c := models.TaskExecutionContext{TaskID: taskID, Status: models.StatePending}
	var states []string
	if err := db.WithContext(ctx).Raw(`SELECT to_state FROM tasker_task_transitions WHERE task_id = ? AND most_recent`,
		taskID).Scan(&states).Error; err != nil {
		return c, fmt.Errorf("reading state of task %d: %w", taskID, err)
	}
	if len(states) > 0 {
		c.Status = models.State(states[0])
	}
	steps, err := Steps(ctx, db, taskID, now)
	if err != nil {
		return c, err
	}
	for _, s := range steps {
		c.TotalSteps++
		switch s.CurrentState {
		case models.StatePending:
			c.PendingSteps++
		case models.StateComplete, models.StateResolvedManually:
			c.CompletedSteps++
		case models.StateError:
			c.FailedSteps++
		}
		if s.CurrentState == models.StateInProgress || s.InProcess {
			c.InProgressSteps++
		}
		if s.ReadyForExecution {
			c.ReadySteps++
		}
		waiting := s.CurrentState == models.StatePending || s.CurrentState == models.StateError
		if (waiting && !s.RetryEligible) || s.CurrentState == models.StateCancelled {
			c.PermanentlyBlockedSteps++
		}
	}
	switch {
	case c.ReadySteps > 0:
		c.ExecutionStatus, c.RecommendedAction = "has_ready_steps", "execute_ready_steps"
	case c.InProgressSteps > 0:
		c.ExecutionStatus, c.RecommendedAction = "processing", "wait_for_completion"
	case c.PermanentlyBlockedSteps > 0:
		c.ExecutionStatus, c.RecommendedAction = "blocked_by_failures", "handle_failures"
	case c.TotalSteps > 0 && c.CompletedSteps == c.TotalSteps:
		c.ExecutionStatus, c.RecommendedAction = "all_complete", "finalize_task"
	default:
		c.ExecutionStatus, c.RecommendedAction = "waiting_for_dependencies", "wait_for_dependencies"
	}
	if c.TotalSteps > 0 {
		c.CompletionPercentage = math.Round(float64(c.CompletedSteps)*100/float64(c.TotalSteps)*100) / 100
	}
	switch {
	case c.FailedSteps == 0 && c.PermanentlyBlockedSteps == 0:
		c.HealthStatus = "healthy"
	case c.PermanentlyBlockedSteps > 0 && c.ReadySteps == 0:
		c.HealthStatus = "blocked"
	default:
		c.HealthStatus = "recovering"
	}
	return c, nil
}

// TaskContexts computes the execution contexts of a page of tasks, one task after another, in
// the order given.
func TaskContexts(ctx context.Context, db *gorm.DB, taskIDs []int64, now time.Time) ([]models.TaskExecutionContext, error) {
	out := make([]models.TaskExecutionContext, 0, len(taskIDs))
	for _, id := range taskIDs {
		c, err := TaskContext(ctx, db, id, now)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}
