package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"log/slog"

	"github.com/taskerhq/tasker/internal/config"
	"github.com/taskerhq/tasker/internal/database"
	"github.com/taskerhq/tasker/internal/httpserver"
	"github.com/taskerhq/tasker/internal/migrate"
)

func runServe(ctx context.Context, cfg config.Config, args []string, _ io.Writer, log *slog.Logger) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.StringVar(&cfg.DatabaseURL, "database-url", cfg.DatabaseURL, "PostgreSQL URL (env DATABASE_URL); empty starts a private cluster")
	fs.StringVar(&cfg.Listen, "listen", cfg.Listen, "HTTP listen address (env TASKER_HOST and PORT)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if cfg.DatabaseURL == "" {
		return errors.New("serve needs DATABASE_URL")
	}
	gdb, err := database.Open(ctx, cfg.DatabaseURL, database.Options{})
	if err != nil {
		return err
	}
	defer database.Close(gdb)
	applied, err := migrate.Up(ctx, database.SQL(gdb))
	if err != nil {
		return err
	}
	log.Info("serve: migrated", "applied", len(applied))
	srv, err := httpserver.New(cfg.Listen, database.SQL(gdb), log)
	if err != nil {
		return err
	}
	return srv.Serve(ctx, cfg.ShutdownTimeout)
}
