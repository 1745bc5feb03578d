package statemachine

import (
	"errors"
	"fmt"
)

// ErrInvalidTransition is matched (errors.Is) by every refused move.
var ErrInvalidTransition = errors.New("invalid transition")

// ErrNotFound is returned when the task or step does not exist.
var ErrNotFound = errors.New("not found")

// TransitionError is a refused move. It names the owner, its current state and the requested
// one, and why the move was refused. Nothing was written.
type TransitionError struct {
	Kind   Kind
	ID     int64
	From   string
	To     string
	Reason string
}

func (e *TransitionError) Error() string {
	return fmt.Sprintf("cannot move %s %d from %s to %s: %s", e.Kind, e.ID, e.From, e.To, e.Reason)
}

// Is makes errors.Is(err, ErrInvalidTransition) true.
func (e *TransitionError) Is(target error) bool { return target == ErrInvalidTransition }

// NotFoundError names the missing owner.
type NotFoundError struct {
	Kind Kind
	ID   int64
}

func (e *NotFoundError) Error() string { return fmt.Sprintf("%s %d not found", e.Kind, e.ID) }

// Is makes errors.Is(err, ErrNotFound) true.
func (e *NotFoundError) Is(target error) bool { return target == ErrNotFound }
