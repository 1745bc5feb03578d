package database

import (
	"database/sql/driver"
	"reflect"
	"strconv"
	"strings"
)

// Array passes a list as one PostgreSQL array parameter (bigint[] or text[]), for `= ANY(?)`
// filters and `unnest(?)` joins. GORM would otherwise expand a plain slice into a list of
// parameters. It is the product's one way to pass an array.
type Array[T ~int64 | ~string] []T

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
