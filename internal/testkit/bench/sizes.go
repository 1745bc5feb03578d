package bench

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

// Sizes reads the sizes a benchmark runs at from the environment variable env, a
// comma-separated list of integers (def when env is unset). A value that is not an integer of
// at least least fails tb, naming the variable.
func Sizes(tb testing.TB, env, def string, least int) []int {
	tb.Helper()
	v := os.Getenv(env)
	if v == "" {
		v = def
	}
	var out []int
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < least {
			tb.Fatalf("%s=%q: %q is not a number >= %d", env, v, f, least)
		}
		out = append(out, n)
	}
	return out
}
