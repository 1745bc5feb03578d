package tracing

import (
	"github.com/exaring/otelpgx"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/multitracer"
)

// PGX returns the statement tracer for a connection config: t itself while tracing is off,
// else t and otelpgx's tracer together (t may be nil). The SQL spans are children of the span
// on the statement's context, and only a statement whose context has a recording span gets
// one, so background statements (polls, refreshes) start no traces of their own. A statement's
// span is named "query <operation>" ("query SELECT") and has the statement's text (with
// placeholders, never the arguments); preparing a statement, once per connection, makes a
// "prepare <operation>" span, and opening a connection a "connect" span.
func PGX(t pgx.QueryTracer) pgx.QueryTracer {
	if !Enabled() {
		return t
	}
	ot := otelpgx.NewTracer(otelpgx.WithDisableConnectionDetailsInAttributes(), otelpgx.WithQuerySpanNamePrefix())
	if t == nil {
		return ot
	}
	return multitracer.New(t, ot)
}
