// Package database opens the service's connections to PostgreSQL: a GORM handle over the pgx
// driver for the read models and the write side. It holds no global state; callers own the
// returned handle and close it. With tracing on (internal/tracing), every statement run under a
// traced context gets its span.
//
// OpenEngine opens the orchestration engine's own small pool on the primary, whose
// connections start with the engine's session settings (EngineSettings); only the engine's
// transactions run on it.
//
// OpenWithReplicas adds streaming replicas: the handle's connection pool is then a
// replica.Router, which sends a statement to a replica only when its context carries a
// read-only replica.Route (the GraphQL API's queries) and everything else to the primary.
package database

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/taskerhq/tasker/internal/replica"
	"github.com/taskerhq/tasker/internal/tracing"
)

// Options tunes a connection pool. The zero value is a sensible default.
type Options struct {
	// MaxOpenConns caps the pool (default 20).
	MaxOpenConns int
	// Tracer, when set, observes every statement the pool runs (statement counting, metrics).
	Tracer pgx.QueryTracer
	// Logger receives GORM's own log lines; nil silences them.
	Logger logger.Interface
	// AfterConnect, when set, runs on every new connection before the pool hands it out.
	AfterConnect func(ctx context.Context, conn *pgx.Conn) error
}

// Open connects to url, checks the connection and returns a GORM handle whose *sql.DB is a
// pgx pool. The caller closes it with Close.
func Open(ctx context.Context, url string, opts Options) (*gorm.DB, error) {
	sqlDB, err := openSQL(ctx, url, opts)
	if err != nil {
		return nil, err
	}
	return onPool(sqlDB, sqlDB, opts)
}

// OpenWithReplicas is Open with streaming replicas of the primary at replicaURLs: the handle
// routes by context (internal/replica) and its *sql.DB is the primary's. Every pool gets the
// same options (tracer, size). A replica that is unreachable at start is left out until it
// answers; a URL that cannot be parsed, or names a server that is not a standby, is an error.
// Without replica URLs it is Open. The caller closes it with Close, which closes every pool.
func OpenWithReplicas(ctx context.Context, url string, replicaURLs []string, opts Options, ropts replica.Options) (*gorm.DB, error) {
	if len(replicaURLs) == 0 {
		return Open(ctx, url, opts)
	}
	primary, err := openSQL(ctx, url, opts)
	if err != nil {
		return nil, err
	}
	var names []string
	var pools []*sql.DB
	closeAll := func() {
		for _, p := range pools {
			_ = p.Close()
		}
		_ = primary.Close()
	}
	for _, u := range replicaURLs {
		cfg, err := parse(u)
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("replica: %w", err)
		}
		names = append(names, fmt.Sprintf("%s:%d/%s", cfg.Host, cfg.Port, cfg.Database))
		pools = append(pools, pool(cfg, opts))
	}
	router, err := replica.New(ctx, primary, names, pools, ropts)
	if err != nil {
		closeAll()
		return nil, err
	}
	gdb, err := onPool(router, primary, opts)
	if err != nil {
		_ = router.Close()
		return nil, err
	}
	return gdb, nil
}

// ReplicaURLs splits DATABASE_REPLICA_URLS: comma-separated, blanks ignored.
func ReplicaURLs(s string) []string {
	var out []string
	for _, u := range strings.Split(s, ",") {
		if u = strings.TrimSpace(u); u != "" {
			out = append(out, u)
		}
	}
	return out
}

// Router returns the replica router of a handle opened with replicas, or nil.
func Router(gdb *gorm.DB) *replica.Router {
	r, _ := gdb.ConnPool.(*replica.Router)
	return r
}

func parse(url string) (*pgx.ConnConfig, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parsing database url: %w", err)
	}
	return cfg, nil
}

// pool is a pgx-backed *sql.DB for cfg, sized and traced by opts; it connects lazily.
func pool(cfg *pgx.ConnConfig, opts Options) *sql.DB {
	if t := tracing.PGX(opts.Tracer); t != nil { // with SQL spans while tracing is on
		cfg.Tracer = t
	}
	// The service runs small, index-driven statements. When statistics lag (a fresh or
	// fast-growing table) the planner's inflated estimates trigger JIT compilation, which then
	// costs hundreds of milliseconds for a sub-millisecond query. JIT is off on the service's
	// connections unless the URL sets it (e.g. ?jit=on); other sessions are unaffected.
	if _, set := cfg.RuntimeParams["jit"]; !set {
		cfg.RuntimeParams["jit"] = "off"
	}
	// A statement the pool prepares is planned anew at every execution: the plan cache would
	// otherwise settle, after five executions, on a generic plan made with the statistics and
	// table sizes of that moment, and keep it. Made while the tables were nearly empty (a fresh
	// database), such a plan scans whole tables once they are large (throughput fell from about
	// 2,400 to 355 steps/s). Planning each time costs little for the service's small
	// statements and follows the tables' real sizes. Unless the URL sets plan_cache_mode.
	if _, set := cfg.RuntimeParams["plan_cache_mode"]; !set {
		cfg.RuntimeParams["plan_cache_mode"] = "force_custom_plan"
	}
	var connOpts []stdlib.OptionOpenDB
	if opts.AfterConnect != nil {
		connOpts = append(connOpts, stdlib.OptionAfterConnect(opts.AfterConnect))
	}
	sqlDB := stdlib.OpenDB(*cfg, connOpts...)
	maxOpen := opts.MaxOpenConns
	if maxOpen <= 0 {
		maxOpen = 20
	}
	sqlDB.SetMaxOpenConns(maxOpen)
	sqlDB.SetMaxIdleConns(maxOpen)
	sqlDB.SetConnMaxIdleTime(5 * time.Minute)
	return sqlDB
}

