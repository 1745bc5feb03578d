package models

// ExecutionContextOf returns the row of tasker_task_execution_contexts of the task taskID
// (of named task namedTaskID, in state status) whose steps, with their readiness rows, are
// steps: the same counts and verdicts as the view (SEMANTICS §5), derived from readiness
// rows already read rather than by reading the view, which would compute them again. steps
// must be every step of the task.
func ExecutionContextOf(taskID, namedTaskID int64, status State, steps []StepDetail) TaskExecutionContext {
	c := TaskExecutionContext{TaskID: taskID, NamedTaskID: namedTaskID, Status: status, TotalSteps: len(steps)}
	for i := range steps {
		r := &steps[i].Readiness
		switch r.CurrentState {
		case StatePending:
			c.PendingSteps++
		case StateError:
			c.FailedSteps++
		case StateComplete, StateResolvedManually:
			c.CompletedSteps++
		}
		if r.CurrentState == StateInProgress || steps[i].Step.InProcess {
			c.InProgressSteps++
		}
		if r.ReadyForExecution {
			c.ReadySteps++
		}
		waiting := r.CurrentState == StatePending || r.CurrentState == StateError
		if (waiting && !r.RetryEligible) || r.CurrentState == StateCancelled {
			c.PermanentlyBlockedSteps++
		}
	}
	switch {
	case c.ReadySteps > 0:
		c.ExecutionStatus, c.RecommendedAction = ExecutionHasReadySteps, ActionExecuteReadySteps
	case c.InProgressSteps > 0:
		c.ExecutionStatus, c.RecommendedAction = ExecutionProcessing, ActionWaitForCompletion
	case c.PermanentlyBlockedSteps > 0:
		c.ExecutionStatus, c.RecommendedAction = ExecutionBlockedByFailures, ActionHandleFailures
	case c.TotalSteps > 0 && c.CompletedSteps == c.TotalSteps:
		c.ExecutionStatus, c.RecommendedAction = ExecutionAllComplete, ActionFinalizeTask
	default:
		c.ExecutionStatus, c.RecommendedAction = ExecutionWaitingForDependencies, ActionWaitForDependencies
	}
	if c.TotalSteps > 0 {
		// round(completed * 100.0 / total, 2): hundredths rounded half away from zero, in
		// integers so that no binary fraction tips a half the wrong way.
		hundredths := (int64(c.CompletedSteps)*20000 + int64(c.TotalSteps)) / (2 * int64(c.TotalSteps))
		c.CompletionPercentage = float64(hundredths) / 100
	}
	switch {
	case c.FailedSteps == 0 && c.PermanentlyBlockedSteps == 0:
		c.HealthStatus = HealthHealthy
	case c.PermanentlyBlockedSteps > 0 && c.ReadySteps == 0:
		c.HealthStatus = HealthBlocked
	default:
		c.HealthStatus = HealthRecovering
	}
	return c
}
