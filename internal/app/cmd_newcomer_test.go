package app

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/taskerhq/tasker/internal/auth"
	"github.com/taskerhq/tasker/internal/runstate"
	"github.com/taskerhq/tasker/internal/testkit/wait"
)

// TestNewcomerPath drives the real binary the way the README tells a newcomer to: `tasker
// serve` with no DATABASE_URL (its private cluster, in a temporary data folder), then, as from
// another shell, `tasker run-task`, `tasker status` and `tasker token create`, which find the
// server's database by themselves; the task completes (GraphQL); after the server stops,
// `tasker run-task` and `tasker status` say clearly that no server is running.
func TestNewcomerPath(t *testing.T) {
	t.Parallel()
	bin := buildTasker(t)
	dataDir := clusterDataDir(t)
	s := startServeWithEnv(t, bin, "TASKER_DATA_DIR="+dataDir)
	s.waitHealthy(t)

	// run-task beside the server, with no database given.
	out, stderr, code := runCLI(t, bin, dataDir, "run-task", "-template", "examples/linear_workflow", "-context", `{"batch_size": 2}`)
	if code != 0 {
		t.Fatalf("run-task exited %d: %s", code, stderr)
	}
	taskID := strings.TrimSpace(out)

	// status says where everything is, and that it answers.
	out, stderr, code = runCLI(t, bin, dataDir, "status")
	if code != 0 {
		t.Fatalf("status exited %d:\n%s%s", code, out, stderr)
	}
	t.Logf("tasker status:\n%s", out)
	for _, want := range []string{dataDir, "http://" + s.addr + " (pid " + fmt.Sprint(s.cmd.Process.Pid), "postgres://postgres@127.0.0.1:",
		fmt.Sprintf("postgres pid %d", s.postgresPID), "answering"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "NOT ANSWERING") {
		t.Errorf("status reports a failure:\n%s", out)
	}

	// The workers run the task to complete; the playground's API shows it.
	query := fmt.Sprintf(`{ task(id: "%s") { status complete } }`, taskID)
	var last []byte
	if !wait.Eventually(30*time.Second, func() bool {
		_, last = postQuery(t, s.addr, query)
		return strings.Contains(string(last), `"status":"COMPLETE","complete":true`)
	}) {
		t.Fatalf("task %s did not complete within 30s: %s", taskID, last)
	}
	if out, _, _ = runCLI(t, bin, dataDir, "status"); !strings.Contains(out, "1 (1 complete)") {
		t.Errorf("status does not count the completed task:\n%s", out)
	}

	// Open mode has no rate limit: a burst far above the default (50/s, burst 100) is served.
	for i := range 250 {
		if _, resp := postQuery(t, s.addr, `{ namespaces { name } }`); strings.Contains(string(resp), "RATE_LIMITED") {
			t.Fatalf("request %d of a burst refused in open mode: %s", i, resp)
		}
	}

	// token create works beside the server.
	out, stderr, code = runCLI(t, bin, dataDir, "token", "create", "-role", "reader", "-name", "newcomer")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || !strings.HasPrefix(lines[len(lines)-1], auth.TokenPrefix) {
		t.Fatalf("token create exited %d: %s%s", code, out, stderr)
	}

	// A wrong template name lists the templates that exist.
	_, stderr, code = runCLI(t, bin, dataDir, "run-task", "-template", "examples/nope")
	if code != 1 || !strings.Contains(stderr, "examples/linear_workflow") || !strings.Contains(stderr, "examples/nope") {
		t.Errorf("unknown template: exit %d, %q; want 1 and the templates listed", code, stderr)
	}

	// Stopped: the record is gone and the commands say no server is running.
	s.stop(t, syscall.SIGTERM)
	if _, err := os.Stat(runstate.Path(dataDir)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the server record outlived the server: %v", err)
	}
	_, stderr, code = runCLI(t, bin, dataDir, "run-task", "-template", "examples/linear_workflow")
	if want := "no tasker server is running with data folder " + dataDir + ": start one with `make run`"; code != 1 || !strings.Contains(stderr, want) {
		t.Errorf("run-task with no server: exit %d, %q; want 1 and %q", code, stderr, want)
	}
	if out, _, code = runCLI(t, bin, dataDir, "status"); code != 1 || !strings.Contains(out, "not running") {
		t.Errorf("status with no server: exit %d, %q; want 1 and not running", code, out)
	}
}
