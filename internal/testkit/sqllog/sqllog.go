// Package sqllog records the statements a connection pool runs, for tests that count them or
// check what was sent: a Log is a pgx.QueryTracer for database.Options.Tracer, and a
// pgx.BatchTracer, which records each statement of a pipeline (a pgx batch) in order too.
package sqllog

import (
	"context"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
)

// Log keeps the text of every statement, lower-cased and trimmed, in the order they started.
// It is safe for concurrent use.
type Log struct {
	mu  sync.Mutex
	sql []string
}

// TraceQueryStart records the statement.
func (l *Log) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sql = append(l.sql, strings.ToLower(strings.TrimSpace(data.SQL)))
	return ctx
}

// TraceQueryEnd does nothing.
func (l *Log) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// TraceBatchStart does nothing: the batch's statements are recorded one by one.
func (l *Log) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	return ctx
}

// TraceBatchQuery records a statement of a batch.
func (l *Log) TraceBatchQuery(_ context.Context, _ *pgx.Conn, data pgx.TraceBatchQueryData) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sql = append(l.sql, strings.ToLower(strings.TrimSpace(data.SQL)))
}

// TraceBatchEnd does nothing.
func (l *Log) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData) {}

// Take returns the statements recorded since the last Take, and forgets them.
func (l *Log) Take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.sql
	l.sql = nil
	return out
}
