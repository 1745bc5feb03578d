package orchestration_test

import (
	"os"
	"strings"
	"testing"

	"github.com/taskerhq/tasker/internal/orchestration"
	"github.com/taskerhq/tasker/internal/testkit/dbtest"
)

// TestConfigFromEnvReadsWorkersPrefetchSyncCommitAndClaimBeside sets environment variables, so
// it does not run in parallel with other tests.
func TestConfigFromEnvReadsWorkersPrefetchSyncCommitAndClaimBeside(t *testing.T) {
	for _, c := range []struct {
		workers, prefetch, sync, beside string
		want                            orchestration.Config
		err                             string
	}{
		{want: orchestration.Config{}},
		{workers: "8", sync: "on", want: orchestration.Config{Workers: 8}},
		{sync: "off", want: orchestration.Config{AsyncCommit: true}},
		{beside: "auto", want: orchestration.Config{Claims: orchestration.ClaimsAuto}},
		{beside: "on", want: orchestration.Config{Claims: orchestration.ClaimsBeside}},
		{beside: "off", want: orchestration.Config{Claims: orchestration.ClaimsInRecording}},
		{sync: "maybe", err: `TASKER_SYNC_COMMIT="maybe"`},
		{beside: "sometimes", err: `TASKER_CLAIM_BESIDE="sometimes" is none of auto, on and off`},
		{workers: "0", err: `TASKER_WORKERS="0"`},
		{prefetch: "64", want: orchestration.Config{Prefetch: 64}},
		{prefetch: "0", want: orchestration.Config{Prefetch: -1}},
		{prefetch: "-1", err: `TASKER_PREFETCH="-1" is not a step count between 0 and 4096`},
		{prefetch: "lots", err: `TASKER_PREFETCH="lots"`},
	} {
		t.Setenv("TASKER_PREFETCH", c.prefetch)
		t.Setenv("TASKER_WORKERS", c.workers)
		t.Setenv("TASKER_SYNC_COMMIT", c.sync)
		t.Setenv("TASKER_CLAIM_BESIDE", c.beside)
		cfg, err := orchestration.ConfigFromEnv(os.Getenv)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("workers %q prefetch %q sync %q beside %q: error %v, want one naming %s", c.workers, c.prefetch, c.sync, c.beside, err, c.err)
			}
			continue
		}
		if err != nil || cfg.Workers != c.want.Workers || cfg.AsyncCommit != c.want.AsyncCommit ||
			cfg.Claims != c.want.Claims || cfg.Prefetch != c.want.Prefetch {
			t.Errorf("workers %q prefetch %q sync %q beside %q: %+v, %v; want %+v", c.workers, c.prefetch, c.sync, c.beside, cfg, err, c.want)
		}
	}
}

func TestDefaultsAllowTensOfStepsInFlight(t *testing.T) {
	t.Parallel()
	e, err := orchestration.New(orchestration.NewService(dbtest.New(t), nil), nil, orchestration.NewConfiguredHandlers(nil), orchestration.Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg := e.Config(); cfg.Workers != 32 || cfg.Prefetch != 128 || cfg.ClaimBatch != 160 || cfg.AsyncCommit {
		t.Fatalf("defaults %+v: want 32 workers, up to 128 steps prefetched, claims of up to 160 and durable commits", cfg)
	}
}
