package retention

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/taskerhq/tasker/internal/errs"
)

// badPolicy is the error of a policy or configuration that cannot be used: an errs.Invalid
// error whose message starts "bad retention policy: ". Every error of ParsePolicy is one.
func badPolicy(format string, args ...any) error {
	return errs.E(errs.Invalid, "bad retention policy: "+format, args...)
}

// Policy says how long each namespace keeps its finished tasks. A period of zero keeps them
// forever.
type Policy struct {
	// Namespaces maps a namespace's name to its period.
	Namespaces map[string]time.Duration
	// Default applies to the namespaces not listed ("*").
	Default time.Duration
}

// Forever reports whether the policy deletes nothing.
func (p Policy) Forever() bool {
	if p.Default > 0 {
		return false
	}
	for _, d := range p.Namespaces {
		if d > 0 {
			return false
		}
	}
	return true
}

// String renders the policy in the syntax ParsePolicy reads, namespaces sorted.
func (p Policy) String() string {
	names := make([]string, 0, len(p.Namespaces))
	for n := range p.Namespaces {
		names = append(names, n)
	}
	slices.Sort(names)
	var parts []string
	for _, n := range names {
		parts = append(parts, n+"="+formatPeriod(p.Namespaces[n]))
	}
	parts = append(parts, "*="+formatPeriod(p.Default))
	return strings.Join(parts, ",")
}

func formatPeriod(d time.Duration) string {
	switch {
	case d == 0:
		return "forever"
	case d%(24*time.Hour) == 0:
		return strconv.FormatInt(int64(d/(24*time.Hour)), 10) + "d"
	default:
		return d.String()
	}
}

// ParsePolicy reads a comma-separated list of namespace=period pairs, "*" naming every
// namespace not listed. A period is a number of days ("30d"), a Go duration ("36h"), or
// "forever". An empty string keeps everything forever. Example: "billing=30d,*=90d".
func ParsePolicy(s string) (Policy, error) {
	p := Policy{Namespaces: map[string]time.Duration{}}
	s = strings.TrimSpace(s)
	if s == "" {
		return p, nil
	}
	seen := map[string]bool{}
	for _, item := range strings.Split(s, ",") {
		name, period, ok := strings.Cut(strings.TrimSpace(item), "=")
		name, period = strings.TrimSpace(name), strings.TrimSpace(period)
		if !ok || name == "" || period == "" {
			return Policy{}, badPolicy("%q is not namespace=period (e.g. billing=30d, *=90d)", item)
		}
		if seen[name] {
			return Policy{}, badPolicy("namespace %q is given twice", name)
		}
		seen[name] = true
		d, err := parsePeriod(period)
		if err != nil {
			return Policy{}, badPolicy("%s: %v", name, err)
		}
		if name == "*" {
			p.Default = d
		} else {
			p.Namespaces[name] = d
		}
	}
	return p, nil
}

func parsePeriod(s string) (time.Duration, error) {
	if s == "forever" {
		return 0, nil
	}
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n <= 0 {
			return 0, fmt.Errorf("period %q is not a positive number of days", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("period %q is not a positive duration (30d, 36h) or forever", s)
	}
	return d, nil
}
