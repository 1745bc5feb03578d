package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"gorm.io/gorm"

	"github.com/taskerhq/tasker/graph/server"
	"github.com/taskerhq/tasker/internal/config"
	"github.com/taskerhq/tasker/internal/database"
	"github.com/taskerhq/tasker/internal/events"
	"github.com/taskerhq/tasker/internal/httpserver"
	"github.com/taskerhq/tasker/internal/migrate"
	"github.com/taskerhq/tasker/internal/orchestration"
	"github.com/taskerhq/tasker/internal/pgembed"
	"github.com/taskerhq/tasker/internal/querystats"
	"github.com/taskerhq/tasker/internal/refresh"
	"github.com/taskerhq/tasker/internal/replica"
	"github.com/taskerhq/tasker/internal/retention"
	"github.com/taskerhq/tasker/internal/runstate"
	"github.com/taskerhq/tasker/internal/template"
	"github.com/taskerhq/tasker/internal/tracing"
)

// runServe starts the service in order, waits for a signal and stops it in reverse order:
//
//  1. PostgreSQL: DATABASE_URL, or a private cluster in <data dir>/postgres (internal/pgembed)
//  2. the connection pool
//  3. migrations, then the events hub and the read-model refresher (internal/refresh)
//  4. the HTTP server (/healthz, /readyz and the API); with the private cluster, the record of
//     where the server and its database are, in <data dir>/server.json (internal/runstate),
//     which the other commands read to find the database; it is removed first at shutdown
//  5. wait for SIGINT/SIGTERM, a failed HTTP server or the private cluster's unexpected exit
//
// Every component registers its stop step with stops.add as soon as it has started; the steps
// run in reverse order under one deadline (cfg.ShutdownTimeout), also when startup fails
// half-way. Each start and stop step is logged with its duration.
func runServe(ctx context.Context, cfg config.Config, args []string, out io.Writer, log *slog.Logger) error {
	return serve(ctx, cfg, args, out, log, serveExtras{
		command: "serve",
		about: "Migrate, register the templates, then serve HTTP (API, playground, health) and run workers, " +
			"the events listener and the read-model refresher. Without a database URL it runs a private " +
			"PostgreSQL cluster in <data dir>/postgres.",
	})
}

// serveExtras is what a command built on serve adds to it (tasker demo).
type serveExtras struct {
	// command and about name the command and say what it does, for its -h.
	command, about string
	// mount, when set, adds handlers to the HTTP server before it serves.
	mount func(mux *http.ServeMux)
	// afterStart, when set, runs once the service is serving; httpURL is its base URL.
	afterStart func(ctx context.Context, db *gorm.DB, templates *template.Registry, httpURL string) error
}

