package store

import (
	"context"
	"database/sql"
)

// queryRows runs a raw statement and appends one T per row, each filled by scanning into the
// targets dest returns for it (one per column, in the statement's column order). The engine
// runs its statements thousands of times a second, and GORM's Scan costs more than the
// statement's own work on the client: it renders every statement with its values for its
// logger (whether or not anything logs) and fills each row through reflection. Errors are
// translated like GORM's own (TranslateError).
func queryRows[T any](ctx context.Context, s *Store, dest func(*T) []any, query string, args ...any) ([]T, error) {
	tx := s.conn(ctx).Raw(query, args...)
	rows, err := tx.Rows()
	if err != nil {
		return nil, tx.AddError(err)
	}
	out, err := scanRows(rows, dest)
	if err != nil {
		return nil, tx.AddError(err)
	}
	return out, nil
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
