package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"runtime/debug"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/taskerhq/tasker/internal/errs"
	"github.com/taskerhq/tasker/internal/replica"
	"github.com/taskerhq/tasker/internal/requestid"
)

// presenter is the API's one error presenter. Errors that gqlgen raised itself (parse,
// validation, limits) are shown as they are. Resolver errors are classified: a domain error
// is shown with its message and extensions.code; an error met after the client cancelled the
// request (its context ended with context.Canceled: the client went away) is logged at debug
// level only and coded CANCELLED; anything else is logged at error level with the request id
// (at warning level when a replica went away under a query, which then runs again on the
// primary) and shown as "internal error (request id ...)" with code INTERNAL.
type presenter struct{ log *slog.Logger }

func (p presenter) present(ctx context.Context, err error) *gqlerror.Error {
	gqlErr := graphql.DefaultErrorPresenter(ctx, err)
	cause := gqlErr.Unwrap()
	if cause == nil {
		// Raised by gqlgen (parse, validation, limits): already meant for the client.
		return codeGqlgenError(gqlErr)
	}
	if errs.Public(cause) {
		code, message := errs.Describe(cause)
		gqlErr.Message = message
		gqlErr.Extensions = map[string]any{"code": code}
		return gqlErr
	}
	var nested *gqlerror.Error
	if errors.As(cause, &nested) {
		return gqlErr // an input coercion error from generated code: already for the client
	}
	id := RequestID(ctx)
	if errors.Is(ctx.Err(), context.Canceled) {
		// Whatever failed, failed because the request was abandoned: nobody reads the answer,
		// and nothing is wrong with the server.
		p.log.DebugContext(ctx, "graphql: request cancelled by the client", "request_id", id, "path", gqlErr.Path.String(), "error", err)
		gqlErr.Message = "the request was cancelled by the client"
		gqlErr.Extensions = map[string]any{"code": errs.Cancelled.Code(), "requestId": id}
		return gqlErr
	}
	if replica.RouteOf(ctx).ReplicaFailed(cause) {
		// Met on a replica that went away: the query runs again on the primary (rerun.go), and
		// this error is not its answer.
		p.log.WarnContext(ctx, "graphql: a replica failed under a query, which runs again on the primary",
			"request_id", id, "path", gqlErr.Path.String(), "error", err)
	} else {
		p.log.ErrorContext(ctx, "graphql: internal error", "request_id", id, "path", gqlErr.Path.String(), "error", err)
	}
	gqlErr.Message = fmt.Sprintf("internal error (request id %s)", id)
	gqlErr.Extensions = map[string]any{"code": errs.Internal.Code(), "requestId": id}
	return gqlErr
}

// intVariable matches gqlparser's message for a JSON number that is not an integer given to
// an Int variable; it prints the value as 0.
var intVariable = regexp.MustCompile(`^cannot use value .* as Int$`)

// codeGqlgenError gives an error gqlgen raised without extensions.code the code BAD_REQUEST
// (every refusal has a code), and words gqlparser's misleading Int coercion message.
func codeGqlgenError(e *gqlerror.Error) *gqlerror.Error {
	if intVariable.MatchString(e.Message) {
		what := "the value"
		if len(e.Path) == 2 && fmt.Sprint(e.Path[0]) == "variable" {
			what = fmt.Sprintf("variable $%v", e.Path[1])
		}
		e.Message = what + " is not an Int: send a whole number between -2147483648 and 2147483647 (1e12 and 1.0 are not)"
	}
	if _, ok := e.Extensions["code"]; !ok {
		if e.Extensions == nil {
			e.Extensions = map[string]any{}
		}
		e.Extensions["code"] = codeBadRequest
	}
	return e
}

// recover turns a resolver panic into an internal error, logging the panic and its stack.
func (p presenter) recover(ctx context.Context, v any) error {
	p.log.ErrorContext(ctx, "graphql: panic in resolver", "request_id", RequestID(ctx),
		"panic", fmt.Sprint(v), "stack", string(debug.Stack()))
	return fmt.Errorf("panic in resolver: %v", v)
}

type requestIDKey struct{}

// RequestID returns the request id of ctx ("" outside a request).
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

// withRequestID gives every request an id: the client's X-Request-Id when it is sane, else a
// random one. The id is echoed in the X-Request-Id response header.
func withRequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := requestid.Ensure(w, r)
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), requestIDKey{}, id)))
	})
}