// serve is runServe with the extras of the command that runs it.
func serve(ctx context.Context, cfg config.Config, args []string, out io.Writer, log *slog.Logger, extras serveExtras) (err error) {
	fs := newFlagSet(extras.command, "[flags]", extras.about, out)
	fs.StringVar(&cfg.DatabaseURL, "database-url", cfg.DatabaseURL, "PostgreSQL URL (env DATABASE_URL); empty starts a private cluster")
	fs.StringVar(&cfg.ReplicaURLs, "database-replica-urls", cfg.ReplicaURLs, "comma-separated streaming replicas of the database that serve GraphQL queries (env DATABASE_REPLICA_URLS)")
	fs.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, "local state; the private cluster lives in its postgres/ folder (env TASKER_DATA_DIR)")
	fs.StringVar(&cfg.PostgresBinDir, "postgres-bin-dir", cfg.PostgresBinDir, "where initdb and postgres are for the private cluster; empty finds them (env TASKER_POSTGRES_BIN_DIR)")
	fs.StringVar(&cfg.Listen, "listen", cfg.Listen, "HTTP listen address (env TASKER_HOST and PORT)")
	fs.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", cfg.ShutdownTimeout, "deadline for an orderly shutdown (env TASKER_SHUTDOWN_TIMEOUT)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	if cfg.ShutdownTimeout <= 0 {
		return fmt.Errorf("-shutdown-timeout %s is not a positive duration", cfg.ShutdownTimeout)
	}
	if len(database.ReplicaURLs(cfg.ReplicaURLs)) > 0 && cfg.DatabaseURL == "" {
		return errors.New("-database-replica-urls (DATABASE_REPLICA_URLS) needs -database-url (DATABASE_URL): " +
			"the replicas stream from that primary, not from a private cluster")
	}
	authDecision, err := decideAuth(cfg, log) // before anything starts: a bad TASKER_AUTH refuses
	if err != nil {
		return err
	}
	stops := &shutdown{log: log}
	defer func() { err = errors.Join(err, stops.run(cfg.ShutdownTimeout)) }()
	traces, err := startTracing(ctx, log) // first, so that it stops last, flushing every span
	if err != nil {
		return err
	}
	stops.add("tracing", traces.Shutdown)

	// 1. PostgreSQL.
	dbURL := cfg.DatabaseURL
	var cluster *pgembed.Cluster
	if dbURL == "" {
		if cluster, err = startPostgres(ctx, cfg, log); err != nil {
			return err
		}
		stops.add("postgres", cluster.Stop)
		dbURL = cluster.URL()
	}

	// 2. Connection pool.
	began := time.Now()
	// querystats.Tracer counts the statements of each GraphQL response (graphapi). With
	// replicas, GraphQL queries read from them and everything else stays on the primary
	// (internal/replica).
	replicaURLs := database.ReplicaURLs(cfg.ReplicaURLs)
	gdb, err := database.OpenWithReplicas(ctx, dbURL, replicaURLs, database.Options{Tracer: querystats.Tracer{}},
		replica.Options{Log: log})
	if err != nil {
		return err
	}
	if len(replicaURLs) > 0 {
		log.Info("serve: GraphQL queries read from replicas", "replicas", len(replicaURLs))
	}
	stops.add("database pool", func(context.Context) error { return database.Close(gdb) })
	log.Info("serve: database connected", "took", time.Since(began))

	// 3. Migrations.
	began = time.Now()
	applied, err := migrate.Up(ctx, database.SQL(gdb))
	if err != nil {
		return err
	}
	log.Info("serve: migrated", "applied", len(applied), "took", time.Since(began))

	// 3b. Materialized read models: the process's events hub (its one LISTEN connection) and
	// the refresher, which refreshes on its cron schedules and, between ticks, soon after the
	// hub reports writes. Stopped before the pool closes.
	refreshCfg, err := refresh.ConfigFromEnv(os.Getenv)
	if err != nil {
		return err
	}
	hub := events.NewHub(dbURL, log)
	hubRun := goUntilStopped("events", hub.Run)
	stops.add("events", hubRun.stop)
	refresher, err := refresh.New(gdb, hub, refreshCfg, log)
	if err != nil {
		return err
	}
	if err := refresher.Start(ctx); err != nil {
		return err
	}
	stops.add("read-model refresher", refresher.Stop)
	// Retention (internal/retention): deletes finished tasks past their namespace's period
	// (TASKER_RETENTION, default keep forever) on its cron schedule.
	retentionCfg, err := retention.ConfigFromEnv(os.Getenv)
	if err != nil {
		return err
	}
	retainer, err := retention.New(gdb, retentionCfg, log)
	if err != nil {
		return err
	}
	if err := retainer.Start(ctx); err != nil {
		return err
	}
	stops.add("retention", retainer.Stop)

	// 3c. Workers (internal/orchestration, see cmd_worker.go): claim and run ready steps.
	// Stopped after HTTP and before the hub and the pool, draining running steps first.
	// TASKER_WORKERS=0 runs none: an API-only process, while other processes run the steps.
	apiOnly := os.Getenv("TASKER_WORKERS") == "0"
	var workerCfg orchestration.Config
	if !apiOnly {
		if workerCfg, err = orchestration.ConfigFromEnv(); err != nil {
			return err
		}
	}
	// API access control and metrics (cmd_serve_security.go); the workers report to the metrics.
	sec, err := newAPISecurity(ctx, authDecision, gdb, hub, log)
	if err != nil {
		return err
	}
	if router := database.Router(gdb); router != nil {
		sec.metrics.Registry().MustRegister(router.Collector()) // statements per server, replica health
	}
	if apiOnly {
		log.Info("serve: no workers (TASKER_WORKERS=0): this process serves the API only")
	} else {
		workerCfg.Observer = sec.metrics
		engine, err := startEngine(ctx, gdb, hub, workerCfg, cfg.ShutdownTimeout, log)
		if err != nil {
			return err
		}
		stops.add("workers", engine.Stop)
	}

	// 4. HTTP, with the GraphQL API (graph/server) at /query and its playground at /.
	// Query stats are reported by default with the private cluster (TASKER_QUERY_STATS).
	apiCfg, err := server.ConfigFromEnv(cfg.DatabaseURL == "")
	if err != nil {
		return err
	}
	apiTemplates, err := loadTemplates(os.Getenv("TASKER_TEMPLATES_DIR")) // for createTask
	if err != nil {
		return fmt.Errorf("loading task templates: %w", err)
	}
	// Register every loaded template, so that workers and dashboards know them before the
	// first task; a changed definition under a registered version refuses to start.
	began = time.Now()
	if err := apiTemplates.RegisterAll(ctx, gdb); err != nil {
		return fmt.Errorf("registering task templates: %w", err)
	}
	log.Info("serve: templates registered", "count", len(apiTemplates.Templates()), "took", time.Since(began))
	srv, err := httpserver.New(cfg.Listen, gdb, log)
	if err != nil {
		return err
	}
	server.New(apiCfg, server.Deps{DB: gdb, Hub: hub, Log: log, Templates: apiTemplates,
		Guard: sec.guard, Metrics: sec.metrics, Refresher: refresher}).Mount(srv.Mux)
	srv.Mux.Handle("GET /metrics", sec.metrics.Middleware("metrics", sec.metrics.Handler()))
	if extras.mount != nil {
		extras.mount(srv.Mux)
	}
	httpRun := goUntilStopped("http", func(ctx context.Context) error { return srv.Serve(ctx, cfg.ShutdownTimeout) })
	stops.add("http", httpRun.stop)
	httpURL := localURL(srv.Addr())
	if cluster != nil {
		if err := recordServer(cfg, cluster, httpURL, stops, log); err != nil {
			return err
		}
	}

	if extras.afterStart != nil {
		if err := extras.afterStart(ctx, gdb, apiTemplates, httpURL); err != nil {
			return err
		}
	}

	// 5. Run until told to stop or until a component fails.
	var clusterExited <-chan struct{}
	if cluster != nil {
		clusterExited = cluster.Exited()
	}
	select {
	case <-ctx.Done():
		log.Info("serve: shutting down", "reason", context.Cause(ctx).Error())
		return nil
	case <-httpRun.done:
		return fmt.Errorf("serving HTTP: %w", httpRun.err)
	case <-clusterExited:
		return fmt.Errorf("the private PostgreSQL cluster exited unexpectedly: %v", cluster.ExitErr())
	}
}

