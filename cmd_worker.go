package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"

	"gorm.io/gorm"

	"github.com/taskerhq/tasker/internal/config"
	"github.com/taskerhq/tasker/internal/database"
	"github.com/taskerhq/tasker/internal/events"
	"github.com/taskerhq/tasker/internal/handler"
	"github.com/taskerhq/tasker/internal/migrate"
	"github.com/taskerhq/tasker/internal/orchestration"
)

// runWorker runs workers only (no HTTP), to scale step execution out over more processes
// sharing one database. It migrates (idempotent, serialised across processes), starts its
// events hub and the engine, and on SIGINT/SIGTERM drains running steps within the shutdown
// deadline before closing the pool.
func runWorker(ctx context.Context, cfg config.Config, args []string, _ io.Writer, log *slog.Logger) error {
	ocfg, err := orchestration.ConfigFromEnv()
	if err != nil {
		return err
	}
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	fs.StringVar(&cfg.DatabaseURL, "database-url", cfg.DatabaseURL, "PostgreSQL URL (env DATABASE_URL)")
	fs.IntVar(&ocfg.Workers, "workers", ocfg.Workers, "steps run at once by this process (env TASKER_WORKERS; 0 means 32)")
	fs.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", cfg.ShutdownTimeout, "deadline for draining running steps (env TASKER_SHUTDOWN_TIMEOUT)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if cfg.DatabaseURL == "" {
		return errors.New("worker needs a database: set DATABASE_URL or pass -database-url")
	}
	if ocfg.Workers < 0 {
		return fmt.Errorf("-workers %d is negative", ocfg.Workers)
	}
	if cfg.ShutdownTimeout <= 0 {
		return fmt.Errorf("-shutdown-timeout %s is not a positive duration", cfg.ShutdownTimeout)
	}
	gdb, err := database.Open(ctx, cfg.DatabaseURL, database.Options{})
	if err != nil {
		return err
	}
	defer database.Close(gdb)
	if _, err := migrate.Up(ctx, database.SQL(gdb)); err != nil {
		return err
	}
	hub := events.NewHub(cfg.DatabaseURL, log)
	hubCtx, stopHub := context.WithCancel(context.Background())
	hubDone := make(chan struct{})
	go func() { defer close(hubDone); _ = hub.Run(hubCtx) }()
	defer func() { stopHub(); <-hubDone }()

	engine, err := startEngine(ctx, gdb, hub, ocfg, cfg.ShutdownTimeout, log)
	if err != nil {
		return err
	}
	<-ctx.Done()
	log.Info("worker: shutting down", "reason", context.Cause(ctx).Error())
	stopCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	return engine.Stop(stopCtx)
}

// startEngine starts the workers of a process with the built-in handler kinds. Running steps
// are given two thirds of the shutdown deadline to finish before they are cancelled.
func startEngine(ctx context.Context, gdb *gorm.DB, hub *events.Hub, ocfg orchestration.Config,
	shutdown time.Duration, log *slog.Logger) (*orchestration.Engine, error) {
	if ocfg.DrainTimeout == 0 {
		ocfg.DrainTimeout = shutdown * 2 / 3
	}
	engine, err := orchestration.New(gdb, hub, orchestration.NewConfiguredHandlers(handler.NewBuiltinRegistry()), ocfg, log)
	if err != nil {
		return nil, err
	}
	if err := engine.Start(ctx); err != nil {
		return nil, err
	}
	return engine, nil
}
