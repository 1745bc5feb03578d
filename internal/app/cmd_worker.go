package app

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"gorm.io/gorm"

	"github.com/taskerhq/tasker/internal/config"
	"github.com/taskerhq/tasker/internal/database"
	"github.com/taskerhq/tasker/internal/events"
	"github.com/taskerhq/tasker/internal/handler"
	"github.com/taskerhq/tasker/internal/httpserver"
	"github.com/taskerhq/tasker/internal/metrics"
	"github.com/taskerhq/tasker/internal/migrate"
	"github.com/taskerhq/tasker/internal/orchestration"
)

// runWorker runs workers only (no API), to scale step execution out over more processes
// sharing one database. It migrates (idempotent, serialised across processes), starts its
// events hub and the engine, and on SIGINT/SIGTERM drains running steps within the shutdown
// deadline before closing the pool. With -metrics-listen (TASKER_WORKER_METRICS_LISTEN) it
// also serves /metrics, /healthz and /readyz on that address, for the process's own steps.
func runWorker(ctx context.Context, cfg config.Config, args []string, out io.Writer, log *slog.Logger) error {
	ocfg, err := orchestration.ConfigFromEnv()
	if err != nil {
		return err
	}
	fs := newFlagSet("worker", "[flags]",
		"Run workers only (no API) against the database, to scale step execution out over more processes.", out)
	databaseFlags(fs, &cfg)
	fs.IntVar(&ocfg.Workers, "workers", ocfg.Workers, "steps run at once by this process (env TASKER_WORKERS; 0 means 32)")
	fs.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", cfg.ShutdownTimeout, "deadline for draining running steps (env TASKER_SHUTDOWN_TIMEOUT)")
	metricsListen := fs.String("metrics-listen", os.Getenv("TASKER_WORKER_METRICS_LISTEN"),
		"serve /metrics, /healthz and /readyz on this address, e.g. 127.0.0.1:9091 (env TASKER_WORKER_METRICS_LISTEN); empty serves nothing")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	if ocfg.Workers < 0 {
		return fmt.Errorf("-workers %d is negative", ocfg.Workers)
	}
	if cfg.ShutdownTimeout <= 0 {
		return fmt.Errorf("-shutdown-timeout %s is not a positive duration", cfg.ShutdownTimeout)
	}
	traces, err := startTracing(ctx, log)
	if err != nil {
		return err
	}
	defer func() { // last: flushes the spans of the drained steps, within the shutdown deadline
		flushCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
		defer cancel()
		if err := traces.Shutdown(flushCtx); err != nil {
			log.Error("worker: flushing traces", "error", err)
		}
	}()
	dbURL, err := resolveDatabaseURL(ctx, cfg)
	if err != nil {
		return err
	}
	gdb, err := database.Open(ctx, dbURL, database.Options{})
	if err != nil {
		return err
	}
	defer database.Close(gdb)
	if _, err := migrate.Up(ctx, database.SQL(gdb)); err != nil {
		return err
	}
	hub := events.NewHub(dbURL, log)
	hubCtx, stopHub := context.WithCancel(context.Background())
	hubDone := make(chan struct{})
	go func() { defer close(hubDone); _ = hub.Run(hubCtx) }()
	defer func() { stopHub(); <-hubDone }()

	if *metricsListen != "" {
		m := metrics.New(metrics.Options{DB: gdb, Hub: hub, Log: log})
		ocfg.Observer = m
		srv, err := httpserver.New(*metricsListen, gdb, log)
		if err != nil {
			return err
		}
		srv.Mux.Handle("GET /metrics", m.Handler())
		srvCtx, stopSrv := context.WithCancel(context.Background())
		srvDone := make(chan struct{})
		go func() {
			defer close(srvDone)
			if err := srv.Serve(srvCtx, cfg.ShutdownTimeout); err != nil {
				log.Error("worker: metrics server", "error", err)
			}
		}()
		defer func() { stopSrv(); <-srvDone }()
	}

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
	engine, err := orchestration.New(orchestration.NewService(gdb, nil), hub, orchestration.NewConfiguredHandlers(handler.NewBuiltinRegistry()), ocfg, log)
	if err != nil {
		return nil, err
	}
	if err := engine.Start(ctx); err != nil {
		return nil, err
	}
	return engine, nil
}
