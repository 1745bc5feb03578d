// Package dbtest gives each test its own PostgreSQL database, cloned in milliseconds from a
// template that is migrated once per schema version (keyed by internal/migrate.Hash). Tests
// using it can run in parallel. A failed test keeps its database for inspection; its URL is
// logged.
//
// The server is TASKER_TEST_DATABASE_URL, default postgres://postgres@127.0.0.1:5432/postgres.
package dbtest

import (
	"context"
	"database/sql"
	"net/url"
	"os"
	"strings"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver
	"github.com/peterldowns/pgtestdb"
	"gorm.io/gorm"

	"github.com/taskerhq/tasker/internal/database"
	"github.com/taskerhq/tasker/internal/migrate"
)

// ServerURL is the URL of the PostgreSQL server that test databases are created on.
func ServerURL() string {
	if u := os.Getenv("TASKER_TEST_DATABASE_URL"); u != "" {
		return u
	}
	return "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
}

type migrator struct{}

func (migrator) Hash() (string, error) { return migrate.Hash() }

func (migrator) Migrate(ctx context.Context, db *sql.DB, _ pgtestdb.Config) error {
	_, err := migrate.Up(ctx, db)
	return err
}

func serverConfig(t testing.TB) pgtestdb.Config {
	t.Helper()
	u, err := url.Parse(ServerURL())
	if err != nil {
		t.Fatalf("parsing TASKER_TEST_DATABASE_URL: %v", err)
	}
	pass, _ := u.User.Password()
	port := u.Port()
	if port == "" {
		port = "5432"
	}
	opts := u.RawQuery
	if !strings.Contains(opts, "sslmode") {
		if opts != "" {
			opts += "&"
		}
		opts += "sslmode=disable"
	}
	return pgtestdb.Config{
		DriverName:                "pgx",
		Host:                      u.Hostname(),
		Port:                      port,
		User:                      u.User.Username(),
		Password:                  pass,
		Database:                  strings.TrimPrefix(u.Path, "/"),
		Options:                   opts,
		ForceTerminateConnections: true,
	}
}

// NewURL creates a fresh migrated database for t and returns its connection URL. The database
// is dropped when t passes.
func NewURL(t testing.TB) string {
	t.Helper()
	cfg := pgtestdb.Custom(t, serverConfig(t), migrator{})
	return cfg.URL()
}

// New creates a fresh migrated database for t and returns an open GORM handle to it, closed
// when t ends.
func New(t testing.TB) *gorm.DB {
	t.Helper()
	return Open(t, NewURL(t))
}

// Open opens a GORM handle to url that is closed when t ends.
func Open(t testing.TB, url string) *gorm.DB {
	t.Helper()
	gdb, err := database.Open(context.Background(), url, database.Options{MaxOpenConns: 30})
	if err != nil {
		t.Fatalf("opening test database: %v", err)
	}
	t.Cleanup(func() { _ = database.Close(gdb) })
	return gdb
}

// AsServerAdmin returns url (a test database's) with the user and password of ServerURL: the
// same database, reached as the server's administrator (a superuser by default) instead of
// the unprivileged role test databases are owned by.
func AsServerAdmin(t testing.TB, dbURL string) string {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatalf("parsing test database URL: %v", err)
	}
	admin, err := url.Parse(ServerURL())
	if err != nil {
		t.Fatalf("parsing TASKER_TEST_DATABASE_URL: %v", err)
	}
	u.User = admin.User
	return u.String()
}
