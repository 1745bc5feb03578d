package app

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/taskerhq/tasker/internal/testkit/dbtest"
	"github.com/taskerhq/tasker/internal/testkit/testbin"
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
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := s.wait(t); code != 0 {
		t.Fatalf("tasker serve exited %d after SIGTERM, want 0", code)
	}
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
	if !eventually(15*time.Second, func() bool { return !processAlive(s.postgresPID) }) {
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
	if !eventually(15*time.Second, func() bool { return len(processesIn(clusterDir)) == 0 }) {
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
	if err := s.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if code := s.wait(t); code != 0 {
		t.Fatalf("tasker serve exited %d after SIGINT, want 0", code)
	}
}

// clusterDataDir returns a temporary data folder for a server with a private cluster. As root,
// PostgreSQL runs as another user, who must be able to traverse it.
func clusterDataDir(t *testing.T) string {
	t.Helper()
	dataDir := t.TempDir()
	if os.Geteuid() == 0 {
		for _, d := range []string{dataDir, filepath.Dir(dataDir)} {
			if err := os.Chmod(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	return dataDir
}

// buildTasker builds the tasker binary once per test run (internal/testkit/testbin).
func buildTasker(t *testing.T) string { return testbin.Tasker(t) }

func TestMain(m *testing.M) {
	code := m.Run()
	testbin.Remove()
	os.Exit(code)
}

type serveProcess struct {
	cmd         *exec.Cmd
	log         *syncBuilder
	addr        string
	postgresPID int
	exited      chan struct{}
}

var (
	listeningRE = regexp.MustCompile(`msg="http: listening" addr=(\S+)`)
	startedRE   = regexp.MustCompile(`msg="pgembed: started" .*\bpid=(\d+)`)
)

// startServe runs `tasker serve` with args on a free port and returns once it listens.
func startServe(t *testing.T, bin string, args ...string) *serveProcess {
	t.Helper()
	return startProcess(t, bin, "serve", args, nil)
}

// startServeWithEnv runs `tasker serve` with the given environment and returns once it
// listens.
func startServeWithEnv(t *testing.T, bin string, env ...string) *serveProcess {
	t.Helper()
	return startProcess(t, bin, "serve", nil, env)
}

// startProcess runs `tasker <command>` with args and extra environment variables, on a free
// port and without the caller's DATABASE_URL, PORT and TASKER_* variables, and returns once it
// listens on HTTP.
func startProcess(t *testing.T, bin, command string, args, extraEnv []string) *serveProcess {
	t.Helper()
	cmd := exec.Command(bin, append([]string{command}, args...)...)
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DATABASE_URL=") && !strings.HasPrefix(kv, "PORT=") && !strings.HasPrefix(kv, "TASKER_") {
			env = append(env, kv)
		}
	}
	cmd.Env = append(append(env, "PORT=0", "TASKER_HOST=127.0.0.1"), extraEnv...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &serveProcess{cmd: cmd, log: &syncBuilder{}, exited: make(chan struct{})}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-s.exited
	})
	found := make(chan struct{})
	go func() {
		defer close(s.exited)
		sc := bufio.NewScanner(stderr)
		announced := false
		for sc.Scan() {
			line := sc.Text()
			s.log.add(line)
			t.Log(line)
			if m := startedRE.FindStringSubmatch(line); m != nil {
				s.postgresPID, _ = strconv.Atoi(m[1])
			}
			if m := listeningRE.FindStringSubmatch(line); m != nil && !announced {
				s.addr = m[1]
				announced = true
				close(found)
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
		_ = cmd.Wait()
	}()
	select {
	case <-found:
	case <-s.exited:
		t.Fatalf("tasker %s exited before listening:\n%s", command, s.log.String())
	case <-time.After(30 * time.Second):
		t.Fatalf("tasker %s did not listen within 30s:\n%s", command, s.log.String())
	}
	return s
}

func assertPostgresRunning(t *testing.T, s *serveProcess) {
	t.Helper()
	if s.postgresPID == 0 || !processAlive(s.postgresPID) {
		t.Fatalf("no running private postgres reported (pid %d):\n%s", s.postgresPID, s.log.String())
	}
}

// waitHealthy polls /healthz and /readyz until both answer 200.
func (s *serveProcess) waitHealthy(t *testing.T) {
	t.Helper()
	client := &http.Client{Timeout: 2 * time.Second}
	for _, path := range []string{"/healthz", "/readyz"} {
		var last string
		ok := eventually(15*time.Second, func() bool {
			resp, err := client.Get("http://" + s.addr + path)
			if err != nil {
				last = err.Error()
				return false
			}
			_ = resp.Body.Close()
			last = resp.Status
			return resp.StatusCode == http.StatusOK
		})
		if !ok {
			t.Fatalf("%s did not answer 200 within 15s (last: %s)", path, last)
		}
	}
}

// wait returns the exit code of tasker serve, failing the test after 30s.
func (s *serveProcess) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("tasker serve did not exit within 30s:\n%s", s.log.String())
	}
	return s.cmd.ProcessState.ExitCode()
}

// processesIn lists the processes whose working directory is dir.
func processesIn(dir string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if cwd, err := os.Readlink("/proc/" + e.Name() + "/cwd"); err == nil && cwd == dir {
			pids = append(pids, pid)
		}
	}
	return pids
}

// processAlive reports whether pid runs and is not a zombie.
func processAlive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

// syncBuilder collects log lines written by one goroutine and read by the test.
type syncBuilder struct {
	mu    sync.Mutex
	lines []string
}

func (b *syncBuilder) add(line string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.lines = append(b.lines, line)
}

// Write adds p as a line: a log handler writes one line at a time.
func (b *syncBuilder) Write(p []byte) (int, error) {
	b.add(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func (b *syncBuilder) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Join(b.lines, "\n")
}

// eventually polls cond every 20ms until it holds (true) or timeout passes (false).
func eventually(timeout time.Duration, cond func() bool) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			return cond()
		case <-tick.C:
		}
	}
	return true
}
