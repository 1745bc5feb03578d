// Package statemachine moves tasks and workflow steps through the states of SEMANTICS §2. It
// is the only write path for transitions: it checks the transition table and its guards,
// refuses moves to the current state, and writes each transition atomically (the new row with
// the next sort_key and most_recent = true, the previous current row cleared), serialising
// concurrent writers on one owner with a row lock on the owner. It holds the rules and plans
// the moves; the statements that lock owners, read their states and write the rows are
// internal/store's.
package statemachine

import "github.com/taskerhq/tasker/internal/models"

// Kind names what a transition moves: a task or a step.
type Kind string

// The two kinds of owner.
const (
	KindTask Kind = "task"
	KindStep Kind = "step"
)

type edge struct{ from, to models.State }

// stepMoves is the step transition table of SEMANTICS §2, mapping each allowed move to its
// event name. Terminal states have no outgoing moves.
var stepMoves = map[edge]string{
	{models.StatePending, models.StateInProgress}:       "execution_requested",
	{models.StatePending, models.StateError}:            "failed",
	{models.StatePending, models.StateCancelled}:        "cancelled",
	{models.StatePending, models.StateResolvedManually}: "resolved_manually",
	{models.StateInProgress, models.StateComplete}:      "completed",
	{models.StateInProgress, models.StateError}:         "failed",
	{models.StateInProgress, models.StateCancelled}:     "cancelled",
	{models.StateError, models.StatePending}:            "retry_requested",
	{models.StateError, models.StateResolvedManually}:   "resolved_manually",
	{models.StateError, models.StateCancelled}:          "cancelled",
}

// taskMoves is the task transition table of SEMANTICS §2 with event names.
var taskMoves = map[edge]string{
	{models.StatePending, models.StateInProgress}:         "start_requested",
	{models.StatePending, models.StateCancelled}:          "cancelled",
	{models.StatePending, models.StateError}:              "failed",
	{models.StateInProgress, models.StateComplete}:        "completed",
	{models.StateInProgress, models.StateError}:           "failed",
	{models.StateInProgress, models.StateCancelled}:       "cancelled",
	{models.StateInProgress, models.StatePending}:         "retry_requested",
	{models.StateError, models.StatePending}:              "retry_requested",
	{models.StateError, models.StateResolvedManually}:     "resolved_manually",
	{models.StateError, models.StateCancelled}:            "cancelled",
	{models.StateComplete, models.StateCancelled}:         "cancelled",
	{models.StateResolvedManually, models.StateCancelled}: "cancelled",
}

// Event returns the event name of a move and whether the move is in the table at all
// (guards are checked separately).
func Event(kind Kind, from, to models.State) (string, bool) {
	table := stepMoves
	if kind == KindTask {
		table = taskMoves
	}
	name, ok := table[edge{from, to}]
	return name, ok
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
