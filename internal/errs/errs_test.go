package errs_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/taskerhq/tasker/internal/errs"
)

func TestKindSurvivesWrapping(t *testing.T) {
	cause := errors.New("no rows")
	err := fmt.Errorf("cancelling step 7: %w", errs.E(errs.NotFound, "step 7 not found: %w", cause))
	if !errs.Is(err, errs.NotFound) {
		t.Fatalf("KindOf(%v) = %v, want NOT_FOUND", err, errs.KindOf(err))
	}
	if !errors.Is(err, cause) {
		t.Error("the cause given with %w is not in the chain")
	}
	code, msg := errs.Describe(err)
	if code != "NOT_FOUND" || msg != "step 7 not found: no rows" {
		t.Errorf("Describe = %q, %q", code, msg)
	}
}

func TestDescribeMasksInternalErrors(t *testing.T) {
	code, msg := errs.Describe(errors.New("pq: connection reset with secret detail"))
	if code != "INTERNAL" || msg != "internal error" {
		t.Errorf("Describe = %q, %q", code, msg)
	}
	if code, _ := errs.Describe(fmt.Errorf("reading: %w", context.Canceled)); code != "CANCELLED" {
		t.Errorf("a cancelled context: code %q, want CANCELLED", code)
	}
}

func TestFieldNamesTheInput(t *testing.T) {
	e := errs.Field("context.order_id", "must be an integer, got %q", "x")
	if e.Kind != errs.Invalid || e.Field != "context.order_id" || e.Message != `context.order_id: must be an integer, got "x"` {
		t.Errorf("got %+v", e)
	}
}

func TestPublicShowsEveryDomainKindWithItsCode(t *testing.T) {
	for _, k := range []errs.Kind{errs.NotFound, errs.Invalid, errs.Conflict, errs.IllegalTransition,
		errs.Unavailable, errs.SlowSubscriber} {
		err := fmt.Errorf("cancelling step 7: %w", errs.E(k, "step 7 is what went wrong"))
		code, msg := errs.Describe(err)
		if !errs.Public(err) || code != k.Code() || msg != "step 7 is what went wrong" {
			t.Errorf("%v: public %v, described as %q, %q", k, errs.Public(err), code, msg)
		}
	}
}

func TestPublicLeavesInternalAndCancelledErrorsToThePresenter(t *testing.T) {
	for _, err := range []error{errors.New("connection reset"), fmt.Errorf("reading: %w", context.Canceled)} {
		if errs.Public(err) {
			t.Errorf("%v: public, want masked or left to the presenter", err)
		}
	}
}
