package config

import (
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/taskerhq/tasker/internal/orchestration"
)

// env returns a getenv over vars.
func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

func TestReadDefaults(t *testing.T) {
	t.Parallel()
	cfg, err := Read(env(map[string]string{"XDG_DATA_HOME": "/xdg"}))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Finish(); err != nil {
		t.Fatal(err)
	}
	want := filepath.Join("/xdg", "tasker")
	if cfg.DataDir != want || cfg.DefaultDataDir != want || cfg.DatabaseURL != "" || cfg.Listen != "127.0.0.1:8080" ||
		cfg.ShutdownTimeout != 30*time.Second || cfg.NoWorkers || cfg.Workers.Workers != 0 || cfg.Workers.AsyncCommit {
		t.Fatalf("Read() = %+v", cfg)
	}
	if !cfg.Embedded() || !cfg.API.QueryStats {
		t.Errorf("without DATABASE_URL: embedded %v, query stats %v; want both on", cfg.Embedded(), cfg.API.QueryStats)
	}
	if cfg.Limits.RatePerSecond != 50 || cfg.RateLimitSet || cfg.Tracing.Enabled || !cfg.Retention.Policy.Forever() {
		t.Errorf("sections are not at their defaults: %+v", cfg)
	}
}

func TestReadOverrides(t *testing.T) {
	t.Parallel()
	cfg, err := Read(env(map[string]string{
		"DATABASE_URL":                 "postgres://db/x",
		"TASKER_DATA_DIR":              "/data",
		"TASKER_POSTGRES_BIN_DIR":      "/opt/pg/bin",
		"PORT":                         "0",
		"TASKER_HOST":                  "0.0.0.0",
		"TASKER_SHUTDOWN_TIMEOUT":      "5s",
		"TASKER_TEMPLATES_DIR":         "/tpl",
		"USER":                         "ada",
		"TASKER_WORKER_METRICS_LISTEN": "127.0.0.1:9091",
		"TASKER_WORKERS":               "8",
		"TASKER_SYNC_COMMIT":           "off",
		"TASKER_CLAIM_BESIDE":          "off",
		"TASKER_PREFETCH":              "16",
		"TASKER_AUTH":                  "on",
		"TASKER_RATE_LIMIT":            "5",
		"TASKER_GRAPHQL_MAX_DEPTH":     "9",
		"TASKER_REFRESH_DEBOUNCE":      "2s",
		"TASKER_RETENTION":             "*=30d",
		"TASKER_RETENTION_DUTY":        "25%",
		"TASKER_TRACING":               "on",
		"TASKER_PPROF":                 "on",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Finish(); err != nil {
		t.Fatal(err)
	}
	if cfg.DatabaseURL != "postgres://db/x" || cfg.DataDir != "/data" || cfg.PostgresBinDir != "/opt/pg/bin" ||
		cfg.Listen != "0.0.0.0:0" || cfg.ShutdownTimeout != 5*time.Second || cfg.TemplatesDir != "/tpl" || cfg.User != "ada" ||
		cfg.WorkerMetricsListen != "127.0.0.1:9091" || !cfg.WorkerPprof || cfg.Auth != "on" {
		t.Errorf("process settings: %+v", cfg)
	}
	if cfg.Workers.Workers != 8 || cfg.Workers.Prefetch != 16 || !cfg.Workers.AsyncCommit || cfg.Workers.Claims != orchestration.ClaimsInRecording || cfg.NoWorkers {
		t.Errorf("workers: %+v, no workers %v", cfg.Workers, cfg.NoWorkers)
	}
	if cfg.Limits.RatePerSecond != 5 || !cfg.RateLimitSet || cfg.API.MaxDepth != 9 || cfg.API.QueryStats ||
		cfg.Refresh.Debounce != 2*time.Second || cfg.Retention.Policy.Forever() || cfg.Retention.Duty != 25 ||
		!cfg.Tracing.Enabled {
		t.Errorf("sections: %+v", cfg)
	}
}

// TASKER_WORKERS=0 is serve's API-only mode, not a worker count; TASKER_QUERY_STATS, once set,
// wins over the private cluster's default.
func TestReadNoWorkersAndQueryStats(t *testing.T) {
	t.Parallel()
	cfg, err := Read(env(map[string]string{"TASKER_WORKERS": "0", "TASKER_QUERY_STATS": "0"}))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Finish(); err != nil {
		t.Fatal(err)
	}
	if !cfg.NoWorkers || cfg.Workers.Workers != 0 || cfg.API.QueryStats {
		t.Fatalf("no workers %v, workers %d, query stats %v", cfg.NoWorkers, cfg.Workers.Workers, cfg.API.QueryStats)
	}
}

// The workers of a process are shared among engines: as configured (never more engines than
// workers), else one engine.
func TestEnginesFor(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ engines, workers, want int }{
		{0, 1, 1}, {0, 32, 1}, {0, 64, 1}, {0, 100, 1}, {0, 1024, 1},
		{2, 100, 2},
		{1, 100, 1}, {4, 100, 4}, {4, 3, 3},
	} {
		cfg, err := Read(env(map[string]string{"TASKER_ENGINES": strconv.Itoa(tc.engines)}))
		if tc.engines == 0 {
			cfg, err = Read(env(nil))
		}
		if err != nil {
			t.Fatal(err)
		}
		if got := cfg.EnginesFor(tc.workers); got != tc.want {
			t.Errorf("TASKER_ENGINES=%d, %d workers: %d engines, want %d", tc.engines, tc.workers, got, tc.want)
		}
	}
}

func TestReadRejectsBadValues(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ key, value, want string }{
		{"PORT", "http", `PORT="http" is not a port number`},
		{"PORT", "70000", `PORT="70000" is not a port number`},
		{"TASKER_SHUTDOWN_TIMEOUT", "soon", `TASKER_SHUTDOWN_TIMEOUT="soon" is not a positive duration`},
		{"TASKER_SHUTDOWN_TIMEOUT", "-1s", `TASKER_SHUTDOWN_TIMEOUT="-1s" is not a positive duration`},
		{"TASKER_WORKERS", "many", `TASKER_WORKERS="many"`},
		{"TASKER_SYNC_COMMIT", "maybe", `TASKER_SYNC_COMMIT="maybe"`},
		{"TASKER_CLAIM_BESIDE", "maybe", `TASKER_CLAIM_BESIDE="maybe"`},
		{"TASKER_PREFETCH", "5000", `TASKER_PREFETCH="5000" is not a step count between 0 and 4096`},
		{"TASKER_ENGINES", "0", `TASKER_ENGINES="0" is not an engine count between 1 and 16`},
		{"TASKER_ENGINES", "17", `TASKER_ENGINES="17"`},
		{"TASKER_RATE_LIMIT", "-3", `TASKER_RATE_LIMIT="-3"`},
		{"TASKER_QUERY_STATS", "often", `TASKER_QUERY_STATS="often"`},
		{"TASKER_GRAPHQL_MAX_COMPLEXITY", "0", `TASKER_GRAPHQL_MAX_COMPLEXITY="0"`},
		{"TASKER_REFRESH_SCHEDULE", "whenever", `TASKER_REFRESH_SCHEDULE="whenever"`},
		{"TASKER_RETENTION_BATCH", "0", `TASKER_RETENTION_BATCH="0"`},
		{"TASKER_RETENTION_DUTY", "0", `TASKER_RETENTION_DUTY="0"`},
		{"TASKER_TRACING", "maybe", `TASKER_TRACING="maybe"`},
		{"TASKER_PPROF", "yes", `TASKER_PPROF="yes"`},
		{"TASKER_AUTH", "sometimes", `TASKER_AUTH="sometimes"`},
	} {
		t.Run(tc.key+"="+tc.value, func(t *testing.T) {
			_, err := Read(env(map[string]string{tc.key: tc.value}))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %s", err, tc.want)
			}
		})
	}
}

