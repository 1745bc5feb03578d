// Package apierr defines the errors a GraphQL client may see, each with a stable code in
// extensions.code, and classifies the errors of the layers below into them. Anything it does
// not recognise is internal: the error presenter logs it and shows it masked.
package apierr

import (
	"errors"
	"fmt"

	"github.com/taskerhq/tasker/graph/loaders"
	"github.com/taskerhq/tasker/internal/orchestration"
	"github.com/taskerhq/tasker/internal/statemachine"
)

// Code is the value of extensions.code.
type Code string

// The codes clients can rely on.
const (
	NotFound          Code = "NOT_FOUND"
	InvalidTransition Code = "INVALID_TRANSITION"
	Validation        Code = "VALIDATION"
	Conflict          Code = "CONFLICT"
	Internal          Code = "INTERNAL"
	// Unavailable: this server does not run what the operation needs (e.g. a refresher).
	Unavailable Code = "SERVICE_UNAVAILABLE"
	// Cancelled: the client cancelled the request (it closed the connection, navigated away,
	// stopped the subscription) before it was answered. It is not an internal error.
	Cancelled Code = "CANCELLED"
)

// Error is a domain error: its message says what was wrong and is shown as is.
type Error struct {
	Code    Code
	Message string
	Err     error // the cause, if any
}

func (e *Error) Error() string { return e.Message }

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Validationf returns a VALIDATION error with a formatted message.
func Validationf(format string, args ...any) error {
	return &Error{Code: Validation, Message: fmt.Sprintf(format, args...)}
}

// Classify returns the domain error err stands for, or nil when err is internal.
func Classify(err error) *Error {
	var ae *Error
	if errors.As(err, &ae) {
		return ae
	}
	var lnf *loaders.NotFoundError
	if errors.As(err, &lnf) {
		return &Error{Code: NotFound, Message: lnf.Error(), Err: err}
	}
	var snf *statemachine.NotFoundError
	if errors.As(err, &snf) {
		return &Error{Code: NotFound, Message: snf.Error(), Err: err}
	}
	var te *statemachine.TransitionError
	if errors.As(err, &te) {
		return &Error{Code: InvalidTransition, Message: te.Error(), Err: err}
	}
	var ve *orchestration.ValidationError
	if errors.As(err, &ve) {
		code := Validation
		if ve.Field == "idempotency_key" {
			code = Conflict
		}
		return &Error{Code: code, Message: ve.Error(), Err: err}
	}
	if errors.Is(err, orchestration.ErrNotFound) {
		return &Error{Code: NotFound, Message: err.Error(), Err: err}
	}
	if errors.Is(err, orchestration.ErrValidation) {
		return &Error{Code: Validation, Message: err.Error(), Err: err}
	}
	return nil
}
