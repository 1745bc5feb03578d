// Package config reads the service's configuration from environment variables, with flags
// able to override them. Every setting has a zero-configuration default.
package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// Config is the whole configuration of a tasker process.
type Config struct {
	// DatabaseURL is the PostgreSQL to use. Empty means: start a private embedded cluster.
	DatabaseURL string
	// ReplicaURLs are streaming replicas of DatabaseURL (DATABASE_REPLICA_URLS, comma-separated)
	// that serve the GraphQL API's queries; empty means every read goes to DatabaseURL.
	ReplicaURLs string
	// DataDir holds tasker's local state (TASKER_DATA_DIR, default DefaultDataDir()); the
	// embedded cluster lives in DataDir/postgres.
	DataDir string
	// PostgresBinDir holds initdb and postgres for the embedded cluster
	// (TASKER_POSTGRES_BIN_DIR); empty finds an installation on PATH, through pg_config or under
	// /usr/lib/postgresql/*/bin.
	PostgresBinDir string
	// Listen is the HTTP listen address, from PORT (default 8080) and TASKER_HOST.
	Listen string
	// ShutdownTimeout bounds an orderly shutdown (TASKER_SHUTDOWN_TIMEOUT, default 30s).
	ShutdownTimeout time.Duration
}

// FromEnv builds a Config from the environment.
func FromEnv() (Config, error) {
	cfg := Config{
		DatabaseURL:     os.Getenv("DATABASE_URL"),
		ReplicaURLs:     os.Getenv("DATABASE_REPLICA_URLS"),
		DataDir:         os.Getenv("TASKER_DATA_DIR"),
		PostgresBinDir:  os.Getenv("TASKER_POSTGRES_BIN_DIR"),
		ShutdownTimeout: 30 * time.Second,
	}
	if cfg.DataDir == "" {
		cfg.DataDir = DefaultDataDir()
	}
	port := envOr("PORT", "8080")
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return cfg, fmt.Errorf("PORT=%q is not a port number", port)
	}
	cfg.Listen = envOr("TASKER_HOST", "127.0.0.1") + ":" + port
	if v := os.Getenv("TASKER_SHUTDOWN_TIMEOUT"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return cfg, fmt.Errorf("TASKER_SHUTDOWN_TIMEOUT=%q is not a positive duration (e.g. 30s)", v)
		}
		cfg.ShutdownTimeout = d
	}
	return cfg, nil
}

// DefaultDataDir is $XDG_DATA_HOME/tasker, else ~/.local/share/tasker, else ./.tasker-data.
func DefaultDataDir() string {
	if x := os.Getenv("XDG_DATA_HOME"); x != "" {
		return filepath.Join(x, "tasker")
	}
	if home, err := os.UserHomeDir(); err == nil && home != "" {
		return filepath.Join(home, ".local", "share", "tasker")
	}
	return ".tasker-data"
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
