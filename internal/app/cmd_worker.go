package app

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"sync"

	"github.com/jackc/pgx/v5"
	"gorm.io/gorm"

	"github.com/taskerhq/tasker/internal/config"
	"github.com/taskerhq/tasker/internal/database"
	"github.com/taskerhq/tasker/internal/events"
	"github.com/taskerhq/tasker/internal/handler"
	"github.com/taskerhq/tasker/internal/httpserver"
	"github.com/taskerhq/tasker/internal/metrics"
	"github.com/taskerhq/tasker/internal/orchestration"
)

// runWorker runs workers only (no API), to scale step execution out over more processes
// sharing one database. Its parts, started in order and stopped in reverse (lifecycle):
// tracing, the pool, migrations (idempotent, serialised across processes), the events hub,
// with -metrics-listen (TASKER_WORKER_METRICS_LISTEN) an HTTP server of /metrics, /healthz
// and /readyz for the process's own steps (and, with -pprof or TASKER_PPROF=on, the runtime's
// profiles under /debug/pprof/), the engine's own pool, and the workers, which
// drain running steps within the shutdown deadline on SIGINT/SIGTERM.
func runWorker(ctx context.Context, cfg config.Config, args []string, out io.Writer, log *slog.Logger) (err error) {
	fs := newFlagSet("worker", "[flags]",
		"Run workers only (no API) against the database, to scale step execution out over more processes.", out)
	databaseFlags(fs, &cfg, usesServer)
	fs.IntVar(&cfg.Workers.Workers, "workers", cfg.Workers.Workers, "steps run at once by this process (env TASKER_WORKERS; 0 means 32)")
	shutdownFlag(fs, &cfg, "deadline for draining running steps")
	fs.StringVar(&cfg.WorkerMetricsListen, "metrics-listen", cfg.WorkerMetricsListen,
		"serve /metrics, /healthz and /readyz on this address, e.g. 127.0.0.1:9091 (env TASKER_WORKER_METRICS_LISTEN); empty serves nothing")
	fs.BoolVar(&cfg.WorkerPprof, "pprof", cfg.WorkerPprof,
		"also serve the Go runtime's profiles under /debug/pprof/ on -metrics-listen (env TASKER_PPROF=on)")
	if err := parseCommand(fs, args, &cfg); err != nil {
		return err
	}
	if cfg.WorkerPprof && cfg.WorkerMetricsListen == "" {
		return usageError("worker: -pprof (TASKER_PPROF=on) serves profiles on -metrics-listen, which is not set")
	}
	if cfg.NoWorkers {
		return usageError(`TASKER_WORKERS="0" runs no workers, which only tasker serve can do (an API-only process); give tasker worker 1 to 1024`)
	}
	dbURL, err := resolveDatabaseURL(ctx, cfg)
	if err != nil {
		return err
	}
	lc := newLifecycle("worker", cfg.ShutdownTimeout, log)
	defer func() { err = errors.Join(err, lc.stop()) }()
	if err := startTracing(ctx, lc, cfg); err != nil {
		return err
	}
	var gdb *gorm.DB
	if err := lc.start(ctx, "database pool", func(ctx context.Context) (err error) {
		gdb, err = database.Open(ctx, dbURL, database.Options{})
		return err
	}, func(context.Context) error { return database.Close(gdb) }); err != nil {
		return err
	}
	if err := startMigrations(ctx, lc, gdb, log); err != nil {
		return err
	}
	hub := startEvents(lc, dbURL, log)
	if cfg.WorkerMetricsListen != "" {
		m := metrics.New(metrics.Options{DB: gdb, Hub: hub, Log: log})
		cfg.Workers.Observer = m
		srv, err := httpserver.New(cfg.WorkerMetricsListen, gdb, log)
		if err != nil {
			return err
		}
		srv.Mux.Handle("GET /metrics", m.Handler())
		if cfg.WorkerPprof {
			mountPprof(srv.Mux)
		}
		lc.run("metrics http", func(ctx context.Context) error { return srv.Serve(ctx, cfg.ShutdownTimeout) })
	}
	if err := startWorkers(ctx, lc, gdb, dbURL, nil, hub, cfg); err != nil {
		return err
	}
	return lc.wait(ctx)
}

