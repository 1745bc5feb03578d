package model

import (
	"bytes"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/99designs/gqlgen/graphql"
)

// marshal writes m to a *bytes.Buffer (the executor's kind of writer, with spare room) and to
// another writer, and fails unless both agree.
func marshal(t *testing.T, m graphql.Marshaler) string {
	t.Helper()
	var buf bytes.Buffer
	buf.WriteString("prefix ")
	m.MarshalGQL(&buf)
	var other strings.Builder
	m.MarshalGQL(&other)
	if got := strings.TrimPrefix(buf.String(), "prefix "); got != other.String() {
		t.Fatalf("a *bytes.Buffer got %q, another writer %q", got, other.String())
	}
	return other.String()
}

func TestIDsAreQuotedDecimals(t *testing.T) {
	for _, id := range []int64{0, 1, 255, 256, 1389, math.MaxInt64, -7} {
		if got, want := marshal(t, MarshalInt64ID(id)), strconv.Quote(strconv.FormatInt(id, 10)); got != want {
			t.Errorf("ID %d written as %s, want %s", id, got, want)
		}
	}
}

func TestTimestampsAreRFC3339WithNanoseconds(t *testing.T) {
	for _, ts := range []time.Time{
		time.Date(2026, 12, 1, 0, 36, 53, 123456789, time.UTC),
		time.Date(2026, 12, 1, 0, 36, 53, 0, time.UTC),
		time.Date(1999, 1, 2, 3, 4, 5, 600, time.FixedZone("", -5*3600-30*60)),
	} {
		want := strconv.Quote(ts.Format(time.RFC3339Nano))
		if got := marshal(t, MarshalTimestamp(ts)); got != want {
			t.Errorf("%v written as %s, want %s", ts, got, want)
		}
	}
	if got := marshal(t, MarshalTimestamp(time.Time{})); got != "null" {
		t.Errorf("the zero instant written as %s, want null", got)
	}
}
