package server

import (
	"context"
	"errors"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/errcode"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/taskerhq/tasker/graph/feed"
)

// codeSlowSubscriber ends a subscription whose client fell too far behind its stream (see
// feed.SlowSubscriberError): the client resumes with afterTransitionId.
const codeSlowSubscriber = "SLOW_SUBSCRIBER"

// streamEnd tells a subscriber why its stream ended when it did not end cleanly: the last
// message before "complete" is an error with a code (SLOW_SUBSCRIBER), never a silent end.
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
	var slow *feed.SlowSubscriberError
	if err := feed.EndError(ctx); errors.As(err, &slow) {
		gerr := gqlerror.Errorf("%s", slow.Error())
		errcode.Set(gerr, codeSlowSubscriber)
		return &graphql.Response{Errors: gqlerror.List{gerr}}
	}
	return nil
}
