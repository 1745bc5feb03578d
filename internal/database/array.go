package database

import (
	"database/sql/driver"
	"reflect"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgtype"
)

// Array passes a list as one PostgreSQL array parameter (bigint[] or text[]), for `= ANY(?)`
// filters and `unnest(?)` joins. GORM would otherwise expand a plain slice into a list of
// parameters. It is the product's one way to pass an array.
//
// Through pgx (every pool of internal/database), an Array is sent as a binary array of its
// elements (pgtype.ArrayGetter: Dimensions, Index, IndexType), which pgx prefers to Value;
// Value's literal would otherwise be parsed back into elements by pgx before every statement,
// which cost the engine about a sixth of its CPU. Value remains for every other use (GORM's
// rendering of statements, other drivers).
type Array[T ~int64 | ~string] []T

// Dimensions is the array's one dimension; an empty (or nil) Array is the empty array, never
// NULL, as with Value.
func (a Array[T]) Dimensions() []pgtype.ArrayDimension {
	if len(a) == 0 {
		return []pgtype.ArrayDimension{}
	}
	return []pgtype.ArrayDimension{{Length: int32(len(a)), LowerBound: 1}}
}

// Index returns the element at i: an int64, or a textElement.
func (a Array[T]) Index(i int) any { return element(a[i]) }

// IndexType returns a value of the type Index returns.
func (a Array[T]) IndexType() any {
	var v T
	return element(v)
}

func element[T ~int64 | ~string](v T) any {
	switch x := any(v).(type) {
	case int64:
		return x
	case string:
		return textElement(x)
	}
	if rv := reflect.ValueOf(v); rv.Kind() == reflect.Int64 {
		return rv.Int()
	}
	return textElement(reflect.ValueOf(v).String())
}

// textElement is a string element of an Array as pgx encodes it: text for a text[] parameter,
// a uuid (parsed here) for a uuid[] one.
type textElement string

func (e textElement) TextValue() (pgtype.Text, error) {
	return pgtype.Text{String: string(e), Valid: true}, nil
}

func (e textElement) UUIDValue() (pgtype.UUID, error) {
	var u pgtype.UUID
	err := u.Scan(string(e))
	return u, err
}

// Value renders the list as a PostgreSQL array literal; strings are quoted and escaped, so any
// text round-trips.
func (a Array[T]) Value() (driver.Value, error) {
	var b strings.Builder
	b.WriteByte('{')
	for i, v := range a {
		if i > 0 {
			b.WriteByte(',')
		}
		switch x := any(v).(type) {
		case int64: // ids: the engine's hot path, without reflection
			b.WriteString(strconv.FormatInt(x, 10))
		case string:
			quote(&b, x)
		default: // a named type over int64 or string (a label)
			if rv := reflect.ValueOf(v); rv.Kind() == reflect.Int64 {
				b.WriteString(strconv.FormatInt(rv.Int(), 10))
			} else {
				quote(&b, rv.String())
			}
		}
	}
	b.WriteByte('}')
	return b.String(), nil
}

func quote(b *strings.Builder, s string) {
	b.WriteByte('"')
	for _, r := range s {
		if r == '"' || r == '\\' {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	b.WriteByte('"')
}