// startWorkers starts the engines of a process (the part "workers") with the built-in handler
// kinds, after their own pool on dbURL (the part "engine pool": orchestration.PoolConns
// connections per engine with the engine's session settings, traced by tracer when not nil),
// which is closed after the engines have stopped. The process's workers are shared out among
// cfg.EnginesFor(workers) engines (see config.Config.Engines): each claims and records its
// own steps, so one engine's steps run while another's batch commits. A prefetch set
// explicitly is shared out the same way (by default each engine's follows its share of the
// workers). Running steps are given two thirds of the shutdown deadline to finish before they
// are cancelled.
func startWorkers(ctx context.Context, lc *lifecycle, gdb *gorm.DB, dbURL string, tracer pgx.QueryTracer, hub *events.Hub, cfg config.Config) error {
	ocfg := cfg.Workers
	if ocfg.DrainTimeout == 0 {
		ocfg.DrainTimeout = cfg.ShutdownTimeout * 2 / 3
	}
	workers := ocfg.Workers
	if workers <= 0 {
		workers = orchestration.DefaultWorkers
	}
	shares := shareWorkers(workers, cfg.EnginesFor(workers))
	if err := lc.start(ctx, "engine pool", func(ctx context.Context) (err error) {
		ocfg.Pool, err = database.OpenEngine(ctx, dbURL,
			database.Options{MaxOpenConns: orchestration.PoolConns * len(shares), Tracer: tracer}, ocfg.AsyncCommit)
		return err
	}, func(context.Context) error { return ocfg.Pool.Close() }); err != nil {
		return err
	}
	svc := orchestration.NewService(gdb, nil)
	handlers := orchestration.NewConfiguredHandlers(handler.NewBuiltinRegistry())
	group := make(engineGroup, len(shares))
	var prefetch []int
	if ocfg.Prefetch > 0 {
		prefetch = shareWorkers(ocfg.Prefetch, len(shares))
	}
	for i, n := range shares {
		ecfg := ocfg
		ecfg.Workers = n
		if prefetch != nil {
			ecfg.Prefetch = orchestration.ExplicitPrefetch(prefetch[i])
		}
		engine, err := orchestration.New(svc, hub, handlers, ecfg, lc.log)
		if err != nil {
			return err
		}
		group[i] = engine
	}
	if len(group) > 1 {
		lc.log.Info(lc.command+": workers shared among engines", "workers", workers, "engines", shares)
	}
	return lc.startService(ctx, "workers", group)
}

// shareWorkers splits workers among engines as evenly as it can.
func shareWorkers(workers, engines int) []int {
	shares := make([]int, engines)
	for i := range shares {
		shares[i] = workers / engines
		if i < workers%engines {
			shares[i]++
		}
	}
	return shares
}

// engineGroup is the engines of one process, started and stopped together.
type engineGroup []*orchestration.Engine

// Start starts every engine; when one fails, those already started are stopped.
func (g engineGroup) Start(ctx context.Context) error {
	for i, e := range g {
		if err := e.Start(ctx); err != nil {
			return errors.Join(err, engineGroup(g[:i]).Stop(ctx))
		}
	}
	return nil
}

// Stop stops every engine at once (each drains its running steps under ctx's deadline) and
// returns every failure.
func (g engineGroup) Stop(ctx context.Context) error {
	errs := make([]error, len(g))
	var wg sync.WaitGroup
	for i, e := range g {
		wg.Go(func() { errs[i] = e.Stop(ctx) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// mountPprof serves the Go runtime's profiles (net/http/pprof) under /debug/pprof/ on mux:
// the index, and /debug/pprof/profile?seconds=N for a CPU profile of the next N seconds.
func mountPprof(mux *http.ServeMux) {
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
}
