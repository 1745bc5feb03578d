// Package replica routes a service's reads to PostgreSQL streaming replicas (hot standbys)
// while everything else stays on the primary.
//
// Router is a gorm.ConnPool over one primary pool and any number of replica pools. Where a
// statement goes is decided by its context, so one GORM handle serves every caller:
//
//   - A context without a Route (the engine's claims and recorder, migrations, the refresher,
//     subscriptions, the events listener, which has its own connection anyway) goes to the
//     primary, always.
//   - A context carrying a read-only Route (WithRoute(ctx, true, after), which the GraphQL API
//     installs for queries) sends its reads (QueryContext, QueryRowContext) to a healthy
//     replica that has replayed the WAL up to after, round-robin; when no replica qualifies,
//     to the primary. Writes (ExecContext, PrepareContext, BeginTx: every transaction) go to the
//     primary and pin the rest of that Route to the primary, so work that wrote reads its own
//     write.
//
// A replica that goes away (it shuts down, its backend is terminated, its connection is lost:
// what Broken recognises) costs no read-only request, at whatever moment it goes:
//
//   - A read that fails on a replica before its first row (the Router's QueryContext and
//     QueryRowContext return only once the first row arrived) is retried once, at once, on the
//     primary: the caller never sees the failure.
//   - A failure met after the first row, while the caller iterates rows the Router already
//     returned, cannot be retried there: part of the result was consumed and *sql.Rows has no
//     way back. It reaches the caller. The unit of work that met it is run again, whole, on
//     the primary: the GraphQL API, whose query reads only, asks Route.ReplicaFailed of each
//     error its response collected and, on a yes, executes the operation once more under
//     RerunOnPrimary's Route, which sends every statement to the primary. Running a read-only
//     operation twice is safe and its second answer is complete and consistent (one
//     execution's rows, never a mix); patching the one broken statement instead would leave
//     resolvers that already gave up with an error. The second run's Route is not read-only,
//     so ReplicaFailed never says yes for it: a request runs again at most once. Mutations
//     never run on a read-only Route, so they are never run again.
//
// A replica whose connection fails as a read starts (or that says it is shutting down), or
// that fails a probe, is taken out until a probe reaches it again; a failure after the first
// row takes nothing out by itself (one backend may have been ended, the server may be fine).
// Both retries are counted (RetriedStatements, RetriedRequests, and the metric
// tasker_replica_reads_retried_total).
//
// A background probe asks each replica every ProbeInterval for its replay position
// (pg_last_wal_replay_lsn) and its replay lag; a Route that needs a later position than the
// cached one probes that replica again, at most once per Staleness. The write position a
// client must see is WriteLSN: pg_current_wal_insert_lsn() on the primary after its writes
// committed, which is at or past the end of their commit records.
package replica

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// Options tunes a Router. The zero value gives the defaults.
type Options struct {
	// ProbeInterval is how often every replica is asked for its replay position and lag, and
	// a replica taken out is tried again (default 250ms).
	ProbeInterval time.Duration
	// Staleness is how old a replica's cached replay position may be before a read that needs
	// a later one probes it again (default 5ms).
	Staleness time.Duration
	// Log receives replicas going out and coming back; nil discards.
	Log *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.ProbeInterval <= 0 {
		o.ProbeInterval = 250 * time.Millisecond
	}
	if o.Staleness <= 0 {
		o.Staleness = 5 * time.Millisecond
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return o
}

// Replica is one standby and what the Router knows of it.
type Replica struct {
	// Name identifies the replica in logs and stats: host:port/database of its URL.
	Name string
	db   *sql.DB

	mu        sync.Mutex
	up        bool
	replayed  LSN
	lagMs     float64
	checkedAt time.Time

	statements atomic.Int64
}

// Router is a gorm.ConnPool routing by context (see the package comment). Its methods are
// safe for concurrent use. It is the pool under the product's one handle: its ExecContext,
// QueryContext and QueryRowContext forward the statements GORM sends, and its own statements
// only read replication positions (pg_is_in_recovery, pg_last_wal_replay_lsn,
// pg_current_wal_insert_lsn); none writes data. Callers reach it through
// database.OpenWithReplicas and database.Router, never with pools of their own.
type Router struct {
	primary  *sql.DB
	replicas []*Replica
	opts     Options
	next     atomic.Uint64

	primaryStatements atomic.Int64
	retriedStatements atomic.Int64
	retriedRequests   atomic.Int64

	stop chan struct{}
	done chan struct{}
	once sync.Once
}

// New returns a Router over an open primary pool and replica pools (name → pool, in order),
// probes every replica once and starts the background probe. A reachable server that is not a
// standby is refused; an unreachable replica starts out of service and is logged. Close stops
// the probe and closes every pool.
func New(ctx context.Context, primary *sql.DB, names []string, replicas []*sql.DB, opts Options) (*Router, error) {
	if len(names) != len(replicas) {
		return nil, fmt.Errorf("replica: %d names for %d pools", len(names), len(replicas))
	}
	r := &Router{primary: primary, opts: opts.withDefaults(), stop: make(chan struct{}), done: make(chan struct{})}
	for i, db := range replicas {
		rep := &Replica{Name: names[i], db: db}
		var standby bool
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := db.QueryRowContext(pctx, "SELECT pg_is_in_recovery()").Scan(&standby)
		cancel()
		switch {
		case err != nil:
			r.opts.Log.Warn("replica: unreachable at start; reads go elsewhere until it answers", "replica", rep.Name, "err", err)
		case !standby:
			return nil, fmt.Errorf("replica %s is not a standby (pg_is_in_recovery() is false): DATABASE_REPLICA_URLS lists streaming replicas of the primary only", rep.Name)
		default:
			r.probe(ctx, rep)
		}
		r.replicas = append(r.replicas, rep)
	}
	go r.loop()
	return r, nil
}

// GetDBConn returns the primary pool: gorm's DB() and everything that needs a plain *sql.DB
// (migrations, the refresher, health checks) use the primary.
func (r *Router) GetDBConn() (*sql.DB, error) { return r.primary, nil }

// Replicas lists the replicas in configuration order.
func (r *Router) Replicas() []*Replica { return r.replicas }

// PrimaryStatements is the number of statements and transactions sent to the primary through
// the Router.
func (r *Router) PrimaryStatements() int64 { return r.primaryStatements.Load() }

// RetriedStatements is the number of reads that failed on a replica before their first row
// and ran again on the primary.
func (r *Router) RetriedStatements() int64 { return r.retriedStatements.Load() }

// RetriedRequests is the number of units of work (GraphQL queries) that met a replica failure
// after a read's first row and ran again, whole, on the primary (RerunOnPrimary).
func (r *Router) RetriedRequests() int64 { return r.retriedRequests.Load() }

// RerunOnPrimary returns ctx carrying a new Route (in place of any Route ctx carries) that
// sends every statement to the primary, for running again, whole, a read-only unit of work
// whose Route met a replica failure (Route.ReplicaFailed), and counts that run.
func (r *Router) RerunOnPrimary(ctx context.Context) (context.Context, *Route) {
	r.retriedRequests.Add(1)
	return WithRoute(ctx, false, 0)
}

// Statements is the number of statements sent to this replica through the Router.
func (rep *Replica) Statements() int64 { return rep.statements.Load() }

// Up reports whether the replica is in service.
func (rep *Replica) Up() bool {
	rep.mu.Lock()
	defer rep.mu.Unlock()
	return rep.up
}

// PrepareContext prepares on the primary; a prepared statement may write.
func (r *Router) PrepareContext(ctx context.Context, query string) (*sql.Stmt, error) {
	r.onPrimary(ctx, true)
	return r.primary.PrepareContext(ctx, query)
}

// ExecContext runs a write on the primary and pins the context's Route there.
func (r *Router) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	r.onPrimary(ctx, true)
	return r.primary.ExecContext(ctx, query, args...)
}

