package app

import (
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/taskerhq/tasker/internal/testkit/dbtest"
)

// TestWorkerServesMetricsAndHealth runs `tasker worker -metrics-listen` against a test
// database: it serves /healthz, /readyz and /metrics with the step metric families, and exits 0
// on SIGTERM.
func TestWorkerServesMetricsAndHealth(t *testing.T) {
	t.Parallel()
	bin := buildTasker(t)
	url := dbtest.NewURL(t)
	w := startProcess(t, bin, "worker", []string{"-metrics-listen", "127.0.0.1:0"}, []string{"DATABASE_URL=" + url})
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get("http://" + w.addr + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if code, _ := get("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz: %d", code)
	}
	if code, _ := get("/readyz"); code != http.StatusOK {
		t.Errorf("/readyz: %d", code)
	}
	code, body := get("/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d", code)
	}
	for _, family := range []string{"tasker_ready_steps", "tasker_subscribers", "go_goroutines"} {
		if !strings.Contains(body, family) {
			t.Errorf("/metrics lacks %s", family)
		}
	}
	if err := w.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-w.exited:
	case <-time.After(30 * time.Second):
		t.Fatal("worker did not exit within 30s of SIGTERM")
	}
	if code := w.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("worker exited %d:\n%s", code, w.log.String())
	}
}
