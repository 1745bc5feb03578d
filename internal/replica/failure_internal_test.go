package replica

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
)

func TestBrokenRecognisesAServerThatCannotServe(t *testing.T) {
	t.Parallel()
	for err, want := range map[error]bool{
		&pgconn.PgError{Code: "57P01"}:                                        true, // terminated backend, fast shutdown
		&pgconn.PgError{Code: "57P03"}:                                        true, // not accepting connections yet
		&pgconn.PgError{Code: "08006"}:                                        true, // connection failure
		fmt.Errorf("reading tasks: %w", &pgconn.PgError{Code: "57P02"}):       true,
		fmt.Errorf("receive message failed: %w", io.ErrUnexpectedEOF):         true,
		&net.OpError{Op: "read", Err: errors.New("connection reset by peer")}: true,
		driver.ErrBadConn:              true,
		pgconn.ErrConnClosed:           true,
		&pgconn.PgError{Code: "40001"}: false, // a conflict with recovery: the replica is fine
		&pgconn.PgError{Code: "57014"}: false, // statement cancelled
		&pgconn.PgError{Code: "23505"}: false,
		context.Canceled:               false,
		context.DeadlineExceeded:       false, // also a net.Error: the caller's deadline, not the server
		errors.New("record not found"): false,
	} {
		if got := Broken(err); got != want {
			t.Errorf("Broken(%v) = %v, want %v", err, got, want)
		}
	}
}

func TestReplicaFailedOnlyForReadOnlyWorkAReplicaServed(t *testing.T) {
	t.Parallel()
	lost := &pgconn.PgError{Code: "57P01"}
	ctx, route := WithRoute(context.Background(), true, 0)
	if route.ReplicaFailed(lost) {
		t.Error("a read-only route no replica served: ReplicaFailed is true")
	}
	route.servedByReplica(0)
	if !route.ReplicaFailed(lost) || RouteOf(ctx) != route {
		t.Error("a read-only route a replica served: ReplicaFailed is false for a terminated backend")
	}
	if route.ReplicaFailed(&pgconn.PgError{Code: "23505"}) || route.ReplicaFailed(context.Canceled) {
		t.Error("ReplicaFailed is true for an error that is not Broken")
	}
	conflict := &pgconn.PgError{Code: "40001", Message: "canceling statement due to conflict with recovery"}
	if Broken(conflict) || !route.ReplicaFailed(conflict) {
		t.Errorf("a recovery conflict: Broken %v, ReplicaFailed %v; want false, true", Broken(conflict), route.ReplicaFailed(conflict))
	}
	var r Router
	_, again := r.RerunOnPrimary(ctx)
	again.servedByReplica(0) // never happens on a primary route; even then, no second run
	if again.ReplicaFailed(lost) || r.RetriedRequests() != 1 {
		t.Errorf("the rerun's route: ReplicaFailed %v, RetriedRequests %d; want false, 1", again.ReplicaFailed(lost), r.RetriedRequests())
	}
	if ok, _ := again.mayUseReplica(); ok {
		t.Error("the rerun's route may use a replica")
	}
	_, write := WithRoute(context.Background(), false, 0)
	if write.ReplicaFailed(lost) || (*Route)(nil).ReplicaFailed(lost) {
		t.Error("ReplicaFailed is true for a route that is not read-only, or nil")
	}
}
