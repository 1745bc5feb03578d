// Package errs is the product's one domain error. Every package returns an *Error (or wraps
// one with %w) for a failure the caller caused or can act on: something not found, invalid
// input, a conflict, an illegal state transition, a service that is unavailable. Anything else
// is internal. The GraphQL error presenter and the command line both describe an error through
// Describe, so a client and an operator are told the same thing.
//
// Checking a kind:
//
//	if errs.Is(err, errs.NotFound) { ... }
package errs

import (
	"context"
	"errors"
	"fmt"
)

// Kind classifies a domain error. The zero value, Internal, is not a domain error.
type Kind uint8

// The kinds of error. Their codes (Kind.Code) are part of the public API.
const (
	// Internal is a failure of the server itself: clients see it masked, and it is logged.
	Internal Kind = iota
	// NotFound: the thing named (a task, step, template, token…) does not exist.
	NotFound
	// Invalid: the input is malformed or breaks a rule; the message names the field.
	Invalid
	// Conflict: the input is valid but collides with what exists (an idempotency key reused
	// with another request, a template version registered with another definition).
	Conflict
	// IllegalTransition: the state machine does not allow the move from the current state.
	IllegalTransition
	// Unavailable: this server does not run, or cannot reach, what the operation needs.
	Unavailable
	// Cancelled: the caller went away (closed the connection, cancelled the context) first.
	Cancelled
	// SlowSubscriber: a stream was closed because its reader fell too far behind; the reader
	// resumes from the last item it received.
	SlowSubscriber
)

var codes = [...]string{
	Internal:          "INTERNAL",
	NotFound:          "NOT_FOUND",
	Invalid:           "VALIDATION",
	Conflict:          "CONFLICT",
	IllegalTransition: "INVALID_TRANSITION",
	Unavailable:       "SERVICE_UNAVAILABLE",
	Cancelled:         "CANCELLED",
	SlowSubscriber:    "SLOW_SUBSCRIBER",
}

// Code is the kind's stable code: a GraphQL error's extensions.code, and the first word of a
// command line failure.
func (k Kind) Code() string {
	if int(k) < len(codes) {
		return codes[k]
	}
	return codes[Internal]
}

func (k Kind) String() string { return k.Code() }

// Error is a domain error: its Message says what was wrong in words meant for the person who
// sent the request, and is shown as is.
type Error struct {
	Kind Kind
	// Field names the input at fault, when there is one (e.g. "context.order_id").
	Field   string
	Message string
	// Err is the cause, if any; it is logged, not shown.
	Err error
}

func (e *Error) Error() string { return e.Message }

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// E returns a domain error of kind with a formatted message. A %w verb in format records its
// operand as the cause, as fmt.Errorf does.
func E(kind Kind, format string, args ...any) *Error {
	err := fmt.Errorf(format, args...)
	return &Error{Kind: kind, Message: err.Error(), Err: errors.Unwrap(err)}
}

// Field returns an Invalid error about one input field; the message is prefixed by the field's
// name.
func Field(field, format string, args ...any) *Error {
	e := E(Invalid, format, args...)
	e.Field = field
	e.Message = field + ": " + e.Message
	return e
}

// KindOf returns the kind of the first domain error in err's chain; a cancelled or expired
// context is Cancelled; anything else is Internal.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	if errors.Is(err, context.Canceled) {
		return Cancelled
	}
	return Internal
}

// Is reports whether err's chain holds a domain error of kind.
func Is(err error, kind Kind) bool { return err != nil && KindOf(err) == kind }

// Public reports whether err is shown to a client as Describe gives it: a domain error of any
// kind but Cancelled. Whether a request was abandoned is the caller's call, from the request's
// context; an internal error is masked.
func Public(err error) bool {
	k := KindOf(err)
	return k != Internal && k != Cancelled
}

// Describe is the one mapping from an error to what a client or an operator is told: the
// kind's code and a message. A domain error's message is its own; an internal error's message
// is "internal error", its detail kept for the log.
func Describe(err error) (code, message string) {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind.Code(), e.Message
	}
	k := KindOf(err)
	if k == Cancelled {
		return k.Code(), "the request was cancelled"
	}
	return k.Code(), "internal error"
}
