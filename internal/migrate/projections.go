package migrate

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"

	"github.com/pressly/goose/v3"

	"github.com/taskerhq/tasker/db"
)

// projectionMigrations builds, from the catalogue db.Projections, one Go migration per
// released version of each projection, in version order. Each runs in one transaction.
//
// Up installs the version's file. For a materialized projection it then registers the view in
// tasker_read_model_state and logs the initial fill in tasker_read_model_refreshes as a
// successful refresh with trigger "migration", so a new database reports every read model as
// fresh.
//
// Down undoes exactly that. For a first version it drops the view (and a materialized
// projection's registration); for a later one it drops the projections that read this one,
// drops this one and reinstalls its previous version and the readers' files as they were
// before this migration (PostgreSQL cannot drop a column of a view with CREATE OR REPLACE).
func projectionMigrations(catalogue []db.Projection) []*goose.Migration {
	var out []*goose.Migration
	for _, p := range catalogue {
		for i, v := range p.Versions {
			up, down := projectionSteps(catalogue, p, i)
			out = append(out, goose.NewGoMigration(v.Migration,
				&goose.GoFunc{RunTx: up}, &goose.GoFunc{RunTx: down}))
		}
	}
	slices.SortFunc(out, func(a, b *goose.Migration) int { return int(a.Version - b.Version) })
	return out
}

type txFunc = func(ctx context.Context, tx *sql.Tx) error

// projectionSteps returns the up and down steps of version i of p.
func projectionSteps(catalogue []db.Projection, p db.Projection, i int) (up, down txFunc) {
	v := p.Versions[i]
	up = func(ctx context.Context, tx *sql.Tx) error { return install(ctx, tx, p, v) }
	if i == 0 {
		down = func(ctx context.Context, tx *sql.Tx) error { return drop(ctx, tx, p) }
		return up, down
	}
	// The readers of p, direct or not, that exist before v, in catalogue (install) order,
	// with the version of each that was current then.
	type reinstall struct {
		p db.Projection
		v db.Version
	}
	var readers []reinstall
	for _, r := range catalogue {
		if !reads(catalogue, r, p.Name) {
			continue
		}
		var before *db.Version
		for j := range r.Versions {
			if r.Versions[j].Migration < v.Migration {
				before = &r.Versions[j]
			}
		}
		if before != nil { // a reader installed later does not exist yet
			readers = append(readers, reinstall{r, *before})
		}
	}
	down = func(ctx context.Context, tx *sql.Tx) error {
		for j := len(readers) - 1; j >= 0; j-- {
			if err := drop(ctx, tx, readers[j].p); err != nil {
				return err
			}
		}
		if err := drop(ctx, tx, p); err != nil {
			return err
		}
		if err := install(ctx, tx, p, p.Versions[i-1]); err != nil {
			return err
		}
		for _, r := range readers {
			if err := install(ctx, tx, r.p, r.v); err != nil {
				return err
			}
		}
		return nil
	}
	return up, down
}

// reads reports whether r's definition selects from the projection named name, directly or
// through other projections.
func reads(catalogue []db.Projection, r db.Projection, name string) bool {
	for _, dep := range r.Reads {
		if dep == name {
			return true
		}
		if d, ok := find(catalogue, dep); ok && reads(catalogue, d, name) {
			return true
		}
	}
	return false
}

func find(catalogue []db.Projection, name string) (db.Projection, bool) {
	i := slices.IndexFunc(catalogue, func(p db.Projection) bool { return p.Name == name })
	if i < 0 {
		return db.Projection{}, false
	}
	return catalogue[i], true
}

// install runs the definition file of version v of p and, for a materialized projection,
// registers its initial fill.
func install(ctx context.Context, tx *sql.Tx, p db.Projection, v db.Version) error {
	body, err := db.ReadFile(v.File)
	if err != nil {
		return fmt.Errorf("reading %s: %w", v.File, err)
	}
	if p.Kind != db.MaterializedView {
		if _, err := tx.ExecContext(ctx, string(body)); err != nil {
			return fmt.Errorf("installing %s: %w", v.File, err)
		}
		return nil
	}
	var started string
	if err := tx.QueryRowContext(ctx, `SELECT clock_timestamp()::text`).Scan(&started); err != nil {
		return fmt.Errorf("reading the clock: %w", err)
	}
	if _, err := tx.ExecContext(ctx, string(body)); err != nil {
		return fmt.Errorf("installing %s: %w", v.File, err)
	}
	_, err = tx.ExecContext(ctx, fmt.Sprintf(`
		WITH fill AS (
			SELECT $1::timestamptz AS started_at, clock_timestamp() AS finished_at,
			       (SELECT count(*) FROM %s) AS row_count
		), logged AS (
			INSERT INTO tasker_read_model_refreshes
				(view_name, trigger, started_at, finished_at, duration_ms, row_count, refreshed_by)
			SELECT $2, 'migration', started_at, finished_at,
			       extract(epoch FROM finished_at - started_at) * 1000, row_count, 'migration'
			FROM fill
		)
		INSERT INTO tasker_read_model_state AS s (name, last_refreshed_at, last_data_as_of,
			last_duration_ms, last_row_count, last_attempt_at)
		SELECT $2, finished_at, started_at, extract(epoch FROM finished_at - started_at) * 1000,
		       row_count, started_at
		FROM fill
		ON CONFLICT (name) DO UPDATE SET stale_since = NULL, last_refreshed_at = EXCLUDED.last_refreshed_at,
			last_data_as_of = EXCLUDED.last_data_as_of, last_duration_ms = EXCLUDED.last_duration_ms,
			last_row_count = EXCLUDED.last_row_count, last_attempt_at = EXCLUDED.last_attempt_at,
			last_error = NULL`, p.Name), started, p.Name)
	if err != nil {
		return fmt.Errorf("registering read model %s: %w", p.Name, err)
	}
	return nil
}

// drop removes p's view and, for a materialized projection, its registration.
func drop(ctx context.Context, tx *sql.Tx, p db.Projection) error {
	stmts := []string{"DROP VIEW " + p.Name}
	if p.Kind == db.MaterializedView {
		stmts = []string{"DROP MATERIALIZED VIEW " + p.Name,
			"DELETE FROM tasker_read_model_state WHERE name = '" + strings.ReplaceAll(p.Name, "'", "''") + "'"}
	}
	for _, s := range stmts {
		if _, err := tx.ExecContext(ctx, s); err != nil {
			return fmt.Errorf("dropping %s: %w", p.Name, err)
		}
	}
	return nil
}
