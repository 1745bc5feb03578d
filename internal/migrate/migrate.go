// Package migrate applies the embedded schema history (db/migrations plus the Go migrations
// that install the versioned definitions of the catalogue db.Projections) to a PostgreSQL
// database with goose. Applying is
// idempotent and safe to run from several processes at once: goose serialises runners with a
// PostgreSQL advisory lock.
package migrate

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"fmt"
	"io/fs"
	"sort"

	"github.com/pressly/goose/v3"
	"github.com/pressly/goose/v3/lock"

	"github.com/taskerhq/tasker/db"
	"github.com/taskerhq/tasker/internal/indexes"
)

// Applied describes one migration that Up applied.
type Applied struct {
	Version  int64
	Source   string
	Duration string
}

// Up applies every pending migration and returns those it applied, in order, then builds any
// index a bulk load set aside and left unbuilt (see package indexes). A database that is
// already current yields an empty slice and no error.
func Up(ctx context.Context, sqlDB *sql.DB) ([]Applied, error) {
	provider, err := newProvider(sqlDB)
	if err != nil {
		return nil, err
	}
	results, err := provider.Up(ctx)
	if err != nil {
		return nil, fmt.Errorf("applying migrations: %w", err)
	}
	// Indexes a bulk load set aside and did not build again (it died half-way) are built now,
	// before anything runs on the schema.
	if _, err := indexes.Restore(ctx, sqlDB, 2); err != nil {
		return nil, err
	}
	applied := make([]Applied, 0, len(results))
	for _, r := range results {
		applied = append(applied, Applied{Version: r.Source.Version, Source: r.Source.Path, Duration: r.Duration.String()})
	}
	return applied, nil
}

// Version returns the newest migration version applied to the database (0 for none).
func Version(ctx context.Context, sqlDB *sql.DB) (int64, error) {
	provider, err := newProvider(sqlDB)
	if err != nil {
		return 0, err
	}
	return provider.GetDBVersion(ctx)
}

func newProvider(sqlDB *sql.DB) (*goose.Provider, error) {
	migrations, err := fs.Sub(db.Migrations, "migrations")
	if err != nil {
		return nil, fmt.Errorf("opening embedded migrations: %w", err)
	}
	locker, err := lock.NewPostgresSessionLocker()
	if err != nil {
		return nil, fmt.Errorf("creating migration lock: %w", err)
	}
	provider, err := goose.NewProvider(goose.DialectPostgres, sqlDB, migrations,
		goose.WithGoMigrations(projectionMigrations(db.Projections)...),
		goose.WithDisableGlobalRegistry(true),
		goose.WithSessionLocker(locker),
		// A migration numbered below the newest applied one (written on a parallel branch)
		// is applied rather than refused: each is written to be independent of its neighbours.
		goose.WithAllowOutofOrder(true),
	)
	if err != nil {
		return nil, fmt.Errorf("creating migration provider: %w", err)
	}
	return provider, nil
}

// Hash identifies the schema that Up produces: a digest of every embedded SQL file. Test
// databases are cloned from a template keyed by this hash.
func Hash() (string, error) {
	h := sha256.New()
	for _, src := range []fs.FS{db.Migrations, db.Views, db.Materialized} {
		var paths []string
		err := fs.WalkDir(src, ".", func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if !d.IsDir() {
				paths = append(paths, path)
			}
			return nil
		})
		if err != nil {
			return "", fmt.Errorf("listing embedded SQL: %w", err)
		}
		sort.Strings(paths)
		for _, p := range paths {
			body, err := fs.ReadFile(src, p)
			if err != nil {
				return "", fmt.Errorf("reading %s: %w", p, err)
			}
			fmt.Fprintf(h, "%s\x00%d\x00", p, len(body))
			h.Write(body)
		}
	}
	for _, m := range projectionMigrations(db.Projections) {
		fmt.Fprintf(h, "go:%d\x00", m.Version)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
