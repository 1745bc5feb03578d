package orchestration_test

import (
	"os"
	"strings"
	"testing"

	"github.com/taskerhq/tasker/internal/orchestration"
	"github.com/taskerhq/tasker/internal/testkit/dbtest"
)

// TestConfigFromEnvReadsWorkersSyncCommitAndClaimBeside sets environment variables, so it
// does not run in parallel with other tests.
func TestConfigFromEnvReadsWorkersSyncCommitAndClaimBeside(t *testing.T) {
	for _, c := range []struct {
		workers, sync, beside string
		want                  orchestration.Config
		err                   string
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
	} {
		t.Setenv("TASKER_WORKERS", c.workers)
		t.Setenv("TASKER_SYNC_COMMIT", c.sync)
		t.Setenv("TASKER_CLAIM_BESIDE", c.beside)
		cfg, err := orchestration.ConfigFromEnv(os.Getenv)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("workers %q sync %q beside %q: error %v, want one naming %s", c.workers, c.sync, c.beside, err, c.err)
			}
			continue
		}
		if err != nil || cfg.Workers != c.want.Workers || cfg.AsyncCommit != c.want.AsyncCommit ||
			cfg.Claims != c.want.Claims {
			t.Errorf("workers %q sync %q beside %q: %+v, %v; want %+v", c.workers, c.sync, c.beside, cfg, err, c.want)
		}
	}
}

func TestDefaultsAllowTensOfStepsInFlight(t *testing.T) {
	t.Parallel()
	e, err := orchestration.New(orchestration.NewService(dbtest.New(t), nil), nil, orchestration.NewConfiguredHandlers(nil), orchestration.Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg := e.Config(); cfg.Workers != 32 || cfg.ClaimBatch != 32 || cfg.AsyncCommit {
		t.Fatalf("defaults %+v: want 32 workers, claims of up to 32 and durable commits", cfg)
	}
}
