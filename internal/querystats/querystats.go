// Package querystats counts the SQL statements a unit of work (one GraphQL response) runs and
// the time they take. Tracer is a pgx.QueryTracer for database.Options.Tracer: it adds every
// statement to the Counter found in the statement's context, and ignores statements whose
// context carries none. GORM and database/sql pass the caller's context through to pgx, so
// installing a Counter in a request's context is enough to count everything it runs.
package querystats

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// Counter accumulates statements and their time. It is safe for concurrent use.
type Counter struct {
	statements atomic.Int64
	nanos      atomic.Int64
}

// Statements is the number of statements run so far.
func (c *Counter) Statements() int64 { return c.statements.Load() }

// Duration is the time spent in statements so far (summed, so concurrent statements add up).
func (c *Counter) Duration() time.Duration { return time.Duration(c.nanos.Load()) }

type counterKey struct{}

// WithCounter returns ctx carrying a new Counter, and that Counter.
func WithCounter(ctx context.Context) (context.Context, *Counter) {
	c := &Counter{}
	return context.WithValue(ctx, counterKey{}, c), c
}

// FromContext returns the Counter of ctx, or nil.
func FromContext(ctx context.Context) *Counter {
	c, _ := ctx.Value(counterKey{}).(*Counter)
	return c
}

// Tracer counts statements into the Counter of their context.
type Tracer struct{}

type startKey struct{}

// TraceQueryStart counts the statement and notes when it started.
func (Tracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	c := FromContext(ctx)
	if c == nil {
		return ctx
	}
	c.statements.Add(1)
	return context.WithValue(ctx, startKey{}, time.Now())
}

// TraceQueryEnd adds the statement's duration.
func (Tracer) TraceQueryEnd(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryEndData) {
	c := FromContext(ctx)
	start, ok := ctx.Value(startKey{}).(time.Time)
	if c == nil || !ok {
		return
	}
	c.nanos.Add(int64(time.Since(start)))
}