// BeginTx starts every transaction on the primary and pins the context's Route there.
func (r *Router) BeginTx(ctx context.Context, opts *sql.TxOptions) (*sql.Tx, error) {
	r.onPrimary(ctx, true)
	return r.primary.BeginTx(ctx, opts)
}

// QueryContext runs a read on a replica when the context's Route allows it, else on the
// primary; a failure on the replica is retried once on the primary.
func (r *Router) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if rep := r.pick(ctx); rep != nil {
		rows, err := rep.db.QueryContext(ctx, query, args...)
		if err == nil {
			rep.served(ctx)
			return rows, nil
		}
		if ctx.Err() != nil {
			return nil, err
		}
		r.failed(rep, err)
		r.retriedStatements.Add(1)
	}
	r.onPrimary(ctx, false)
	return r.primary.QueryContext(ctx, query, args...)
}

// QueryRowContext is QueryContext for one row.
func (r *Router) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	if rep := r.pick(ctx); rep != nil {
		row := rep.db.QueryRowContext(ctx, query, args...)
		err := row.Err()
		if err == nil {
			rep.served(ctx)
			return row
		}
		if ctx.Err() != nil {
			return row
		}
		r.failed(rep, err)
		r.retriedStatements.Add(1)
	}
	r.onPrimary(ctx, false)
	return r.primary.QueryRowContext(ctx, query, args...)
}

// WriteLSN is the primary's WAL insert position now: a replica that has replayed it has
// replayed every transaction committed before the call.
func (r *Router) WriteLSN(ctx context.Context) (LSN, error) {
	var s string
	r.primaryStatements.Add(1)
	if err := r.primary.QueryRowContext(ctx, "SELECT pg_current_wal_insert_lsn()::text").Scan(&s); err != nil {
		return 0, fmt.Errorf("reading the primary's WAL position: %w", err)
	}
	return ParseLSN(s)
}

