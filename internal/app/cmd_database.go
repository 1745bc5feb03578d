package app

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"gorm.io/gorm"

	"github.com/taskerhq/tasker/internal/config"
	"github.com/taskerhq/tasker/internal/database"
	"github.com/taskerhq/tasker/internal/migrate"
	"github.com/taskerhq/tasker/internal/seed"
)

// runMigrate applies every pending migration and prints what it applied and the version the
// database is at.
func runMigrate(ctx context.Context, cfg config.Config, args []string, out io.Writer, _ *slog.Logger) error {
	fs := newFlagSet("migrate", "[flags]", "Apply every pending migration to the database and print what was applied (idempotent).", out)
	databaseFlags(fs, &cfg, usesServer)
	if err := parseCommand(fs, args, &cfg); err != nil {
		return err
	}
	gdb, err := openDatabase(ctx, cfg)
	if err != nil {
		return err
	}
	defer database.Close(gdb)
	applied, err := migrate.Up(ctx, database.SQL(gdb))
	if err != nil {
		return err
	}
	for _, a := range applied {
		fmt.Fprintf(out, "applied %05d %s (%s)\n", a.Version, a.Source, a.Duration)
	}
	version, err := migrate.Version(ctx, database.SQL(gdb))
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "database is at version %d (%d applied now)\n", version, len(applied))
	return nil
}

// openDatabase opens the database of a one-shot command (resolveDatabaseURL) with a small
// pool; the caller closes it (database.Close).
func openDatabase(ctx context.Context, cfg config.Config) (*gorm.DB, error) {
	dbURL, err := resolveDatabaseURL(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return database.Open(ctx, dbURL, database.Options{MaxOpenConns: 2})
}

// runSeed generates a dataset of about -steps steps (internal/seed) into a migrated database.
func runSeed(ctx context.Context, cfg config.Config, args []string, out io.Writer, log *slog.Logger) error {
	fs := newFlagSet("seed", "[-steps n] [flags]",
		"Generate a realistic dataset of about -steps steps into a migrated database, with set-based SQL, two batches at a time.", out)
	databaseFlags(fs, &cfg, usesServer)
	steps := fs.Int("steps", 10000, "how many steps to generate in total (10 to any size)")
	shapes := fs.String("shapes", strings.Join(seed.DefaultShapes, ","),
		"comma-separated shapes, some of: "+strings.Join(seed.ShapeNames, ", "))
	seedValue := fs.Int64("seed", 1, "seed of the deterministic draw of scenarios and states")
	batch := fs.Int("batch-steps", 200000, "at most about this many steps per statement")
	if err := parseCommand(fs, args, &cfg); err != nil {
		return err
	}
	plan, err := seed.Plan(*steps, strings.Split(*shapes, ","), *batch)
	if err != nil {
		return usageError("seed: %w", err)
	}
	gdb, err := openDatabase(ctx, cfg)
	if err != nil {
		return err
	}
	defer database.Close(gdb)
	rep, err := seed.Generate(ctx, gdb, *seedValue, plan, func(r seed.Result) {
		log.Info("seed: batch written", "shape", r.Shape, "tasks", r.Tasks, "steps", r.Steps,
			"edges", r.Edges, "insert", r.Insert.Round(1e6), "edges_time", r.EdgesTime.Round(1e6))
	})
	if err != nil {
		return err
	}
	indexes := ""
	if rep.Indexes > 0 {
		indexes = fmt.Sprintf(", %d indexes built after the load in %s", rep.Indexes, rep.IndexTime.Round(1e6))
	}
	fmt.Fprintf(out, "seeded %d tasks, %d steps, %d edges in %s (%d batches; tasks, steps and transitions %s, edges %s%s, then ANALYZE)\n",
		rep.Tasks, rep.Steps, rep.Edges, rep.Total.Round(1e6), len(rep.Batches), rep.Insert.Round(1e6), rep.EdgesTime.Round(1e6), indexes)
	return nil
}
