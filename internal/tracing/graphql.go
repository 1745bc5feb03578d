package tracing

import (
	"context"
	"fmt"

	"github.com/99designs/gqlgen/graphql"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// GraphQL attribute keys (OpenTelemetry's semantic conventions for GraphQL).
const (
	graphQLOperationType = attribute.Key("graphql.operation.type")
	graphQLOperationName = attribute.Key("graphql.operation.name")
	graphQLFieldName     = attribute.Key("graphql.field.name")
	graphQLErrors        = attribute.Key("graphql.errors")
)

// UseGraphQL adds the GraphQL spans to a gqlgen server while tracing is on, and does nothing
// while it is off. Added before the other extensions, its spans enclose theirs:
//   - one span per response (a query or a mutation, each event of a subscription), named
//     "<type> <operation name>" ("query TaskDetail"; the type alone for an anonymous
//     operation), a child of the HTTP span, failed when the response has errors;
//   - one span per root field ("Query.tasks"), a child of the operation's span. Nested fields
//     get none: they are resolved by dataloaders in batches, whose SQL spans are children of
//     the field that started the batch.
func UseGraphQL(srv interface {
	Use(graphql.HandlerExtension)
}) {
	if Enabled() {
		srv.Use(graphQLTracer{tracer: Tracer()})
	}
}

type graphQLTracer struct{ tracer trace.Tracer }

var _ interface {
	graphql.HandlerExtension
	graphql.ResponseInterceptor
	graphql.FieldInterceptor
} = graphQLTracer{}

func (graphQLTracer) ExtensionName() string                   { return "Tracing" }
func (graphQLTracer) Validate(graphql.ExecutableSchema) error { return nil }

func (g graphQLTracer) InterceptResponse(ctx context.Context, next graphql.ResponseHandler) *graphql.Response {
	if !graphql.HasOperationContext(ctx) {
		return next(ctx)
	}
	oc := graphql.GetOperationContext(ctx)
	typ, name := "operation", oc.OperationName
	if oc.Operation != nil {
		typ = string(oc.Operation.Operation)
		if name == "" {
			name = oc.Operation.Name
		}
	}
	spanName := typ
	attrs := []attribute.KeyValue{graphQLOperationType.String(typ)}
	if name != "" {
		spanName += " " + name
		attrs = append(attrs, graphQLOperationName.String(name))
	}
	ctx, span := g.tracer.Start(ctx, spanName, trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(attrs...))
	defer span.End()
	resp := next(ctx)
	if resp != nil && len(resp.Errors) > 0 {
		span.SetAttributes(graphQLErrors.Int(len(resp.Errors)))
		span.SetStatus(codes.Error, resp.Errors[0].Message)
	}
	return resp
}

func (g graphQLTracer) InterceptField(ctx context.Context, next graphql.Resolver) (any, error) {
	fc := graphql.GetFieldContext(ctx)
	if !isRootField(fc) {
		return next(ctx)
	}
	ctx, span := g.tracer.Start(ctx, fmt.Sprintf("%s.%s", fc.Object, fc.Field.Name),
		trace.WithAttributes(graphQLFieldName.String(fc.Field.Name)))
	res, err := next(ctx)
	End(span, err)
	return res, err
}

// isRootField reports whether fc is a field of the operation's root type: no field or list
// element encloses it (the root object's own context has neither).
func isRootField(fc *graphql.FieldContext) bool {
	if fc == nil || fc.Field.Field == nil {
		return false
	}
	for p := fc.Parent; p != nil; p = p.Parent {
		if p.Field.Field != nil || p.Index != nil {
			return false
		}
	}
	return true
}