// Close stops the probe and closes the replica pools and the primary pool.
func (r *Router) Close() error {
	r.once.Do(func() { close(r.stop) })
	<-r.done
	var errs []error
	for _, rep := range r.replicas {
		errs = append(errs, rep.db.Close())
	}
	errs = append(errs, r.primary.Close())
	return errors.Join(errs...)
}

func (r *Router) onPrimary(ctx context.Context, write bool) {
	r.primaryStatements.Add(1)
	routeOf(ctx).servedByPrimary(write)
}

func (rep *Replica) served(ctx context.Context) {
	rep.statements.Add(1)
	rep.mu.Lock()
	lag := rep.lagMs
	rep.mu.Unlock()
	routeOf(ctx).servedByReplica(lag)
}

// pick chooses the replica for a read under ctx's Route, or nil for the primary.
func (r *Router) pick(ctx context.Context) *Replica {
	ok, after := routeOf(ctx).mayUseReplica()
	if !ok || len(r.replicas) == 0 {
		return nil
	}
	start := r.next.Add(1)
	for i := range r.replicas {
		rep := r.replicas[(int(start)+i)%len(r.replicas)]
		up, replayed, checkedAt := rep.state()
		if !up {
			continue
		}
		if replayed < after && time.Since(checkedAt) >= r.opts.Staleness {
			r.probe(ctx, rep)
			up, replayed, _ = rep.state()
		}
		if up && replayed >= after {
			return rep
		}
	}
	return nil
}

func (rep *Replica) state() (up bool, replayed LSN, checkedAt time.Time) {
	rep.mu.Lock()
	defer rep.mu.Unlock()
	return rep.up, rep.replayed, rep.checkedAt
}

// failed takes a replica out after a failure that says it cannot serve (Broken). Another
// SQL error (a conflict with recovery, a timeout) leaves it in.
func (r *Router) failed(rep *Replica, err error) {
	if !Broken(err) {
		return
	}
	rep.mu.Lock()
	was := rep.up
	rep.up = false
	rep.mu.Unlock()
	if was {
		r.opts.Log.Warn("replica: out of service; its reads go to the primary", "replica", rep.Name, "err", err)
	}
}

// Broken reports whether err (or an error it wraps) says that the server it came from, or the
// connection to it, cannot serve any more: the connection could not be made or was lost, or
// the server ended the session (SQLSTATE class 08, connection exception, and 57P, operator
// intervention: a shutdown, a terminated backend, a server not accepting connections yet). A
// cancelled or expired context is not Broken: the caller gave up, the server did not fail. An
// SQL error of any other class is not Broken either.
func Broken(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return strings.HasPrefix(pgErr.Code, "57P") || strings.HasPrefix(pgErr.Code, "08")
	}
	var connectErr *pgconn.ConnectError
	var netErr net.Error
	return errors.As(err, &connectErr) || errors.As(err, &netErr) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, pgconn.ErrConnClosed) || errors.Is(err, driver.ErrBadConn) || errors.Is(err, sql.ErrConnDone)
}

// probe asks a replica where it is; a replica that answers is (back) in service.
func (r *Router) probe(ctx context.Context, rep *Replica) {
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	var lsn sql.NullString
	var lag float64
	err := rep.db.QueryRowContext(pctx, `
		SELECT pg_last_wal_replay_lsn()::text,
		       CASE WHEN pg_last_wal_receive_lsn() IS NULL
		              OR pg_last_wal_receive_lsn() <= pg_last_wal_replay_lsn() THEN 0
		            ELSE COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()) * 1000, 0)
		       END::float8`).Scan(&lsn, &lag)
	var replayed LSN
	if err == nil {
		if !lsn.Valid {
			err = errors.New("pg_last_wal_replay_lsn() is null: the server is not a standby")
		} else {
			replayed, err = ParseLSN(lsn.String)
		}
	}
	if err != nil {
		rep.mu.Lock()
		was := rep.up
		rep.up = false
		rep.mu.Unlock()
		if was && ctx.Err() == nil {
			r.opts.Log.Warn("replica: out of service; its reads go to the primary", "replica", rep.Name, "err", err)
		}
		return
	}
	rep.mu.Lock()
	was := rep.up
	rep.up, rep.replayed, rep.lagMs, rep.checkedAt = true, replayed, lag, time.Now()
	rep.mu.Unlock()
	if !was {
		r.opts.Log.Info("replica: in service", "replica", rep.Name, "replayed", replayed.String(), "lag_ms", lag)
	}
}

func (r *Router) loop() {
	defer close(r.done)
	t := time.NewTicker(r.opts.ProbeInterval)
	defer t.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-r.stop
		cancel()
	}()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
			for _, rep := range r.replicas {
				r.probe(ctx, rep)
			}
		}
	}
}
