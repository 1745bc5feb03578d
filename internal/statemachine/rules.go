// Package statemachine moves tasks and workflow steps through the states of SEMANTICS §2. It
// is the only write path for transitions: it checks the transition table and its guards,
// refuses moves to the current state, and writes each transition atomically (the new row with
// the next sort_key and most_recent = true, the previous current row cleared), serialising
// concurrent writers on one owner with a row lock on the owner. It holds the rules and plans
// the moves; the statements that lock owners, read their states and write the rows are
// internal/store's.
package statemachine

import (
	"slices"

	"github.com/taskerhq/tasker/internal/models"
)

// Kind names what a transition moves: a task or a step.
type Kind string

// The two kinds of owner.
const (
	KindTask Kind = "task"
	KindStep Kind = "step"
)

// moves is the transition table of SEMANTICS §2: per kind, the states each state may move to.
// Terminal states have no outgoing moves (a task may still be cancelled from complete or
// resolved_manually by an operator).
var moves = map[Kind]map[models.State][]models.State{
	KindStep: {
		models.StatePending:    {models.StateInProgress, models.StateError, models.StateCancelled, models.StateResolvedManually},
		models.StateInProgress: {models.StateComplete, models.StateError, models.StateCancelled},
		models.StateError:      {models.StatePending, models.StateResolvedManually, models.StateCancelled},
	},
	KindTask: {
		models.StatePending:          {models.StateInProgress, models.StateCancelled, models.StateError},
		models.StateInProgress:       {models.StateComplete, models.StateError, models.StateCancelled, models.StatePending},
		models.StateError:            {models.StatePending, models.StateResolvedManually, models.StateCancelled},
		models.StateComplete:         {models.StateCancelled},
		models.StateResolvedManually: {models.StateCancelled},
	},
}

// events names the move to each state; a start is named per kind.
var events = map[models.State]string{
	models.StatePending:          "retry_requested",
	models.StateComplete:         "completed",
	models.StateError:            "failed",
	models.StateCancelled:        "cancelled",
	models.StateResolvedManually: "resolved_manually",
}

// Event returns the event name of a move and whether the move is in the table at all
// (guards are checked separately).
func Event(kind Kind, from, to models.State) (string, bool) {
	if !slices.Contains(moves[kind][from], to) {
		return "", false
	}
	if to == models.StateInProgress {
		if kind == KindTask {
			return "start_requested", true
		}
		return "execution_requested", true
	}
	return events[to], true
}

// Allowed lists the states an owner of kind in state from may move to (before guards).
func Allowed(kind Kind, from models.State) []models.State {
	var out []models.State
	for _, to := range models.AllStates {
		if _, ok := Event(kind, from, to); ok {
			out = append(out, to)
		}
	}
	return out
}
