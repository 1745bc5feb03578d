package models

import (
	"database/sql/driver"
	"strconv"
	"strings"
)

// Int64Array passes a list of ids as one PostgreSQL bigint[] parameter, for `= ANY(?)`
// filters. (GORM would otherwise expand a plain slice into a list of parameters.)
type Int64Array []int64

// Value renders the array as a PostgreSQL array literal.
func (a Int64Array) Value() (driver.Value, error) {
	var b strings.Builder
	b.WriteByte('{')
	for i, id := range a {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatInt(id, 10))
	}
	b.WriteByte('}')
	return b.String(), nil
}