// startTracing sets up tracing from the environment (internal/tracing): off unless configured.
func startTracing(ctx context.Context, log *slog.Logger) (*tracing.Provider, error) {
	tcfg, err := tracing.ConfigFromEnv(os.Getenv)
	if err != nil {
		return nil, err
	}
	return tracing.Start(ctx, tcfg, log)
}

// startPostgres starts the private cluster in <data dir>/postgres. With the default data dir,
// a root server whose cluster user cannot reach it (a private /root) uses
// pgembed.FallbackDataDir() instead; an explicitly chosen data dir is never moved.
func startPostgres(ctx context.Context, cfg config.Config, log *slog.Logger) (*pgembed.Cluster, error) {
	opts := pgembed.Options{
		DataDir: filepath.Join(cfg.DataDir, "postgres"),
		BinDir:  cfg.PostgresBinDir,
		Logger:  log,
	}
	if cfg.DataDir == config.DefaultDataDir() {
		opts.FallbackDataDir = pgembed.FallbackDataDir()
	}
	cluster, err := pgembed.Start(ctx, opts)
	if errors.Is(err, pgembed.ErrInUse) {
		return nil, fmt.Errorf("starting the private PostgreSQL cluster: %w; `tasker status` shows that server, and "+
			"commands such as `tasker run-task` use it as it is", err)
	}
	if err != nil {
		return nil, fmt.Errorf("starting the private PostgreSQL cluster: %w", err)
	}
	log.Info("serve: using the private PostgreSQL cluster", "url", cluster.URL(), "data_dir", cluster.DataDir())
	return cluster, nil
}

