package store

import (
	"context"
	"database/sql"
	"strconv"
	"strings"
	"sync"

	"gorm.io/gorm"
)

// queryRows runs a raw statement and appends one T per row, each filled by scanning into the
// targets dest returns for it (one per column, in the statement's column order). The engine
// runs its statements thousands of times a second, and GORM costs more than the statement's
// own work on the client: its Scan renders every statement with its values for its logger
// (whether or not anything logs) and fills each row through reflection, and building a raw
// statement walks its text byte by byte. So the statement, its ? placeholders numbered once
// (see numbered), runs on the store's connection or transaction directly (as the creation
// statements do), and its rows are scanned into their fields. A statement with named
// parameters (a map) goes through GORM's building. Errors are translated like GORM's own
// (TranslateError).
func queryRows[T any](ctx context.Context, s *Store, dest func(*T) []any, query string, args ...any) ([]T, error) {
	var rows *sql.Rows
	var err error
	if len(args) == 1 {
		if _, named := args[0].(map[string]any); named {
			rows, err = s.conn(ctx).Raw(query, args...).Rows()
			return translated(s.db, rows, err, dest)
		}
	}
	q, err := s.pool(ctx)
	if err != nil {
		return nil, err
	}
	rows, err = q.QueryContext(ctx, numbered(query), args...)
	return translated(s.db, rows, err, dest)
}

// execRaw runs a statement that returns no rows as queryRows runs its statements: numbered
// once, on the store's connection or transaction, its error translated.
func execRaw(ctx context.Context, s *Store, query string, args ...any) error {
	q, err := s.pool(ctx)
	if err != nil {
		return err
	}
	if _, err = q.ExecContext(ctx, numbered(query), args...); err != nil {
		return translate(s.db, err)
	}
	return nil
}

// translate translates err as db's Dialector does when db translates errors.
func translate(db *gorm.DB, err error) error {
	if t, ok := db.Dialector.(gorm.ErrorTranslator); ok && db.Config.TranslateError {
		return t.Translate(err)
	}
	return err
}

// translated scans rows (see scanRows) and translates the error of the query (err) or of
// the scan as db's Dialector does when db translates errors.
func translated[T any](db *gorm.DB, rows *sql.Rows, err error, dest func(*T) []any) ([]T, error) {
	var out []T
	if err == nil {
		out, err = scanRows(rows, dest)
	}
	if err == nil {
		return out, nil
	}
	return nil, translate(db, err)
}

// scanRows reads every row of rows (closing it) into one T each, filled through dest.
func scanRows[T any](rows *sql.Rows, dest func(*T) []any) (out []T, err error) {
	defer func() {
		if cerr := rows.Close(); err == nil {
			err = cerr
		}
	}()
	for rows.Next() {
		out = append(out, *new(T))
		if err := rows.Scan(dest(&out[len(out)-1])...); err != nil {
			return nil, err
		}
	}
	return out, rows.Err()
}

// int64Column is the dest of a statement whose one column is a bigint.
func int64Column(v *int64) []any { return []any{v} }

// numberedCache holds the statements numbered so far, by their text with ? placeholders.
var numberedCache sync.Map

// numbered returns query with its ? placeholders numbered $1, $2, … in order, as GORM numbers
// them for the statements that pass no slice (an Array is one parameter): the statement
// PostgreSQL receives is the one GORM would send. The store's statements are a fixed set, so
// each is numbered once.
func numbered(query string) string {
	if q, ok := numberedCache.Load(query); ok {
		return q.(string)
	}
	var b strings.Builder
	n := 0
	for i := range len(query) {
		if query[i] != '?' {
			b.WriteByte(query[i])
			continue
		}
		n++
		b.WriteByte('$')
		b.WriteString(strconv.Itoa(n))
	}
	numberedCache.Store(query, b.String())
	return b.String()
}
