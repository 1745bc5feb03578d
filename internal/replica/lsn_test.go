package replica_test

import (
	"testing"

	"github.com/taskerhq/tasker/internal/replica"
)

func TestParseLSNReadsWhatPostgreSQLPrints(t *testing.T) {
	t.Parallel()
	for s, want := range map[string]replica.LSN{"0/0": 0, "0/16B3748": 0x16B3748, "16/B374D848": 0x16_B374D848, "FFFFFFFF/FFFFFFFF": ^replica.LSN(0)} {
		got, err := replica.ParseLSN(s)
		if err != nil || got != want {
			t.Errorf("ParseLSN(%q) = %v, %v; want %v", s, got, err, want)
		}
		if got.String() != s {
			t.Errorf("%q prints as %q", s, got.String())
		}
	}
	for _, s := range []string{"", "0", "/1", "1/", "x/1", "1/1/1", "100000000/0", "-1/0", "0/ 1"} {
		if _, err := replica.ParseLSN(s); err == nil {
			t.Errorf("ParseLSN(%q) accepted", s)
		}
	}
}
