package dbretry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/taskerhq/tasker/internal/testkit/dbtest"
)

// TestTransientClassifiesRealDatabaseErrors gets its errors from a real server: a connection
// terminated by the server is transient, a constraint violation and a cancelled query are not.
func TestTransientClassifiesRealDatabaseErrors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := dbtest.NewURL(t)
	victim, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer victim.Close(ctx)
	admin := dbtest.Open(t, url)
	if err := admin.Exec(`SELECT pg_terminate_backend(?)`, victim.PgConn().PID()).Error; err != nil {
		t.Fatal(err)
	}
	_, lost := victim.Exec(ctx, `SELECT 1`)
	if lost == nil {
		t.Fatal("a query on a terminated connection succeeded")
	}
	if !Transient(lost) || !Transient(fmt.Errorf("recording: %w", lost)) {
		t.Errorf("lost connection %v (%T) not transient", lost, lost)
	}
	refused, err := pgx.Connect(ctx, "postgres://postgres@127.0.0.1:1/none?connect_timeout=2")
	if err == nil {
		refused.Close(ctx)
		t.Fatal("connected to port 1")
	}
	if !Transient(err) {
		t.Errorf("refused connection %v (%T) not transient", err, err)
	}

	violation := admin.Exec(`INSERT INTO tasker_task_namespaces (name) VALUES ('default')`).Error
	if violation == nil {
		t.Fatal("duplicate namespace accepted")
	}
	if Transient(violation) {
		t.Errorf("constraint violation %v classified transient", violation)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if cancelled := admin.WithContext(cctx).Exec(`SELECT 1`).Error; cancelled == nil || Transient(cancelled) {
		t.Errorf("cancelled query: %v, transient %v", cancelled, Transient(cancelled))
	}
	if Transient(nil) {
		t.Error("nil is transient")
	}
}

func TestDoRetriesUntilSuccessOrAPermanentError(t *testing.T) {
	t.Parallel()
	lost := errors.New("conn closed")
	s := New(nil, "testing", time.Millisecond, 5*time.Millisecond)
	calls := 0
	err := Do(context.Background(), s, nil, func() error {
		calls++
		if calls < 3 {
			return lost
		}
		return nil
	})
	if err != nil || calls != 3 || s.Failures() != 0 {
		t.Fatalf("err %v after %d calls, %d failures left; want success on the 3rd", err, calls, s.Failures())
	}
	permanent := errors.New("bad data")
	calls = 0
	if err := Do(context.Background(), s, nil, func() error { calls++; return permanent }); err != permanent || calls != 1 {
		t.Fatalf("permanent error: %v after %d calls", err, calls)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	calls = 0
	if err := Do(ctx, s, nil, func() error { calls++; return lost }); err != lost || calls < 2 {
		t.Fatalf("until the deadline: %v after %d calls", err, calls)
	}
	// A wake-up cuts the wait short: with a one-hour backoff, the retry still comes at once.
	slow := New(nil, "testing", time.Hour, time.Hour)
	wake := make(chan struct{}, 1)
	calls = 0
	begin := time.Now()
	err = Do(context.Background(), slow, wake, func() error {
		calls++
		if calls == 1 {
			wake <- struct{}{}
			return lost
		}
		return nil
	})
	if err != nil || calls != 2 || time.Since(begin) > 10*time.Second {
		t.Fatalf("woken retry: %v after %d calls in %s", err, calls, time.Since(begin))
	}
}

// TestStreakLogsOnceAndBacksOff fails a streak 200 times: it logs the first failure, then
// "still failing" no more often than its interval, then the recovery with the count; its waits
// grow to the maximum, with jitter, and start small again after the recovery.
func TestStreakLogsOnceAndBacksOff(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	s := New(slog.New(slog.NewTextHandler(&buf, nil)), "claiming steps", 100*time.Millisecond, 3*time.Second)
	s.every = 0 // every failure after the first may log "still failing" ...
	var waits []time.Duration
	for i := range 200 {
		if i == 100 {
			s.every = time.Hour // ... until the interval is long
		}
		waits = append(waits, s.Fail(errors.New("connection refused")))
	}
	s.Succeed()
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 1+99+1 {
		t.Fatalf("%d log lines for 200 failures and a recovery, want 101:\n%s", len(lines), buf.String())
	}
	if !strings.Contains(lines[0], "level=ERROR") || !strings.Contains(lines[0], `msg="claiming steps failed; retrying with backoff"`) {
		t.Errorf("first line %q", lines[0])
	}
	if !strings.Contains(lines[99], "attempts=100") || !strings.Contains(lines[99], "still failing") {
		t.Errorf("last still-failing line %q, want attempts=100", lines[99])
	}
	if !strings.Contains(lines[100], `msg="claiming steps recovered" failures=200`) {
		t.Errorf("recovery line %q", lines[100])
	}
	if waits[0] < 50*time.Millisecond || waits[0] > 150*time.Millisecond {
		t.Errorf("first wait %s, want 100ms ± 50%%", waits[0])
	}
	distinct := map[time.Duration]bool{}
	for _, w := range waits[10:] {
		if w < 1500*time.Millisecond || w > 4500*time.Millisecond {
			t.Fatalf("wait %s after 10 failures, want the 3s maximum ± 50%%", w)
		}
		distinct[w] = true
	}
	if len(distinct) < 10 {
		t.Errorf("only %d distinct waits among 190: no jitter", len(distinct))
	}
	if w := s.Fail(errors.New("again")); w > 150*time.Millisecond || s.Failures() != 1 {
		t.Errorf("after a recovery the first wait is %s (failures %d), want the initial 100ms ± 50%%", w, s.Failures())
	}
}
