// Package database opens the service's connections to PostgreSQL: a GORM handle over the pgx
// driver for the read models and the write side. It holds no global state; callers own the
// returned handle and close it. With tracing on (internal/tracing), every statement run under a
// traced context gets its span.
package database

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

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
}

// Open connects to url, checks the connection and returns a GORM handle whose *sql.DB is a
// pgx pool. The caller closes it with Close.
func Open(ctx context.Context, url string, opts Options) (*gorm.DB, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parsing database url: %w", err)
	}
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
	sqlDB := stdlib.OpenDB(*cfg)
	maxOpen := opts.MaxOpenConns
	if maxOpen <= 0 {
		maxOpen = 20
	}
	sqlDB.SetMaxOpenConns(maxOpen)
	sqlDB.SetMaxIdleConns(maxOpen)
	sqlDB.SetConnMaxIdleTime(5 * time.Minute)
	pingCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := sqlDB.PingContext(pingCtx); err != nil {
		_ = sqlDB.Close()
		return nil, fmt.Errorf("connecting to database: %w", err)
	}
	gormLogger := opts.Logger
	if gormLogger == nil {
		gormLogger = logger.Discard
	}
	gdb, err := gorm.Open(postgres.New(postgres.Config{Conn: sqlDB}), &gorm.Config{
		Logger:                 gormLogger,
		SkipDefaultTransaction: true,
		TranslateError:         true,
	})
	if err != nil {
		_ = sqlDB.Close()
		return nil, fmt.Errorf("opening gorm: %w", err)
	}
	return gdb, nil
}

// Close closes the pool behind a handle returned by Open.
func Close(gdb *gorm.DB) error {
	sqlDB, err := gdb.DB()
	if err != nil {
		return err
	}
	return sqlDB.Close()
}

// SQL returns the *sql.DB behind a GORM handle.
func SQL(gdb *gorm.DB) *sql.DB {
	sqlDB, err := gdb.DB()
	if err != nil {
		panic(fmt.Sprintf("gorm handle has no *sql.DB: %v", err))
	}
	return sqlDB
}
