package statemachine

import (
	"fmt"

	"github.com/taskerhq/tasker/internal/errs"
)

// TransitionError is a refused move: an errs.IllegalTransition (errs.KindOf sees it) that
// names the owner, its current state and the requested one, and why the move was refused.
// Nothing was written.
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

// Unwrap returns the refusal as a domain error of kind errs.IllegalTransition.
func (e *TransitionError) Unwrap() error {
	return &errs.Error{Kind: errs.IllegalTransition, Message: e.Error()}
}

// notFound is the error for an owner that does not exist.
func notFound(kind Kind, id int64) error {
	return errs.E(errs.NotFound, "%s %d not found", kind, id)
}

// refusal reports whether err is a refused move or an unknown owner, which callers get as is.
func refusal(err error) bool {
	return errs.Is(err, errs.IllegalTransition) || errs.Is(err, errs.NotFound)
}
