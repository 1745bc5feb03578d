package orchestration

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/taskerhq/tasker/internal/dbtest"
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
	if !transient(lost) || !transient(fmt.Errorf("recording: %w", lost)) {
		t.Errorf("lost connection %v (%T) not transient", lost, lost)
	}

	violation := admin.Exec(`INSERT INTO tasker_task_namespaces (name) VALUES ('default')`).Error
	if violation == nil {
		t.Fatal("duplicate namespace accepted")
	}
	if transient(violation) {
		t.Errorf("constraint violation %v classified transient", violation)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if cancelled := admin.WithContext(cctx).Exec(`SELECT 1`).Error; cancelled == nil || transient(cancelled) {
		t.Errorf("cancelled query: %v, transient %v", cancelled, transient(cancelled))
	}
	if transient(nil) {
		t.Error("nil is transient")
	}
}

func TestRetryTransientRetriesUntilSuccessOrAPermanentError(t *testing.T) {
	t.Parallel()
	lost := &pgconnErrorForTest{}
	calls := 0
	err := retryTransient(context.Background(), func() error {
		calls++
		if calls < 3 {
			return lost
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Fatalf("err %v after %d calls; want success on the 3rd", err, calls)
	}
	permanent := errors.New("bad data")
	calls = 0
	if err := retryTransient(context.Background(), func() error { calls++; return permanent }); err != permanent || calls != 1 {
		t.Fatalf("permanent error: %v after %d calls", err, calls)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	calls = 0
	if err := retryTransient(ctx, func() error { calls++; return lost }); err != lost || calls < 2 {
		t.Fatalf("until the deadline: %v after %d calls", err, calls)
	}
}

// pgconnErrorForTest is a lost connection as the driver reports it.
type pgconnErrorForTest struct{}

func (*pgconnErrorForTest) Error() string { return "conn closed" }
