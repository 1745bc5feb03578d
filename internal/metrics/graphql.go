package metrics

import (
	"context"
	"errors"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2/ast"

	"github.com/taskerhq/tasker/internal/querystats"
)

// GraphQL returns the gqlgen extension that counts and times every GraphQL response and
// records its SQL statements. Install it after the extension that puts a querystats.Counter
// in each response's context (graph/server's per-response extension); without a counter the
// statement histogram is not fed.
func (m *Metrics) GraphQL() graphql.HandlerExtension { return gqlExtension{m} }

type gqlExtension struct{ m *Metrics }

var _ interface {
	graphql.HandlerExtension
	graphql.ResponseInterceptor
} = gqlExtension{}

func (gqlExtension) ExtensionName() string                   { return "Metrics" }
func (gqlExtension) Validate(graphql.ExecutableSchema) error { return nil }

func (e gqlExtension) InterceptResponse(ctx context.Context, next graphql.ResponseHandler) *graphql.Response {
	began := time.Now()
	resp := next(ctx)
	if resp == nil {
		return nil
	}
	typ, field := "unknown", "unknown"
	// A request that never became an operation (a body that did not decode) has no operation
	// context: GetOperationContext would panic.
	if op := operationOf(ctx); op != nil && op.Operation != nil {
		typ = string(op.Operation.Operation)
		field = rootField(op)
	}
	outcome := "ok"
	switch {
	case errors.Is(ctx.Err(), context.Canceled):
		outcome = "cancelled" // the client went away: not a failure of the server
	case len(resp.Errors) > 0:
		outcome = "error"
	}
	e.m.gqlRequests.WithLabelValues(typ, field, outcome).Inc()
	e.m.gqlDuration.WithLabelValues(typ, field).Observe(time.Since(began).Seconds())
	if c := querystats.FromContext(ctx); c != nil {
		e.m.gqlStatements.WithLabelValues(typ, field).Observe(float64(c.Statements()))
	}
	return resp
}

// rootField is the first root field of the operation that is not introspection ("multiple"
// when it selects several, "introspection" when it selects only those). Field names come from
// the schema, so the label's values are bounded.
func rootField(op *graphql.OperationContext) string {
	name := ""
	for _, sel := range op.Operation.SelectionSet {
		f, ok := sel.(*ast.Field)
		if !ok {
			return "multiple"
		}
		if len(f.Name) > 1 && f.Name[:2] == "__" {
			continue
		}
		if name != "" && name != f.Name {
			return "multiple"
		}
		name = f.Name
	}
	if name == "" {
		return "introspection"
	}
	return name
}

// operationOf returns the operation context of ctx, or nil when there is none.
func operationOf(ctx context.Context) *graphql.OperationContext {
	if !graphql.HasOperationContext(ctx) {
		return nil
	}
	return graphql.GetOperationContext(ctx)
}
