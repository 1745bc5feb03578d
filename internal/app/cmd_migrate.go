package app

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"gorm.io/gorm"

	"github.com/taskerhq/tasker/internal/config"
	"github.com/taskerhq/tasker/internal/database"
	"github.com/taskerhq/tasker/internal/migrate"
)

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