// localURL is the base URL at which this machine reaches an HTTP server listening on addr:
// an unspecified address (0.0.0.0, ::) is reached on loopback.
func localURL(addr string) string {
	if host, port, err := net.SplitHostPort(addr); err == nil {
		if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
			addr = net.JoinHostPort("127.0.0.1", port)
		}
	}
	return "http://" + addr
}

// recordServer writes where this server and its private cluster are into the data folder
// (internal/runstate), for the commands run beside it, and registers its removal as the first
// stop step.
func recordServer(cfg config.Config, cluster *pgembed.Cluster, httpURL string, stops *shutdown, log *slog.Logger) error {
	dataDir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return fmt.Errorf("resolving the data folder %s: %w", cfg.DataDir, err)
	}
	st := runstate.State{DataDir: dataDir, HTTPURL: httpURL, DatabaseURL: cluster.URL(),
		PostgresDataDir: cluster.DataDir(), ServerPID: os.Getpid(), PostgresPID: cluster.PID(), StartedAt: time.Now().UTC()}
	if err := runstate.Write(st); err != nil {
		return err
	}
	stops.add("server record", func(context.Context) error { return runstate.Remove(dataDir, st.ServerPID) })
	log.Info("serve: ready; commands such as `tasker run-task` and `tasker status` find this server through its record",
		"record", runstate.Path(dataDir), "http", httpURL)
	return nil
}

// shutdown is the ordered list of stop steps of a running service.
type shutdown struct {
	log   *slog.Logger
	steps []stopStep
}

type stopStep struct {
	name string
	stop func(ctx context.Context) error
}

// add registers the stop step of a component that has just started. Steps run in reverse order
// of registration.
func (s *shutdown) add(name string, stop func(ctx context.Context) error) {
	s.steps = append(s.steps, stopStep{name: name, stop: stop})
}

// run runs every step, last registered first, under one deadline, and returns every failure.
// A step that fails does not prevent the next ones.
func (s *shutdown) run(timeout time.Duration) error {
	if len(s.steps) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	began := time.Now()
	var errs []error
	for i := len(s.steps) - 1; i >= 0; i-- {
		step := s.steps[i]
		t := time.Now()
		if err := step.stop(ctx); err != nil {
			s.log.Error("serve: stop failed", "step", step.name, "took", time.Since(t), "err", err)
			errs = append(errs, fmt.Errorf("stopping %s: %w", step.name, err))
			continue
		}
		s.log.Info("serve: stopped", "step", step.name, "took", time.Since(t))
	}
	s.steps = nil
	s.log.Info("serve: shutdown complete", "took", time.Since(began), "failures", len(errs))
	return errors.Join(errs...)
}

// running is a component that runs in its own goroutine until its context is cancelled.
type running struct {
	name   string
	cancel context.CancelFunc
	done   chan struct{}
	err    error // written before done is closed
}

// goUntilStopped runs fn in a goroutine with a context that stop cancels.
func goUntilStopped(name string, fn func(ctx context.Context) error) *running {
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{name: name, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		r.err = fn(ctx)
	}()
	return r
}

// stop cancels the component's context and waits until fn has returned or ctx ends. A
// component that had already returned is not reported again: its failure was reported when it
// happened.
func (r *running) stop(ctx context.Context) error {
	select {
	case <-r.done:
		return nil
	default:
	}
	r.cancel()
	select {
	case <-r.done:
		return r.err
	case <-ctx.Done():
		return fmt.Errorf("waiting for %s to stop: %w", r.name, ctx.Err())
	}
}
