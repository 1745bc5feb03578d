package auth

import (
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/taskerhq/tasker/internal/errs"
)

// Limits bound what one request, token or connection may ask. Zero fields take the defaults.
type Limits struct {
	// MaxBodyBytes refuses request bodies larger than this with 413 (default 1 MiB,
	// TASKER_MAX_BODY_BYTES).
	MaxBodyBytes int64
	// RatePerSecond is the sustained number of GraphQL operations one token may start per
	// second, per server process (default 50, TASKER_RATE_LIMIT; each process keeps its own
	// budget, so N processes admit up to N times this).
	RatePerSecond float64
	// Burst is how many operations a token may start at once above the sustained rate
	// (default 2×RatePerSecond, at least 1, TASKER_RATE_BURST).
	Burst int
	// MaxSubscriptions caps the active subscriptions of one websocket connection (default 20,
	// TASKER_MAX_SUBSCRIPTIONS).
	MaxSubscriptions int
	// MaxProcessSubscriptions caps the active websocket subscriptions of one server process,
	// all connections together (default 1,000, TASKER_MAX_PROCESS_SUBSCRIPTIONS): each one
	// re-reads the transition tables when woken, so their number bounds that work.
	MaxProcessSubscriptions int
	// StatementTimeout bounds the database work of one query or mutation; when it passes,
	// the running statement is cancelled (default 15s, TASKER_STATEMENT_TIMEOUT).
	StatementTimeout time.Duration
	// MaxWebsocketMessageBytes closes a websocket connection (status 1009) that sends a
	// larger message (default 64 KiB, TASKER_MAX_WS_MESSAGE_BYTES).
	MaxWebsocketMessageBytes int64
}

// WithDefaults returns l with every zero field set to its default.
func (l Limits) WithDefaults() Limits {
	if l.MaxBodyBytes <= 0 {
		l.MaxBodyBytes = 1 << 20
	}
	if l.RatePerSecond <= 0 {
		l.RatePerSecond = 50
	}
	if l.Burst <= 0 {
		l.Burst = max(1, int(2*l.RatePerSecond))
	}
	if l.MaxSubscriptions <= 0 {
		l.MaxSubscriptions = 20
	}
	if l.MaxProcessSubscriptions <= 0 {
		l.MaxProcessSubscriptions = 1000
	}
	if l.StatementTimeout <= 0 {
		l.StatementTimeout = 15 * time.Second
	}
	if l.MaxWebsocketMessageBytes <= 0 {
		l.MaxWebsocketMessageBytes = 64 << 10
	}
	return l
}

// LimitsFromEnv reads the TASKER_* variables named on Limits through getenv; unset ones take
// their defaults. A value that does not parse is an error naming the variable.
func LimitsFromEnv(getenv func(string) string) (Limits, error) {
	var l Limits
	ints := []struct {
		name string
		set  func(int64)
	}{
		{"TASKER_MAX_BODY_BYTES", func(n int64) { l.MaxBodyBytes = n }},
		{"TASKER_RATE_BURST", func(n int64) { l.Burst = int(n) }},
		{"TASKER_MAX_SUBSCRIPTIONS", func(n int64) { l.MaxSubscriptions = int(n) }},
		{"TASKER_MAX_PROCESS_SUBSCRIPTIONS", func(n int64) { l.MaxProcessSubscriptions = int(n) }},
		{"TASKER_MAX_WS_MESSAGE_BYTES", func(n int64) { l.MaxWebsocketMessageBytes = n }},
	}
	for _, v := range ints {
		if s := getenv(v.name); s != "" {
			n, err := strconv.ParseInt(s, 10, 32)
			if err != nil || n <= 0 {
				return l, errs.E(errs.Invalid, "%s=%q is not a positive integer", v.name, s)
			}
			v.set(n)
		}
	}
	if s := getenv("TASKER_RATE_LIMIT"); s != "" {
		f, err := strconv.ParseFloat(s, 64)
		if err != nil || f <= 0 {
			return l, errs.E(errs.Invalid, "TASKER_RATE_LIMIT=%q is not a positive number of operations per second", s)
		}
		l.RatePerSecond = f
	}
	if s := getenv("TASKER_STATEMENT_TIMEOUT"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 {
			return l, errs.E(errs.Invalid, "TASKER_STATEMENT_TIMEOUT=%q is not a positive duration (e.g. 15s)", s)
		}
		l.StatementTimeout = d
	}
	return l.WithDefaults(), nil
}

// limiters holds one token bucket per token id, in this process. Buckets idle for longer than
// it takes them to refill are dropped.
type limiters struct {
	rate  rate.Limit
	burst int

	mu      sync.Mutex
	buckets map[int64]*bucket
	calls   int
}

type bucket struct {
	lim  *rate.Limiter
	last time.Time
}

func newLimiters(perSecond float64, burst int) *limiters {
	return &limiters{rate: rate.Limit(perSecond), burst: burst, buckets: map[int64]*bucket{}}
}

// allow takes one operation from the bucket of token id; when the bucket is empty it returns
// false and how long until the next operation is allowed.
func (l *limiters) allow(id int64, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls++
	if l.calls%1024 == 0 {
		idle := time.Duration(float64(l.burst)/float64(l.rate)*float64(time.Second)) + time.Minute
		for k, b := range l.buckets {
			if now.Sub(b.last) > idle {
				delete(l.buckets, k)
			}
		}
	}
	b, ok := l.buckets[id]
	if !ok {
		b = &bucket{lim: rate.NewLimiter(l.rate, l.burst)}
		l.buckets[id] = b
	}
	b.last = now
	r := b.lim.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}
