package server

import (
	"context"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/errcode"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/taskerhq/tasker/graph/feed"
	"github.com/taskerhq/tasker/internal/errs"
)

// streamEnd tells a subscriber why its stream ended when it did not end cleanly: the last
// message before "complete" is an error with a code, never a silent end. A stream closed
// because its client fell too far behind (errs.SlowSubscriber) ends with SLOW_SUBSCRIBER: the
// client resumes with afterTransitionId.
type streamEnd struct{}

var _ interface {
	graphql.HandlerExtension
	graphql.OperationInterceptor
	graphql.ResponseInterceptor
} = streamEnd{}

func (streamEnd) ExtensionName() string                   { return "StreamEnd" }
func (streamEnd) Validate(graphql.ExecutableSchema) error { return nil }

// InterceptOperation gives every subscription a record of how its stream ends.
func (streamEnd) InterceptOperation(ctx context.Context, next graphql.OperationHandler) graphql.ResponseHandler {
	if op := graphql.GetOperationContext(ctx); op.Operation != nil && op.Operation.Operation == ast.Subscription {
		ctx = feed.WithEndRecord(ctx)
	}
	return next(ctx)
}

// InterceptResponse turns the end of a stream that ended with an error into one last
// response carrying that error; the next call ends the subscription.
func (streamEnd) InterceptResponse(ctx context.Context, next graphql.ResponseHandler) *graphql.Response {
	resp := next(ctx)
	if resp != nil {
		return resp
	}
	if err := feed.EndError(ctx); errs.Is(err, errs.SlowSubscriber) {
		code, msg := errs.Describe(err)
		gerr := gqlerror.Errorf("%s", msg)
		errcode.Set(gerr, code)
		return &graphql.Response{Errors: gqlerror.List{gerr}}
	}
	return nil
}
