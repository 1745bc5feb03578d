// Package apierr classifies the errors of the layers below the GraphQL API into what a client
// may see: a domain error shown with its message and a stable code in extensions.code. The
// mapping is internal/errs's (errs.Describe): this package only decides which errors are
// shown. Anything it does not recognise is internal: the error presenter logs it and shows it
// masked.
package apierr

import (
	"github.com/taskerhq/tasker/internal/errs"
)

// Code is the value of extensions.code.
type Code string

// The codes of the domain error kinds that the classification below gives by error type.
var (
	NotFound          = Code(errs.NotFound.Code())
	InvalidTransition = Code(errs.IllegalTransition.Code())
	Validation        = Code(errs.Invalid.Code())
	Conflict          = Code(errs.Conflict.Code())
)

// Error is a domain error as a client sees it: its message says what was wrong and is shown
// as is.
type Error struct {
	Code    Code
	Message string
	Err     error // the cause
}

func (e *Error) Error() string { return e.Message }

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Classify returns the domain error err stands for, or nil when err is internal. A cancelled
// request is not classified here: whether a request was abandoned is the presenter's call, from
// the request's context.
func Classify(err error) *Error {
	if k := errs.KindOf(err); k != errs.Internal && k != errs.Cancelled {
		code, msg := errs.Describe(err)
		return &Error{Code: Code(code), Message: msg, Err: err}
	}
	return nil
}
