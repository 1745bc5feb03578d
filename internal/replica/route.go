package replica

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5/pgconn"
)

// LSN is a PostgreSQL write-ahead log position. Zero means "no position".
type LSN uint64

// ParseLSN reads the text form PostgreSQL prints ("16/B374D848").
func ParseLSN(s string) (LSN, error) {
	hi, lo, ok := strings.Cut(strings.TrimSpace(s), "/")
	if !ok || hi == "" || lo == "" || len(hi) > 8 || len(lo) > 8 {
		return 0, fmt.Errorf("%q is not a WAL position such as 0/16B3748", s)
	}
	h, err1 := strconv.ParseUint(hi, 16, 32)
	l, err2 := strconv.ParseUint(lo, 16, 32)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("%q is not a WAL position such as 0/16B3748", s)
	}
	return LSN(h<<32 | l), nil
}

// String prints the position as PostgreSQL does.
func (l LSN) String() string { return fmt.Sprintf("%X/%X", uint64(l)>>32, uint32(l)) }

// Route is the routing state of one unit of work (a GraphQL response). It is safe for
// concurrent use: gqlgen resolves fields concurrently.
type Route struct {
	mu sync.Mutex
	// readOnly: statements may go to a replica.
	readOnly bool
	// after: a replica serves only once it has replayed this position.
	after LSN
	// wrote: a statement went to the primary as a write; everything after it stays there.
	wrote bool
	// what served the statements so far.
	primaryStatements, replicaStatements int64
	lagMs                                float64
}

type routeKey struct{}

// WithRoute returns ctx carrying a new Route and that Route. With readOnly false every
// statement goes to the primary (the default for contexts without a Route). With readOnly true
// reads may go to a replica that has replayed after; the first write (an Exec or a
// transaction) moves the rest of the work to the primary.
func WithRoute(ctx context.Context, readOnly bool, after LSN) (context.Context, *Route) {
	r := &Route{readOnly: readOnly, after: after}
	return context.WithValue(ctx, routeKey{}, r), r
}

func routeOf(ctx context.Context) *Route {
	r, _ := ctx.Value(routeKey{}).(*Route)
	return r
}

// RouteOf returns the Route ctx carries, or nil. Route's exported methods accept a nil Route
// where they say so.
func RouteOf(ctx context.Context) *Route { return routeOf(ctx) }

// ReplicaFailed reports whether err, met by the work under this Route, may come from a
// replica that went away, or from a standby cancelling a read that conflicted with the WAL it
// replays, so that the work, being read-only, should run again on the primary
// (Router.RerunOnPrimary): the Route is read-only, at least one of its reads was served by a
// replica, and err is Broken or a recovery conflict (see recoveryConflict). An error the primary caused then runs the work again too, which
// is harmless: the work only reads. False for a nil Route and for a Route that is not
// read-only, such as RerunOnPrimary's, so work runs again at most once.
func (r *Route) ReplicaFailed(err error) bool {
	if r == nil || !(Broken(err) || recoveryConflict(err)) {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.readOnly && r.replicaStatements > 0
}

// recoveryConflict reports whether err is how a standby cancels a query that conflicts with
// the WAL it replays (a row version vacuumed away on the primary, a lock the primary took):
// SQLSTATE 40001 or 40P01. The replica itself is fine, so it is not Broken, but the read
// failed for the replica's sake, and a read-only query runs on the primary without it.
func recoveryConflict(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "40001" || pgErr.Code == "40P01")
}

// mayUseReplica reports whether a read under this route may go to a replica, and the position
// that replica must have replayed.
func (r *Route) mayUseReplica() (bool, LSN) {
	if r == nil {
		return false, 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.readOnly && !r.wrote, r.after
}

func (r *Route) servedByPrimary(write bool) {
	if r == nil {
		return
	}
	r.mu.Lock()
	r.primaryStatements++
	r.wrote = r.wrote || write
	r.mu.Unlock()
}

func (r *Route) servedByReplica(lagMs float64) {
	if r == nil {
		return
	}
	r.mu.Lock()
	r.replicaStatements++
	if lagMs > r.lagMs {
		r.lagMs = lagMs
	}
	r.mu.Unlock()
}

// Served says who answered: "replica" when every statement went to a replica (and at least
// one ran), else "primary"; lagMs is the largest replay lag of the replicas that answered (0
// when none did).
func (r *Route) Served() (servedBy string, lagMs float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.replicaStatements > 0 && r.primaryStatements == 0 {
		return "replica", r.lagMs
	}
	return "primary", r.lagMs
}

// Wrote reports whether a write went to the primary under this route.
func (r *Route) Wrote() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.wrote
}
