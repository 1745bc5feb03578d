package models

import "fmt"

// State is the state of a task or a workflow step. Tasks and steps share one set of states.
type State string

// The states of SEMANTICS §2. A task or step with no transition row is Pending.
const (
	StatePending          State = "pending"
	StateInProgress       State = "in_progress"
	StateComplete         State = "complete"
	StateError            State = "error"
	StateCancelled        State = "cancelled"
	StateResolvedManually State = "resolved_manually"
)

// AllStates lists every state in a stable order.
var AllStates = []State{StatePending, StateInProgress, StateComplete, StateError, StateCancelled, StateResolvedManually}

// ParseState returns the State named s or an error naming the unknown value.
func ParseState(s string) (State, error) {
	for _, st := range AllStates {
		if string(st) == s {
			return st, nil
		}
	}
	return "", fmt.Errorf("unknown state %q (want one of %s)", s, joinLabels(AllStates))
}

// SatisfiesDependency reports whether a parent in this state lets its children run.
func (s State) SatisfiesDependency() bool {
	return s == StateComplete || s == StateResolvedManually
}
