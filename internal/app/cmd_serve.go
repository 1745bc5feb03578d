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
	"github.com/taskerhq/tasker/internal/pgembed"
	"github.com/taskerhq/tasker/internal/querystats"
	"github.com/taskerhq/tasker/internal/refresh"
	"github.com/taskerhq/tasker/internal/replica"
	"github.com/taskerhq/tasker/internal/retention"
	"github.com/taskerhq/tasker/internal/runstate"
	"github.com/taskerhq/tasker/internal/template"
	"github.com/taskerhq/tasker/internal/tracing"
)

// runServe starts the service in order, waits for a signal or the failure of a part, and
// stops it in reverse order (lifecycle):
//
//  1. tracing, first so that it stops last, flushing every span
//  2. PostgreSQL: -database-url (DATABASE_URL), or a private cluster in <data dir>/postgres
//     (internal/pgembed), whose unexpected exit is a failure of the process
//  3. the connection pool, then migrations
//  4. the events hub (the process's one LISTEN connection), the read-model refresher
//     (internal/refresh) and retention (internal/retention)
//  5. the workers (internal/orchestration), unless TASKER_WORKERS=0, after their own pool of
//     orchestration.PoolConns connections (closed after them); stopped after HTTP, draining
//     running steps first
//  6. the templates, registered so that workers and dashboards know them before the first task
//  7. the HTTP server (/healthz, /readyz, /metrics and the API); with the private cluster, the
//     record of where the server and its database are, in <data dir>/server.json
//     (internal/runstate), which the other commands read to find the database; it is removed
//     first at shutdown
//
// Everything that can be refused (flags, TASKER_AUTH, limits, templates) is checked before
// anything starts.
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

// serve is runServe with the extras of the command that runs it. Its log lines are prefixed
// "serve:" whichever command runs it.
func serve(ctx context.Context, cfg config.Config, args []string, out io.Writer, log *slog.Logger, extras serveExtras) (err error) {
	fs := newFlagSet(extras.command, "[flags]", extras.about, out)
	databaseFlags(fs, &cfg, startsCluster)
	fs.StringVar(&cfg.ReplicaURLs, "database-replica-urls", cfg.ReplicaURLs, "comma-separated streaming replicas of the database that serve GraphQL queries (env DATABASE_REPLICA_URLS)")
	fs.StringVar(&cfg.PostgresBinDir, "postgres-bin-dir", cfg.PostgresBinDir, "where initdb and postgres are for the private cluster; empty finds them (env TASKER_POSTGRES_BIN_DIR)")
	fs.StringVar(&cfg.Listen, "listen", cfg.Listen, "HTTP listen address (env TASKER_HOST and PORT)")
	shutdownFlag(fs, &cfg, "deadline for an orderly shutdown")
	if err := parseCommand(fs, args, &cfg); err != nil {
		return err
	}
	if len(database.ReplicaURLs(cfg.ReplicaURLs)) > 0 && cfg.Embedded() {
		return usageError("-database-replica-urls (DATABASE_REPLICA_URLS) needs -database-url (DATABASE_URL): " +
			"the replicas stream from that primary, not from a private cluster")
	}
	authDecision, err := decideAuth(cfg, log)
	if err != nil {
		return err
	}
	apiTemplates, err := loadTemplates(cfg.TemplatesDir) // for createTask
	if err != nil {
		return fmt.Errorf("loading task templates: %w", err)
	}

	lc := newLifecycle("serve", cfg.ShutdownTimeout, log)
	defer func() { err = errors.Join(err, lc.stop()) }()
	if err := startTracing(ctx, lc, cfg); err != nil {
		return err
	}

	dbURL := cfg.DatabaseURL
	var cluster *pgembed.Cluster
	if cfg.Embedded() {
		if err := lc.start(ctx, "postgres", func(ctx context.Context) (err error) {
			cluster, err = startPostgres(ctx, cfg, log)
			return err
		}, func(ctx context.Context) error { return cluster.Stop(ctx) }); err != nil {
			return err
		}
		lc.watch("postgres", cluster.Exited(), func() error {
			return fmt.Errorf("the private PostgreSQL cluster exited unexpectedly: %v", cluster.ExitErr())
		})
		dbURL = cluster.URL()
	}

	// querystats.Tracer counts the statements of each GraphQL response (graph/server). With
	// replicas, GraphQL queries read from them and everything else stays on the primary
	// (internal/replica).
	replicaURLs := database.ReplicaURLs(cfg.ReplicaURLs)
	var gdb *gorm.DB
	if err := lc.start(ctx, "database pool", func(ctx context.Context) (err error) {
		gdb, err = database.OpenWithReplicas(ctx, dbURL, replicaURLs, database.Options{Tracer: querystats.Tracer{}},
			replica.Options{Log: log})
		return err
	}, func(context.Context) error { return database.Close(gdb) }); err != nil {
		return err
	}
	if len(replicaURLs) > 0 {
		log.Info("serve: GraphQL queries read from replicas", "replicas", len(replicaURLs))
	}
	if err := startMigrations(ctx, lc, gdb, log); err != nil {
		return err
	}

	// The materialized read models: the refresher refreshes on its cron schedules and,
	// between ticks, soon after the hub reports writes. Retention deletes finished tasks past
	// their namespace's period on its own schedule.
	hub := startEvents(lc, dbURL, log)
	refresher, err := refresh.New(gdb, hub, cfg.Refresh, log)
	if err != nil {
		return err
	}
	if err := lc.startService(ctx, "read-model refresher", refresher); err != nil {
		return err
	}
	retainer, err := retention.New(gdb, cfg.Retention, log)
	if err != nil {
		return err
	}
	if err := lc.startService(ctx, "retention", retainer); err != nil {
		return err
	}

	// API access control and metrics (cmd_serve_security.go); the workers report to the metrics.
	sec, err := newAPISecurity(ctx, authDecision, apiLimits(authDecision.Mode, cfg), gdb, hub, log)
	if err != nil {
		return err
	}
	if router := database.Router(gdb); router != nil {
		sec.metrics.Registry().MustRegister(router.Collector()) // statements per server, replica health
	}
	if cfg.NoWorkers {
		log.Info("serve: no workers (TASKER_WORKERS=0): this process serves the API only")
	} else {
		cfg.Workers.Observer = sec.metrics
		if err := startWorkers(ctx, lc, gdb, dbURL, querystats.Tracer{}, hub, cfg); err != nil {
			return err
		}
	}

	// Every loaded template is registered before the API serves; a changed definition under a
	// registered version refuses to start.
	if err := lc.start(ctx, "templates", func(ctx context.Context) error {
		if err := apiTemplates.RegisterAll(ctx, gdb); err != nil {
			return fmt.Errorf("registering task templates: %w", err)
		}
		log.Info("serve: templates registered", "count", len(apiTemplates.Templates()))
		return nil
	}, nil); err != nil {
		return err
	}

	// HTTP, with the GraphQL API (graph/server) at /query and its playground at /.
	srv, err := httpserver.New(cfg.Listen, gdb, log)
	if err != nil {
		return err
	}
	server.New(cfg.API, server.Deps{DB: gdb, Hub: hub, Log: log, Templates: apiTemplates,
		Guard: sec.guard, Metrics: sec.metrics, Refresher: refresher}).Mount(srv.Mux)
	srv.Mux.Handle("GET /metrics", sec.metrics.Middleware("metrics", sec.metrics.Handler()))
	if extras.mount != nil {
		extras.mount(srv.Mux)
	}
	// The record is written before the server answers: once /healthz answers, commands run
	// beside this server find it (the listener is bound already, so early requests queue).
	httpURL := localURL(srv.Addr())
	var removeRecord func(context.Context) error
	if cluster != nil {
		if removeRecord, err = recordServer(cfg, cluster, httpURL, log); err != nil {
			return err
		}
	}
	lc.run("http", func(ctx context.Context) error { return srv.Serve(ctx, cfg.ShutdownTimeout) })
	if removeRecord != nil {
		lc.add("server record", removeRecord) // stops first: no command finds a stopping server
	}
	if extras.afterStart != nil {
		if err := extras.afterStart(ctx, gdb, apiTemplates, httpURL); err != nil {
			return err
		}
	}
	return lc.wait(ctx)
}

