package models

import (
	"fmt"
	"strings"
)

// The labels the live views compute, as typed constants spelled as the views spell them
// (snake_case). gqlgen.yml binds each GraphQL enum of graph/schema/enums.graphqls to one of
// these types, value by value, so a label reaches a client without any conversion code.

// BlockingReason is why a step is not ready to run (SEMANTICS §3.4): the readiness view's
// blocking_reason.
type BlockingReason string

// The blocking reasons, in the order in which the first that applies is chosen.
const (
	ReasonAlreadyProcessed         BlockingReason = "already_processed"
	ReasonInProgress               BlockingReason = "in_progress"
	ReasonTerminalState            BlockingReason = "terminal_state"
	ReasonDependenciesNotSatisfied BlockingReason = "dependencies_not_satisfied"
	ReasonRetriesExhausted         BlockingReason = "retries_exhausted"
	ReasonNotRetryable             BlockingReason = "not_retryable"
	ReasonBackoff                  BlockingReason = "backoff"
)

// BlockingReasons lists every blocking reason in the order of SEMANTICS §3.4.
var BlockingReasons = []BlockingReason{ReasonAlreadyProcessed, ReasonInProgress, ReasonTerminalState,
	ReasonDependenciesNotSatisfied, ReasonRetriesExhausted, ReasonNotRetryable, ReasonBackoff}

// ExecutionStatus is what a task is doing now, from its steps (SEMANTICS §5): the execution
// context's execution_status.
type ExecutionStatus string

// The execution statuses, in the order in which the first that matches is chosen.
const (
	ExecutionHasReadySteps          ExecutionStatus = "has_ready_steps"
	ExecutionProcessing             ExecutionStatus = "processing"
	ExecutionBlockedByFailures      ExecutionStatus = "blocked_by_failures"
	ExecutionAllComplete            ExecutionStatus = "all_complete"
	ExecutionWaitingForDependencies ExecutionStatus = "waiting_for_dependencies"
)

// RecommendedAction is what should happen next to a task; it follows its ExecutionStatus.
type RecommendedAction string

// The recommended actions, one per execution status in the same order.
const (
	ActionExecuteReadySteps   RecommendedAction = "execute_ready_steps"
	ActionWaitForCompletion   RecommendedAction = "wait_for_completion"
	ActionHandleFailures      RecommendedAction = "handle_failures"
	ActionFinalizeTask        RecommendedAction = "finalize_task"
	ActionWaitForDependencies RecommendedAction = "wait_for_dependencies"
)

// HealthStatus is whether a task can still make progress.
type HealthStatus string

// The health statuses.
const (
	HealthHealthy    HealthStatus = "healthy"
	HealthRecovering HealthStatus = "recovering"
	HealthBlocked    HealthStatus = "blocked"
)

// ParallelismPotential is how many steps of a task could run at once right now (SEMANTICS §6).
type ParallelismPotential string

// The parallelism potentials.
const (
	ParallelismHigh           ParallelismPotential = "high_parallelism"
	ParallelismModerate       ParallelismPotential = "moderate_parallelism"
	ParallelismSequentialOnly ParallelismPotential = "sequential_only"
	ParallelismNoReadyWork    ParallelismPotential = "no_ready_work"
)

// BlockedStep is a blocked step of a task and the reason it cannot run.
type BlockedStep struct {
	StepID         int64
	BlockingReason BlockingReason
}

// BlockedSteps pairs the summary's blocked step ids with their reasons, in the view's order.
// The view writes both lists from one ordered set of steps, so they have the same length;
// a summary where they do not is refused.
func (s *TaskWorkflowSummary) BlockedSteps() ([]BlockedStep, error) {
	if len(s.BlockedStepIDs) != len(s.BlockingReasons) {
		return nil, fmt.Errorf("workflow summary of task %d has %d blocked steps and %d reasons",
			s.TaskID, len(s.BlockedStepIDs), len(s.BlockingReasons))
	}
	out := make([]BlockedStep, len(s.BlockedStepIDs))
	for i, id := range s.BlockedStepIDs {
		out[i] = BlockedStep{StepID: id, BlockingReason: s.BlockingReasons[i]}
	}
	return out, nil
}

// joinLabels lists labels separated by commas, for error messages.
func joinLabels[L ~string](labels []L) string {
	parts := make([]string, len(labels))
	for i, l := range labels {
		parts[i] = string(l)
	}
	return strings.Join(parts, ", ")
}
