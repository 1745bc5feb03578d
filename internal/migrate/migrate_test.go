package migrate_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"slices"
	"strings"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver

	"github.com/taskerhq/tasker/db"
	"github.com/taskerhq/tasker/internal/migrate"
	"github.com/taskerhq/tasker/internal/testkit/dbtest"
)

// emptyDatabase creates a database with no schema at all on the test server and returns an
// open handle to it; both are dropped when t ends.
func emptyDatabase(t *testing.T) *sql.DB {
	t.Helper()
	ctx := context.Background()
	server, err := sql.Open("pgx", dbtest.ServerURL())
	if err != nil {
		t.Fatalf("opening test server: %v", err)
	}
	t.Cleanup(func() { _ = server.Close() })
	suffix := make([]byte, 6)
	if _, err := rand.Read(suffix); err != nil {
		t.Fatalf("generating database name: %v", err)
	}
	name := "tasker_migrate_" + hex.EncodeToString(suffix)
	if _, err := server.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("creating database %s: %v", name, err)
	}
	t.Cleanup(func() { _, _ = server.ExecContext(ctx, "DROP DATABASE "+name+" WITH (FORCE)") })

	u, err := url.Parse(dbtest.ServerURL())
	if err != nil {
		t.Fatalf("parsing server URL: %v", err)
	}
	u.Path = "/" + name
	sqlDB, err := sql.Open("pgx", u.String())
	if err != nil {
		t.Fatalf("opening database %s: %v", name, err)
	}
	t.Cleanup(func() { _ = sqlDB.Close() })
	return sqlDB
}

var liveViews = db.Names(db.LiveView)

func viewCount(t *testing.T, sqlDB *sql.DB) int {
	t.Helper()
	var n int
	err := sqlDB.QueryRowContext(context.Background(),
		`SELECT count(*) FROM pg_views WHERE schemaname = 'public' AND viewname = ANY($1)`, liveViews).Scan(&n)
	if err != nil {
		t.Fatalf("counting views: %v", err)
	}
	return n
}

// registered lists the read models registered in tasker_read_model_state, in the catalogue's
// order.
func registered(t *testing.T, sqlDB *sql.DB) []string {
	t.Helper()
	rows, err := sqlDB.QueryContext(context.Background(), `SELECT name FROM tasker_read_model_state`)
	if err != nil {
		t.Fatalf("listing read models: %v", err)
	}
	defer rows.Close()
	names := map[string]bool{}
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			t.Fatalf("scanning read model: %v", err)
		}
		names[name] = true
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("listing read models: %v", err)
	}
	var out []string
	for _, p := range db.Projections {
		if names[p.Name] {
			out = append(out, p.Name)
			delete(names, p.Name)
		}
	}
	for name := range names {
		out = append(out, name)
	}
	return out
}

// TestUpIsIdempotent applies the whole history to an empty database, then again: the second run
// applies nothing. Migrating down to zero and up again also works, so every down step is sound.
func TestUpIsIdempotent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	sqlDB := emptyDatabase(t)

	first, err := migrate.Up(ctx, sqlDB)
	if err != nil {
		t.Fatalf("first Up: %v", err)
	}
	versions := map[int64]bool{}
	for _, a := range first {
		versions[a.Version] = true
	}
	for _, want := range []int64{1, 2, 10, 11, 12, 13} {
		if !versions[want] {
			t.Errorf("first Up did not apply version %d (applied %v)", want, first)
		}
	}
	if got := viewCount(t, sqlDB); got != len(liveViews) {
		t.Errorf("after Up, %d of the %d live views exist", got, len(liveViews))
	}
	if got, want := registered(t, sqlDB), db.Names(db.MaterializedView); !slices.Equal(got, want) {
		t.Errorf("after Up, read models %v are registered, want %v", got, want)
	}
	current, err := migrate.Version(ctx, sqlDB)
	if err != nil {
		t.Fatalf("reading version: %v", err)
	}
	if last := first[len(first)-1].Version; current != last {
		t.Errorf("Version = %d, want the last applied %d", current, last)
	}

	second, err := migrate.Up(ctx, sqlDB)
	if err != nil {
		t.Fatalf("second Up: %v", err)
	}
	if len(second) != 0 {
		t.Errorf("second Up applied %v, want nothing", second)
	}

	provider, err := migrate.NewProvider(sqlDB)
	if err != nil {
		t.Fatalf("creating provider: %v", err)
	}
	if _, err := provider.DownTo(ctx, 0); err != nil {
		t.Fatalf("migrating down to 0: %v", err)
	}
	if got := viewCount(t, sqlDB); got != 0 {
		t.Errorf("after down to 0, %d live views remain", got)
	}
	partial, err := provider.UpTo(ctx, 19)
	if err != nil {
		t.Fatalf("migrating up to 19: %v", err)
	}
	if got := registered(t, sqlDB); len(got) != 0 {
		t.Errorf("before the read models' migrations, %v are registered", got)
	}
	again, err := migrate.Up(ctx, sqlDB)
	if err != nil {
		t.Fatalf("Up after down: %v", err)
	}
	if len(partial)+len(again) != len(first) {
		t.Errorf("Up after down applied %d+%d migrations, want %d", len(partial), len(again), len(first))
	}
}

