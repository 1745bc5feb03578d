// Package config is the one place a tasker process reads its environment: Read takes every
// variable the product knows into one Config, typed and checked, before any command starts;
// the command's flags then override some fields, and Finish checks the result and settles the
// defaults that depend on the flags. Packages receive the typed values (refresh.Config,
// auth.Limits, …) and never read the environment themselves. Every setting has a
// zero-configuration default.
//
// What is left to libraries: the OpenTelemetry SDK reads its own OTEL_* variables (service
// name, sampler, exporter details), and the private PostgreSQL cluster (internal/pgembed)
// inherits the process's environment and searches PATH for its binaries.
package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/taskerhq/tasker/graph/server"
	"github.com/taskerhq/tasker/internal/auth"
	"github.com/taskerhq/tasker/internal/orchestration"
	"github.com/taskerhq/tasker/internal/refresh"
	"github.com/taskerhq/tasker/internal/retention"
	"github.com/taskerhq/tasker/internal/tracing"
)

// Config is the whole configuration of a tasker process.
type Config struct {
	// DatabaseURL is the PostgreSQL to use (DATABASE_URL). Empty means: the private cluster
	// (tasker serve starts one; the other commands use the running server's).
	DatabaseURL string
	// ReplicaURLs are streaming replicas of DatabaseURL (DATABASE_REPLICA_URLS, comma-separated)
	// that serve the GraphQL API's queries; empty means every read goes to DatabaseURL.
	ReplicaURLs string
	// DataDir holds tasker's local state (TASKER_DATA_DIR, default DefaultDataDir); the
	// embedded cluster lives in DataDir/postgres.
	DataDir string
	// DefaultDataDir is where DataDir points when nothing sets it: $XDG_DATA_HOME/tasker, else
	// ~/.local/share/tasker, else ./.tasker-data.
	DefaultDataDir string
	// PostgresBinDir holds initdb and postgres for the embedded cluster
	// (TASKER_POSTGRES_BIN_DIR); empty finds an installation on PATH, through pg_config or under
	// /usr/lib/postgresql/*/bin.
	PostgresBinDir string
	// Listen is the HTTP listen address, from PORT (default 8080) and TASKER_HOST (default
	// 127.0.0.1).
	Listen string
	// ShutdownTimeout bounds an orderly shutdown (TASKER_SHUTDOWN_TIMEOUT, default 30s).
	ShutdownTimeout time.Duration
	// TemplatesDir is a folder of YAML task templates (TASKER_TEMPLATES_DIR); empty uses the
	// templates shipped in the binary.
	TemplatesDir string
	// User is the login of the person running the command (USER): the default initiator of
	// the tasks the command line creates.
	User string
	// WorkerMetricsListen is where `tasker worker` serves /metrics, /healthz and /readyz
	// (TASKER_WORKER_METRICS_LISTEN); empty serves nothing.
	WorkerMetricsListen string
	// WorkerPprof makes `tasker worker` also serve the Go runtime's profiles (net/http/pprof)
	// under /debug/pprof/ on WorkerMetricsListen (TASKER_PPROF=on; default off).
	WorkerPprof bool

	// Workers tunes the engine (TASKER_WORKERS, TASKER_PREFETCH, TASKER_SYNC_COMMIT,
	// TASKER_CLAIM_BESIDE).
	Workers orchestration.Config
	// NoWorkers is TASKER_WORKERS=0: `tasker serve` runs no workers (an API-only process).
	NoWorkers bool
	// Engines is how many engines share the process's workers (TASKER_ENGINES, 1 to 16; 0:
	// EnginesFor decides, one). Each engine claims and records on its own, with batches of
	// its share of the workers (see EnginesFor for why one is the default).
	Engines int
	// Auth is TASKER_AUTH as given ("", on or off: Read refuses any other value);
	// auth.DecideMode judges it with the listen address and the database once the flags are
	// known.
	Auth string
	// Limits bound what one request, token or connection may ask (TASKER_MAX_BODY_BYTES,
	// TASKER_RATE_LIMIT, …: auth.LimitsFromEnv).
	Limits auth.Limits
	// RateLimitSet says whether TASKER_RATE_LIMIT is set: an open server rate-limits only then.
	RateLimitSet bool
	// API tunes the GraphQL endpoint (TASKER_GRAPHQL_*, TASKER_QUERY_STATS).
	API server.Config
	// QueryStatsSet says whether TASKER_QUERY_STATS is set; unset, Finish turns query stats on
	// exactly when the process runs its private cluster.
	QueryStatsSet bool
	// Refresh tunes the read-model refresher (TASKER_REFRESH_*).
	Refresh refresh.Config
	// Retention says which finished tasks are deleted, and when (TASKER_RETENTION*).
	Retention retention.Config
	// Tracing says whether and how spans are exported (TASKER_TRACING, OTEL_*).
	Tracing tracing.Config
	// GCPercent is the garbage collector's target that Main sets before a command starts:
	// DefaultGCPercent when GOGC is unset, 0 (leave the runtime's own, which read GOGC) when
	// it is set.
	GCPercent int
}

// DefaultGCPercent is the collector's target of a tasker process when GOGC is unset. A
// request allocates mostly short-lived objects (GraphQL field contexts, rows) over a live heap
// of a few tens of megabytes, so collecting at 5x the live heap instead of 2x costs tens of
// megabytes of memory and saves about a sixth of the CPU of a small query.
const DefaultGCPercent = 400

// FromEnv reads the configuration from the process's environment: Read(os.Getenv).
func FromEnv() (Config, error) { return Read(os.Getenv) }