// startTracing starts the tracing provider (internal/tracing; off unless configured) as the
// first part of lc, so that it stops last, flushing the spans of everything else.
func startTracing(ctx context.Context, lc *lifecycle, cfg config.Config) error {
	var traces *tracing.Provider
	return lc.start(ctx, "tracing", func(ctx context.Context) (err error) {
		traces, err = tracing.Start(ctx, cfg.Tracing, lc.log)
		return err
	}, func(ctx context.Context) error { return traces.Shutdown(ctx) })
}

// startMigrations applies the pending migrations (idempotent, serialised across processes).
func startMigrations(ctx context.Context, lc *lifecycle, gdb *gorm.DB, log *slog.Logger) error {
	return lc.start(ctx, "migrations", func(ctx context.Context) error {
		applied, err := migrate.Up(ctx, database.SQL(gdb))
		if err == nil && len(applied) > 0 {
			log.Info(lc.command+": migrated", "applied", len(applied))
		}
		return err
	}, nil)
}

// startEvents runs the process's events hub (its one LISTEN connection) as a part of lc.
func startEvents(lc *lifecycle, dbURL string, log *slog.Logger) *events.Hub {
	hub := events.NewHub(dbURL, log)
	lc.run("events", hub.Run)
	return hub
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
	if cfg.DataDir == cfg.DefaultDataDir {
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
// (internal/runstate), for the commands run beside it, and returns the record's removal.
func recordServer(cfg config.Config, cluster *pgembed.Cluster, httpURL string, log *slog.Logger) (func(context.Context) error, error) {
	dataDir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("resolving the data folder %s: %w", cfg.DataDir, err)
	}
	st := runstate.State{DataDir: dataDir, HTTPURL: httpURL, DatabaseURL: cluster.URL(),
		PostgresDataDir: cluster.DataDir(), ServerPID: os.Getpid(), PostgresPID: cluster.PID(), StartedAt: time.Now().UTC()}
	if err := runstate.Write(st); err != nil {
		return nil, err
	}
	log.Info("serve: ready; commands such as `tasker run-task` and `tasker status` find this server through its record",
		"record", runstate.Path(dataDir), "http", httpURL)
	return func(context.Context) error { return runstate.Remove(dataDir, st.ServerPID) }, nil
}
