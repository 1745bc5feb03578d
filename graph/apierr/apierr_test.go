package apierr_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/taskerhq/tasker/graph/apierr"
	"github.com/taskerhq/tasker/internal/errs"
)

func TestClassifyShowsDomainErrorsWithTheirKindsCode(t *testing.T) {
	for _, k := range []errs.Kind{errs.NotFound, errs.Invalid, errs.Conflict, errs.IllegalTransition,
		errs.Unavailable, errs.SlowSubscriber} {
		err := fmt.Errorf("cancelling step 7: %w", errs.E(k, "step 7 is what went wrong"))
		d := apierr.Classify(err)
		if d == nil || string(d.Code) != k.Code() || d.Message != "step 7 is what went wrong" || !errors.Is(d, err) {
			t.Errorf("%v: classified as %+v", k, d)
		}
	}
}

func TestClassifyLeavesInternalAndCancelledErrorsToThePresenter(t *testing.T) {
	for _, err := range []error{errors.New("connection reset"), fmt.Errorf("reading: %w", context.Canceled)} {
		if d := apierr.Classify(err); d != nil {
			t.Errorf("%v: classified as %+v, want nil", err, d)
		}
	}
}