// TestTemplateDatabaseIsCurrent checks that a test database cloned from the migrated template
// needs no migration.
func TestTemplateDatabaseIsCurrent(t *testing.T) {
	t.Parallel()
	gdb := dbtest.New(t)
	sqlDB, err := gdb.DB()
	if err != nil {
		t.Fatalf("getting *sql.DB: %v", err)
	}
	applied, err := migrate.Up(context.Background(), sqlDB)
	if err != nil {
		t.Fatalf("Up: %v", err)
	}
	if len(applied) != 0 {
		t.Errorf("Up on a template clone applied %v, want nothing", applied)
	}
	if got := viewCount(t, sqlDB); got != len(liveViews) {
		t.Errorf("%d of the %d live views exist", got, len(liveViews))
	}
}

// TestUpAppliesAMigrationNumberedBelowTheNewest: a database migrated before a lower-numbered
// migration existed (here: the record of 00008 removed and its effect undone) gets it on the
// next Up instead of refusing to start.
func TestUpAppliesAMigrationNumberedBelowTheNewest(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	sqlDB := emptyDatabase(t)
	if _, err := migrate.Up(ctx, sqlDB); err != nil {
		t.Fatal(err)
	}
	for _, stmt := range []string{
		`ALTER FUNCTION tasker_refresh_dag_levels(bigint[]) RESET jit`,
		`DELETE FROM goose_db_version WHERE version_id = 8`,
	} {
		if _, err := sqlDB.ExecContext(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	applied, err := migrate.Up(ctx, sqlDB)
	if err != nil {
		t.Fatalf("Up with a missing lower version: %v", err)
	}
	if len(applied) != 1 || applied[0].Version != 8 {
		t.Fatalf("applied %+v, want only version 8", applied)
	}
	var config string
	if err := sqlDB.QueryRowContext(ctx, `SELECT array_to_string(proconfig, ',') FROM pg_proc WHERE proname = 'tasker_refresh_dag_levels'`).
		Scan(&config); err != nil {
		t.Fatal(err)
	}
	if config != "jit=off" {
		t.Fatalf("tasker_refresh_dag_levels config %q, want jit=off", config)
	}
}

// schema describes what the migrations make, for comparing two states of one database: the
// columns of every table and view, the definition of every view and materialized view, every
// index, and the registered read models.
func schema(t *testing.T, sqlDB *sql.DB) string {
	t.Helper()
	var s string
	err := sqlDB.QueryRowContext(context.Background(), `
		SELECT string_agg(line, E'\n' ORDER BY line) FROM (
			SELECT 'column ' || table_name || '.' || column_name || ' ' || data_type || ' #' || ordinal_position AS line
			FROM information_schema.columns WHERE table_schema = 'public'
			UNION ALL SELECT 'view ' || viewname || ': ' || definition FROM pg_views WHERE schemaname = 'public'
			UNION ALL SELECT 'materialized ' || matviewname || ': ' || definition FROM pg_matviews WHERE schemaname = 'public'
			UNION ALL SELECT 'index ' || indexdef FROM pg_indexes WHERE schemaname = 'public'
			UNION ALL SELECT 'read model ' || name FROM tasker_read_model_state
		) lines`).Scan(&s)
	if err != nil {
		t.Fatalf("describing the schema: %v", err)
	}
	return s
}

// TestProjectionMigrationsGoDownToWhatWasBefore checks every Go migration of the catalogue
// where it stands in the history: after it and its way down, the schema is the one before it.
func TestProjectionMigrationsGoDownToWhatWasBefore(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	sqlDB := emptyDatabase(t)
	provider, err := migrate.NewProvider(sqlDB)
	if err != nil {
		t.Fatal(err)
	}
	var versions []int64
	for _, p := range db.Projections {
		for _, v := range p.Versions {
			versions = append(versions, v.Migration)
		}
	}
	slices.Sort(versions)
	for _, v := range versions {
		if _, err := provider.UpTo(ctx, v-1); err != nil {
			t.Fatalf("migrating up to %d: %v", v-1, err)
		}
		before := schema(t, sqlDB)
		if _, err := provider.UpTo(ctx, v); err != nil {
			t.Fatalf("migrating up to %d: %v", v, err)
		}
		if schema(t, sqlDB) == before {
			t.Errorf("migration %d changed nothing", v)
		}
		if _, err := provider.DownTo(ctx, v-1); err != nil {
			t.Fatalf("migrating %d down: %v", v, err)
		}
		if after := schema(t, sqlDB); after != before {
			t.Errorf("after migration %d and its way down the schema differs:\nmissing:\n%s\nadded:\n%s",
				v, linesNotIn(before, after), linesNotIn(after, before))
		}
	}
}

// linesNotIn returns the lines of a that b does not have.
func linesNotIn(a, b string) string {
	have := map[string]bool{}
	for _, l := range strings.Split(b, "\n") {
		have[l] = true
	}
	var out []string
	for _, l := range strings.Split(a, "\n") {
		if !have[l] {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
