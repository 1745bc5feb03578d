package app

import (
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/taskerhq/tasker/internal/testkit/dbtest"
	"github.com/taskerhq/tasker/internal/testkit/wait"
)

// TestServeRunsItsOwnPostgres builds the binary and runs `tasker serve` without DATABASE_URL:
// it must start a private cluster, become healthy and ready, exit 0 on SIGTERM with its cluster
// stopped, start again on the same data, take its cluster down when killed with SIGKILL, and
// exit 1 when its cluster dies under it.
func TestServeRunsItsOwnPostgres(t *testing.T) {
	t.Parallel()
	bin := buildTasker(t)
	dataDir := clusterDataDir(t)

	// First run: a fresh cluster, stopped by SIGTERM.
	s := startServe(t, bin, "-data-dir", dataDir)
	s.waitHealthy(t)
	assertPostgresRunning(t, s)
	s.stop(t, syscall.SIGTERM)
	if processAlive(s.postgresPID) {
		t.Fatalf("postgres pid %d still running after tasker serve exited", s.postgresPID)
	}
	for _, want := range []string{`msg="serve: stopped" step=http`, `msg="serve: stopped" step="database pool"`, `msg="serve: stopped" step=postgres`} {
		if !strings.Contains(s.log.String(), want) {
			t.Errorf("shutdown log lacks %q", want)
		}
	}

	// Second run on the same data: a restart, then SIGKILL of the server.
	s = startServe(t, bin, "-data-dir", dataDir)
	s.waitHealthy(t)
	assertPostgresRunning(t, s)
	if !strings.Contains(s.log.String(), "fresh=false") {
		t.Errorf("second run did not reuse the cluster:\n%s", s.log.String())
	}
	if err := s.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	s.wait(t)
	if !wait.Eventually(15*time.Second, func() bool { return !processAlive(s.postgresPID) }) {
		t.Fatalf("postgres pid %d outlived its killed server", s.postgresPID)
	}
	// The killed server left its record behind; commands see that it names a dead server.
	_, stderr, code := runCLI(t, bin, dataDir, "run-task", "-template", "examples/linear_workflow")
	if want := fmt.Sprintf("pid %d, has exited", s.cmd.Process.Pid); code != 1 || !strings.Contains(stderr, want) {
		t.Errorf("run-task after the server was killed: exit %d, %q; want 1 and %q", code, stderr, want)
	}

	// Third run: the cluster dies under the server, which must shut down and report it.
	s = startServe(t, bin, "-data-dir", dataDir)
	s.waitHealthy(t)
	assertPostgresRunning(t, s)
	if err := syscall.Kill(s.postgresPID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if code := s.wait(t); code != 1 {
		t.Fatalf("tasker serve exited %d after its cluster died, want 1", code)
	}
	if !strings.Contains(s.log.String(), "exited unexpectedly") {
		t.Fatalf("the cluster's death was not reported:\n%s", s.log.String())
	}
	// The killed postmaster's backends exit on their own; the data dir is removed after them.
	clusterDir := filepath.Join(dataDir, "postgres")
	if !wait.Eventually(15*time.Second, func() bool { return len(processesIn(clusterDir)) == 0 }) {
		t.Fatalf("processes still running in %s: %v", clusterDir, processesIn(clusterDir))
	}
}

// TestServeUsesDatabaseURL checks that with DATABASE_URL set, serve uses it and starts no
// cluster of its own.
func TestServeUsesDatabaseURL(t *testing.T) {
	t.Parallel()
	bin := buildTasker(t)
	s := startServe(t, bin, "-database-url", dbtest.NewURL(t), "-data-dir", t.TempDir())
	s.waitHealthy(t)
	if strings.Contains(s.log.String(), "pgembed:") {
		t.Fatalf("serve started a private cluster although a database URL was given:\n%s", s.log.String())
	}
	s.stop(t, syscall.SIGINT)
}