// openSQL is pool for url, once a connection has answered.
func openSQL(ctx context.Context, url string, opts Options) (*sql.DB, error) {
	cfg, err := parse(url)
	if err != nil {
		return nil, err
	}
	return ping(ctx, pool(cfg, opts))
}

// ping returns sqlDB once a connection has answered, and closes it otherwise.
func ping(ctx context.Context, sqlDB *sql.DB) (*sql.DB, error) {
	pingCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := sqlDB.PingContext(pingCtx); err != nil {
		_ = sqlDB.Close()
		return nil, fmt.Errorf("connecting to database: %w", err)
	}
	return sqlDB, nil
}

// EngineSettings are the session settings of the engine's connections (see OpenEngine and
// store.EngineTx for why each): jit, sequential and bitmap scans off, merge and hash joins
// off, plan_cache_mode force_generic_plan,
// and synchronous_commit off when asyncCommit is set (on otherwise).
func EngineSettings(asyncCommit bool) map[string]string {
	syncCommit := "on"
	if asyncCommit {
		syncCommit = "off"
	}
	return map[string]string{
		"jit":                "off",
		"enable_seqscan":     "off",
		"enable_bitmapscan":  "off",
		"enable_mergejoin":   "off",
		"enable_hashjoin":    "off",
		"plan_cache_mode":    "force_generic_plan",
		"synchronous_commit": syncCommit,
		// The engine's transactions notify the transitions they write themselves (see
		// internal/store's notify.go); the transition tables' triggers read this and leave it
		// to them (migration 00063).
		"tasker.writer_notifies": "on",
	}
}

// EnginePool is the engine's own connection pool on the primary (see OpenEngine): every
// connection carries EngineSettings(AsyncCommit) from connect time, so the engine's
// transactions need no statement to set them.
type EnginePool struct {
	DB *gorm.DB
	// AsyncCommit is the pool's synchronous_commit: off when set.
	AsyncCommit bool
}

// OpenEngine opens the engine's pool on url (the primary): Open's pool, of at most
// opts.MaxOpenConns connections, whose connections start with EngineSettings(asyncCommit)
// as runtime parameters. These override the same parameters in the URL: they are what the
// engine's statements are written for. Where the database role may, its connections also run
// without foreign-key checks (see trustReferences). Only the engine's transactions run on it;
// every other statement keeps Open's pool and settings. The caller closes it with Close.
func OpenEngine(ctx context.Context, url string, opts Options, asyncCommit bool) (*EnginePool, error) {
	cfg, err := parse(url)
	if err != nil {
		return nil, fmt.Errorf("engine pool: %w", err)
	}
	for k, v := range EngineSettings(asyncCommit) {
		cfg.RuntimeParams[k] = v
	}
	opts.AfterConnect = trustReferences
	sqlDB, err := ping(ctx, pool(cfg, opts))
	if err != nil {
		return nil, fmt.Errorf("engine pool: %w", err)
	}
	gdb, err := onPool(sqlDB, sqlDB, opts)
	if err != nil {
		return nil, fmt.Errorf("engine pool: %w", err)
	}
	return &EnginePool{DB: gdb, AsyncCommit: asyncCommit}, nil
}

// trustReferences turns off the foreign-key checks of an engine connection's session where the
// database role may (tasker_trust_references, migration 00051; see store.EngineTx for why the
// engine's writes need none).
func trustReferences(ctx context.Context, conn *pgx.Conn) error {
	if _, err := conn.Exec(ctx, `SELECT tasker_trust_references(false)`); err != nil {
		return fmt.Errorf("engine connection: trusting references: %w", err)
	}
	return nil
}

// Close closes the engine's pool.
func (p *EnginePool) Close() error { return Close(p.DB) }

// onPool opens GORM over conn; primary is closed when that fails.
func onPool(conn gorm.ConnPool, primary *sql.DB, opts Options) (*gorm.DB, error) {
	gormLogger := opts.Logger
	if gormLogger == nil {
		gormLogger = logger.Discard
	}
	gdb, err := gorm.Open(postgres.New(postgres.Config{Conn: conn}), &gorm.Config{
		Logger:                 gormLogger,
		SkipDefaultTransaction: true,
		TranslateError:         true,
	})
	if err != nil {
		_ = primary.Close()
		return nil, fmt.Errorf("opening gorm: %w", err)
	}
	return gdb, nil
}

// Close closes the pools behind a handle returned by Open or OpenWithReplicas.
func Close(gdb *gorm.DB) error {
	if r := Router(gdb); r != nil {
		return r.Close()
	}
	sqlDB, err := gdb.DB()
	if err != nil {
		return err
	}
	return sqlDB.Close()
}

// SQL returns the *sql.DB behind a GORM handle (the primary's pool with replicas): for what
// must run on the pool itself, such as goose's migrations in internal/migrate. Everything
// else takes the *gorm.DB.
func SQL(gdb *gorm.DB) *sql.DB {
	sqlDB, err := gdb.DB()
	if err != nil {
		panic(fmt.Sprintf("gorm handle has no *sql.DB: %v", err))
	}
	return sqlDB
}