func TestFinishRefusesWhatFlagsCanBreak(t *testing.T) {
	t.Parallel()
	cfg, err := Read(env(nil))
	if err != nil {
		t.Fatal(err)
	}
	bad := cfg
	bad.ShutdownTimeout = 0
	if err := bad.Finish(); err == nil || !strings.Contains(err.Error(), "-shutdown-timeout") {
		t.Errorf("zero shutdown timeout: %v", err)
	}
	bad = cfg
	bad.Workers.Workers = -1
	if err := bad.Finish(); err == nil || !strings.Contains(err.Error(), "-workers -1") {
		t.Errorf("negative workers: %v", err)
	}
	withURL := cfg
	withURL.DatabaseURL = "postgres://db/x" // the -database-url flag
	if err := withURL.Finish(); err != nil || withURL.API.QueryStats {
		t.Errorf("with a database URL from the flags: query stats %v (%v), want off", withURL.API.QueryStats, err)
	}
}

func TestReadGCPercentLeavesAGivenGOGCAlone(t *testing.T) {
	t.Parallel()
	for gogc, want := range map[string]int{"": DefaultGCPercent, "100": 0, "off": 0} {
		cfg, err := Read(env(map[string]string{"GOGC": gogc}))
		if err != nil {
			t.Fatal(err)
		}
		if cfg.GCPercent != want {
			t.Errorf("GOGC=%q: GCPercent = %d, want %d", gogc, cfg.GCPercent, want)
		}
	}
}
