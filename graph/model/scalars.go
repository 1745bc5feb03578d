// Package model holds the GraphQL types that are not database models (generated into
// models_gen.go) and the Go side of the custom scalars: ID as int64, JSON as raw bytes and
// Time as an RFC 3339 instant.
package model

import (
	"bytes"
	"encoding/json"
	"io"
	"strconv"
	"time"

	"github.com/99designs/gqlgen/graphql"

	"github.com/taskerhq/tasker/internal/errs"
)

// MarshalInt64ID writes an int64 key as a GraphQL ID (a JSON string).
func MarshalInt64ID(id int64) graphql.Marshaler { return int64ID(id) }

// int64ID writes itself as a quoted decimal. A response writes an ID for most objects it
// holds, so this appends straight into the executor's buffer, without the closure and the two
// strings of a formatted-then-quoted value.
type int64ID int64

func (id int64ID) MarshalGQL(w io.Writer) {
	writeAppended(w, func(b []byte) []byte {
		b = append(b, '"')
		b = strconv.AppendInt(b, int64(id), 10)
		return append(b, '"')
	})
}

// writeAppended writes to w what appendTo appends: into the spare capacity of w when w is a
// *bytes.Buffer (as the executor's response buffer is), else through a small array.
func writeAppended(w io.Writer, appendTo func([]byte) []byte) {
	if buf, ok := w.(*bytes.Buffer); ok {
		buf.Write(appendTo(buf.AvailableBuffer()))
		return
	}
	var a [48]byte
	_, _ = w.Write(appendTo(a[:0]))
}

// UnmarshalInt64ID reads a GraphQL ID given as a string or a number. It refuses anything that
// is not a non-negative integer, naming the value. (0 is no object's id; as a cursor such as
// afterTransitionId it means "from the beginning".)
func UnmarshalInt64ID(v any) (int64, error) {
	var s string
	switch x := v.(type) {
	case string:
		s = x
	case json.Number:
		s = x.String()
	case int:
		s = strconv.Itoa(x)
	case int64:
		s = strconv.FormatInt(x, 10)
	default:
		return 0, errs.E(errs.Invalid, "ID %v (%T) is not a non-negative integer", v, v)
	}
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id < 0 {
		return 0, errs.E(errs.Invalid, "ID %q is not a non-negative integer", s)
	}
	return id, nil
}

// MarshalRawJSON writes a jsonb value as is; a nil value is JSON null.
func MarshalRawJSON(raw json.RawMessage) graphql.Marshaler {
	return graphql.WriterFunc(func(w io.Writer) {
		if len(raw) == 0 {
			_, _ = io.WriteString(w, "null")
			return
		}
		_, _ = w.Write(raw)
	})
}

// UnmarshalRawJSON accepts any GraphQL input value and encodes it as JSON.
func UnmarshalRawJSON(v any) (json.RawMessage, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, errs.E(errs.Invalid, "JSON input cannot be encoded: %v", err)
	}
	return b, nil
}

// MarshalTimestamp writes an instant in RFC 3339 with nanoseconds, as a JSON string; the
// zero instant is null.
func MarshalTimestamp(t time.Time) graphql.Marshaler {
	if t.IsZero() {
		return graphql.Null
	}
	return timestamp(t)
}

// timestamp writes itself as MarshalTimestamp says, appending into the executor's buffer as
// int64ID does (RFC 3339 needs no escaping inside its quotes).
type timestamp time.Time

func (t timestamp) MarshalGQL(w io.Writer) {
	writeAppended(w, func(b []byte) []byte {
		b = append(b, '"')
		b = time.Time(t).AppendFormat(b, time.RFC3339Nano)
		return append(b, '"')
	})
}

// UnmarshalTimestamp reads an RFC 3339 instant, naming the value it refuses.
func UnmarshalTimestamp(v any) (time.Time, error) {
	s, ok := v.(string)
	if !ok {
		return time.Time{}, errs.E(errs.Invalid, "Time %v (%T) is not an RFC 3339 string", v, v)
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, errs.E(errs.Invalid, "Time %q is not an RFC 3339 instant (e.g. 2024-05-01T12:00:00Z)", s)
	}
	return t, nil
}
