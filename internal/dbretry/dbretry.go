// Package dbretry is how the service's loops behave while the database fails: each loop that
// talks to the database (claims, recording, recovery, the events listener, the refresher, the
// transition streams) keeps one Streak, which
//   - spaces its attempts with exponential backoff and jitter (github.com/cenkalti/backoff/v5),
//     so a loop never spins while the database is down;
//   - logs a failure streak once, not once per attempt: the first failure (error level), then
//     "still failing" with the attempt count at most every StillFailingEvery (warning level),
//     then "recovered" with the number of failures and how long the streak lasted (info level);
//   - forgets the backoff at the first success, so the next failure starts small again.
//
// A loop waits out its backoff with Wait, which also returns at once on a wake-up channel: the
// events hub wakes every subscriber when it reconnects (see events.Hub), so a loop backing off
// retries as soon as the database is back rather than at the end of its backoff.
package dbretry

import (
	"context"
	"database/sql/driver"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// StillFailingEvery is the least time between two "still failing" lines of one streak.
const StillFailingEvery = 30 * time.Second

// Streak follows the failures of one loop. Create it with New; it is safe for concurrent use.
type Streak struct {
	log  *slog.Logger
	what string

	mu       sync.Mutex
	b        backoff.ExponentialBackOff
	failures int
	began    time.Time
	logged   time.Time
	every    time.Duration
}

// New returns a streak for the loop doing what (e.g. "claiming steps"), logging to log (nil
// discards), whose waits grow from initial (×2 per failure, ±50% jitter) to at most max.
func New(log *slog.Logger, what string, initial, max time.Duration) *Streak {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if max < initial {
		max = initial
	}
	s := &Streak{log: log, what: what, every: StillFailingEvery, b: backoff.ExponentialBackOff{
		InitialInterval: initial, RandomizationFactor: 0.5, Multiplier: 2, MaxInterval: max,
	}}
	s.b.Reset()
	return s
}

// Fail records a failed attempt, logs it if it starts the streak or StillFailingEvery has
// passed since the streak's last line, and returns how long to wait before the next attempt.
func (s *Streak) Fail(err error, attrs ...any) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	s.failures++
	switch {
	case s.failures == 1:
		s.began, s.logged = now, now
		s.log.Error(s.what+" failed; retrying with backoff", append([]any{"error", err}, attrs...)...)
	case now.Sub(s.logged) >= s.every:
		s.logged = now
		s.log.Warn(s.what+" still failing", append([]any{"attempts", s.failures,
			"for", now.Sub(s.began).Round(time.Millisecond), "error", err}, attrs...)...)
	}
	return s.b.NextBackOff()
}

// Succeed ends a streak: it logs the recovery, if there were failures, and resets the backoff.
func (s *Streak) Succeed() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failures == 0 {
		return
	}
	s.log.Info(s.what+" recovered", "failures", s.failures, "after", time.Since(s.began).Round(time.Millisecond))
	s.failures = 0
	s.b.Reset()
}

// Failures counts the failures of the current streak (0 when the last attempt succeeded).
func (s *Streak) Failures() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failures
}

// Wait waits d, or until wake (may be nil) receives or ctx ends. It reports whether ctx is
// still alive.
func Wait(ctx context.Context, d time.Duration, wake <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-wake:
	case <-t.C:
	}
	return true
}

// Do runs fn until it succeeds, fails with an error that is not Transient, or ctx ends,
// waiting between tries as s says (or until wake receives). It returns fn's last error; a
// success ends s's streak.
func Do(ctx context.Context, s *Streak, wake <-chan struct{}, fn func() error) error {
	for {
		err := fn()
		if err == nil {
			s.Succeed()
			return nil
		}
		if !Transient(err) {
			return err
		}
		if !Wait(ctx, s.Fail(err), wake) {
			return err
		}
	}
}

// Transient reports whether err is a database failure that is worth retrying as is: the
// connection was lost or refused (a restart, a failover), the server is shutting down or
// starting up, or the transaction lost a serialization or deadlock race. Errors of the
// request itself (bad data, a constraint) and cancellations are not transient.
func Transient(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case strings.HasPrefix(pgErr.Code, "08"): // connection exception
			return true
		case pgErr.Code == "57P01", pgErr.Code == "57P02", pgErr.Code == "57P03": // shutdown, crash, starting up
			return true
		case pgErr.Code == "40001", pgErr.Code == "40P01": // serialization failure, deadlock
			return true
		}
		return false
	}
	var netErr net.Error
	var connectErr *pgconn.ConnectError
	if errors.Is(err, driver.ErrBadConn) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		errors.As(err, &netErr) || errors.As(err, &connectErr) || pgconn.SafeToRetry(err) {
		return true
	}
	msg := err.Error()
	return strings.Contains(msg, "conn closed") || strings.Contains(msg, "connection reset") ||
		strings.Contains(msg, "broken pipe") || strings.Contains(msg, "unexpected EOF")
}
