package config

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestFromEnvDefaults(t *testing.T) {
	for _, k := range []string{"DATABASE_URL", "TASKER_DATA_DIR", "TASKER_POSTGRES_BIN_DIR", "PORT", "TASKER_HOST", "TASKER_SHUTDOWN_TIMEOUT"} {
		t.Setenv(k, "")
	}
	t.Setenv("XDG_DATA_HOME", "/xdg")
	cfg, err := FromEnv()
	if err != nil {
		t.Fatal(err)
	}
	want := Config{DataDir: filepath.Join("/xdg", "tasker"), Listen: "127.0.0.1:8080", ShutdownTimeout: 30 * time.Second}
	if cfg != want {
		t.Fatalf("FromEnv() = %+v, want %+v", cfg, want)
	}
	if DefaultDataDir() != cfg.DataDir {
		t.Fatalf("DefaultDataDir() = %q, want %q", DefaultDataDir(), cfg.DataDir)
	}
}

func TestFromEnvOverrides(t *testing.T) {
	t.Setenv("DATABASE_URL", "postgres://db/x")
	t.Setenv("TASKER_DATA_DIR", "/data")
	t.Setenv("TASKER_POSTGRES_BIN_DIR", "/opt/pg/bin")
	t.Setenv("PORT", "0")
	t.Setenv("TASKER_HOST", "0.0.0.0")
	t.Setenv("TASKER_SHUTDOWN_TIMEOUT", "5s")
	cfg, err := FromEnv()
	if err != nil {
		t.Fatal(err)
	}
	want := Config{DatabaseURL: "postgres://db/x", DataDir: "/data", PostgresBinDir: "/opt/pg/bin",
		Listen: "0.0.0.0:0", ShutdownTimeout: 5 * time.Second}
	if cfg != want {
		t.Fatalf("FromEnv() = %+v, want %+v", cfg, want)
	}
}

func TestFromEnvRejectsBadValues(t *testing.T) {
	for _, tc := range []struct{ key, value, want string }{
		{"PORT", "http", `PORT="http" is not a port number`},
		{"PORT", "70000", `PORT="70000" is not a port number`},
		{"TASKER_SHUTDOWN_TIMEOUT", "soon", `TASKER_SHUTDOWN_TIMEOUT="soon" is not a positive duration`},
		{"TASKER_SHUTDOWN_TIMEOUT", "-1s", `TASKER_SHUTDOWN_TIMEOUT="-1s" is not a positive duration`},
	} {
		t.Run(tc.key+"="+tc.value, func(t *testing.T) {
			t.Setenv("PORT", "")
			t.Setenv("TASKER_SHUTDOWN_TIMEOUT", "")
			t.Setenv(tc.key, tc.value)
			_, err := FromEnv()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %s", err, tc.want)
			}
		})
	}
}
