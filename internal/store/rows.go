package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"reflect"
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
// statement walks its text byte by byte. So the statement, its ? placeholders (or, with a
// map, its @name ones) numbered once (see numbered, numberedNamed), runs on the store's
// connection or transaction directly (as the creation statements do), and its rows are
// scanned into their fields. Errors are translated like GORM's own (TranslateError).
func queryRows[T any](ctx context.Context, s *Store, dest func(*T) []any, query string, args ...any) ([]T, error) {
	var rows *sql.Rows
	var err error
	var stmt string
	if named, ok := namedArgs(args); ok {
		if stmt, args, ok = numberedNamed(query, named); !ok {
			rows, err = s.conn(ctx).Raw(query, named).Rows()
			return translated(s.db, rows, err, dest)
		}
	} else {
		stmt = numbered(query)
	}
	q, err := s.pool(ctx)
	if err != nil {
		return nil, err
	}
	rows, err = q.QueryContext(ctx, stmt, args...)
	return translated(s.db, rows, err, dest)
}

// execRaw runs a statement whose rows (if any) are not read as queryRows runs its
// statements: numbered once, on the store's connection or transaction, its error translated.
func execRaw(ctx context.Context, s *Store, query string, args ...any) error {
	_, err := execRawCount(ctx, s, query, args...)
	return err
}

// execRawCount is execRaw that returns the count of rows the statement changed.
func execRawCount(ctx context.Context, s *Store, query string, args ...any) (int64, error) {
	q, err := s.pool(ctx)
	if err != nil {
		return 0, err
	}
	res, err := q.ExecContext(ctx, numbered(query), args...)
	if err != nil {
		return 0, translate(s.db, err)
	}
	return res.RowsAffected()
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

// namedArgs returns the map of a statement's named parameters (its only argument).
func namedArgs(args []any) (map[string]any, bool) {
	if len(args) != 1 {
		return nil, false
	}
	named, ok := args[0].(map[string]any)
	return named, ok
}

// namedStatement is a statement with @name parameters numbered as GORM numbers them: sql, and
// the name of each parameter in order.
type namedStatement struct {
	sql   string
	names []string
}

// nameEnds holds the bytes that end a parameter's name in GORM's clause.NamedExpr.
const nameEnds = " ,)\"'`\r\n;"

// numberedNamed returns query with its @name parameters numbered $1, $2, … in order of
// appearance (a name used twice is two parameters) and their values from named, as GORM's
// clause.NamedExpr builds them: a name runs from its @ to the next byte of nameEnds, or the
// end. ok is false when GORM would build the statement otherwise (a name that named lacks
// stays as it is, a ? takes a positional value, a slice is expanded into a list); the caller
// then lets GORM build it. Each statement is numbered once.
func numberedNamed(query string, named map[string]any) (stmt string, args []any, ok bool) {
	var st namedStatement
	if v, found := numberedCache.Load("@" + query); found {
		st = v.(namedStatement)
	} else {
		if strings.IndexByte(query, '?') >= 0 {
			return "", nil, false
		}
		var b strings.Builder
		inName, start := false, 0
		param := func(end int) {
			st.names = append(st.names, query[start:end])
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(len(st.names)))
		}
		for i := range len(query) {
			switch c := query[i]; {
			case c == '@' && !inName:
				inName, start = true, i+1
			case strings.IndexByte(nameEnds, c) >= 0:
				if inName {
					param(i)
					inName = false
				}
				b.WriteByte(c)
			case !inName:
				b.WriteByte(c)
			}
		}
		if inName {
			param(len(query))
		}
		st.sql = b.String()
		numberedCache.Store("@"+query, st)
	}
	args = make([]any, len(st.names))
	for i, name := range st.names {
		v, found := named[name]
		if _, valuer := v.(driver.Valuer); !found || (!valuer && isList(v)) {
			return "", nil, false
		}
		args[i] = v
	}
	return st.sql, args, true
}

// isList reports whether v is a slice or an array, which GORM expands into a list.
func isList(v any) bool {
	k := reflect.ValueOf(v).Kind()
	return k == reflect.Slice || k == reflect.Array
}