// Read builds a Config from the variables getenv returns ("" for unset). A value that does not
// parse is an error naming the variable; nothing else is read later.
func Read(getenv func(string) string) (Config, error) {
	cfg := Config{
		DatabaseURL:         getenv("DATABASE_URL"),
		ReplicaURLs:         getenv("DATABASE_REPLICA_URLS"),
		DataDir:             getenv("TASKER_DATA_DIR"),
		DefaultDataDir:      defaultDataDir(getenv("XDG_DATA_HOME")),
		PostgresBinDir:      getenv("TASKER_POSTGRES_BIN_DIR"),
		ShutdownTimeout:     30 * time.Second,
		TemplatesDir:        getenv("TASKER_TEMPLATES_DIR"),
		User:                getenv("USER"),
		WorkerMetricsListen: getenv("TASKER_WORKER_METRICS_LISTEN"),
		Auth:                getenv("TASKER_AUTH"),
		RateLimitSet:        getenv("TASKER_RATE_LIMIT") != "",
		QueryStatsSet:       getenv("TASKER_QUERY_STATS") != "",
	}
	if getenv("GOGC") == "" {
		cfg.GCPercent = DefaultGCPercent
	}
	if cfg.DataDir == "" {
		cfg.DataDir = cfg.DefaultDataDir
	}
	port := or(getenv("PORT"), "8080")
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return cfg, fmt.Errorf("PORT=%q is not a port number", port)
	}
	cfg.Listen = or(getenv("TASKER_HOST"), "127.0.0.1") + ":" + port
	if v := getenv("TASKER_SHUTDOWN_TIMEOUT"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return cfg, fmt.Errorf("TASKER_SHUTDOWN_TIMEOUT=%q is not a positive duration (e.g. 30s)", v)
		}
		cfg.ShutdownTimeout = d
	}
	if _, err := auth.DecideMode(auth.Setup{Env: cfg.Auth}); err != nil { // a value it knows, judged later
		return cfg, err
	}
	var err error
	if cfg.WorkerPprof, err = onOff(getenv, "TASKER_PPROF"); err != nil {
		return cfg, err
	}
	cfg.NoWorkers = getenv("TASKER_WORKERS") == "0"
	workersEnv := getenv
	if cfg.NoWorkers { // 0 is a choice of serve's, not a worker count
		workersEnv = func(k string) string {
			if k == "TASKER_WORKERS" {
				return ""
			}
			return getenv(k)
		}
	}
	if cfg.Workers, err = orchestration.ConfigFromEnv(workersEnv); err != nil {
		return cfg, err
	}
	if v := getenv("TASKER_ENGINES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxEngines {
			return cfg, fmt.Errorf("TASKER_ENGINES=%q is not an engine count between 1 and %d", v, MaxEngines)
		}
		cfg.Engines = n
	}
	if cfg.Limits, err = auth.LimitsFromEnv(getenv); err != nil {
		return cfg, err
	}
	if cfg.API, err = server.ConfigFromEnv(getenv); err != nil {
		return cfg, err
	}
	if cfg.Refresh, err = refresh.ConfigFromEnv(getenv); err != nil {
		return cfg, err
	}
	if cfg.Retention, err = retention.ConfigFromEnv(getenv); err != nil {
		return cfg, err
	}
	if cfg.Tracing, err = tracing.ConfigFromEnv(getenv); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// Finish checks the configuration once the command's flags are applied and settles what
// depends on them: query stats default to on with the private cluster.
func (c *Config) Finish() error {
	if c.ShutdownTimeout <= 0 {
		return fmt.Errorf("-shutdown-timeout %s is not a positive duration", c.ShutdownTimeout)
	}
	if c.Workers.Workers < 0 {
		return fmt.Errorf("-workers %d is negative", c.Workers.Workers)
	}
	if !c.QueryStatsSet {
		c.API.QueryStats = c.Embedded()
	}
	return nil
}

// MaxEngines bounds TASKER_ENGINES.
const MaxEngines = 16

// EnginesFor is the count of engines that run workers workers in one process: the configured
// count, capped at workers so that every engine has a worker, else one.
//
// One by default. A lone engine already keeps two database backends busy (a recording and
// the claim beside it: see orchestration.Config.Claims), and a second engine per process
// halves every engine's batches, whose fixed cost then doubles: in make bench-river's run of
// 2026-12-02 01:58, one process of two engines drained 10,000 one-step tasks at 3,113
// steps/s with 32 workers (one engine: 4,128) and 6,031 with 100 (6,441), and 50,000
// five-step steps at 3,305 (4,465), spending 21-54 % more CPU a step.
func (c Config) EnginesFor(workers int) int {
	if c.Engines > 0 {
		return max(1, min(c.Engines, workers))
	}
	return 1
}

// Embedded reports whether the process uses a private cluster rather than DatabaseURL.
func (c Config) Embedded() bool { return c.DatabaseURL == "" }

// defaultDataDir is $XDG_DATA_HOME/tasker, else ~/.local/share/tasker, else ./.tasker-data.
func defaultDataDir(xdgDataHome string) string {
	if xdgDataHome != "" {
		return filepath.Join(xdgDataHome, "tasker")
	}
	if home, err := os.UserHomeDir(); err == nil && home != "" {
		return filepath.Join(home, ".local", "share", "tasker")
	}
	return ".tasker-data"
}

// onOff reads a variable that is on or off (unset: off).
func onOff(getenv func(string) string, key string) (bool, error) {
	v := getenv(key)
	if v != "" && v != "on" && v != "off" {
		return false, fmt.Errorf("%s=%q is neither on nor off", key, v)
	}
	return v == "on", nil
}

func or(v, def string) string {
	if v != "" {
		return v
	}
	return def
}
