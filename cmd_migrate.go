package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"

	"github.com/taskerhq/tasker/internal/config"
	"github.com/taskerhq/tasker/internal/database"
	"github.com/taskerhq/tasker/internal/migrate"
)

func runMigrate(ctx context.Context, cfg config.Config, args []string, out io.Writer, _ *slog.Logger) error {
	fs := flag.NewFlagSet("migrate", flag.ContinueOnError)
	dbURL := fs.String("database-url", cfg.DatabaseURL, "PostgreSQL URL (env DATABASE_URL)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dbURL == "" {
		return errors.New("migrate needs a database: set DATABASE_URL or pass -database-url")
	}
	gdb, err := database.Open(ctx, *dbURL, database.Options{MaxOpenConns: 2})
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
