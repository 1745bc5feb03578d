package app

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/taskerhq/tasker/internal/auth"
	"github.com/taskerhq/tasker/internal/config"
	"github.com/taskerhq/tasker/internal/testkit/dbtest"
	"github.com/taskerhq/tasker/internal/testkit/logbuf"
	"github.com/taskerhq/tasker/internal/testkit/testbin"
	"github.com/taskerhq/tasker/internal/testkit/wait"
)

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
	log         *logbuf.Buffer
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
	s := &serveProcess{cmd: cmd, log: &logbuf.Buffer{}, exited: make(chan struct{})}
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
			fmt.Fprintln(s.log, line)
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
		ok := wait.Eventually(15*time.Second, func() bool {
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

// stop sends sig to the process and waits for it to exit 0, failing the test otherwise.
func (s *serveProcess) stop(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := s.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	if code := s.wait(t); code != 0 {
		t.Fatalf("tasker exited %d after %v, want 0:\n%s", code, sig, s.log.String())
	}
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

// runCLI runs `tasker args...` with dataDir as TASKER_DATA_DIR and without the caller's
// DATABASE_URL and TASKER_* variables, and returns its output and exit code.
func runCLI(t *testing.T, bin, dataDir string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "DATABASE_URL=") && !strings.HasPrefix(kv, "TASKER_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "TASKER_DATA_DIR="+dataDir)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("running tasker %s: %v", strings.Join(args, " "), err)
	}
	return o.String(), e.String(), cmd.ProcessState.ExitCode()
}

// postQuery posts a GraphQL query to the server at addr, with header name/value pairs (e.g.
// "Authorization", "Bearer …"), and returns the response and its body, which must be JSON.
func postQuery(t *testing.T, addr, query string, header ...string) (*http.Response, []byte) {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"query": query})
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/query", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(header); i += 2 {
		if header[i+1] != "" {
			req.Header.Set(header[i], header[i+1])
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if !json.Valid(raw) {
		t.Fatalf("POST /query %s: %d %s", query, resp.StatusCode, raw)
	}
	return resp, raw
}

// createToken stores a token of role in the database at url and returns it.
func createToken(t *testing.T, url string, role auth.Role) string {
	t.Helper()
	_, secret, err := auth.NewStore(dbtest.Open(t, url)).Create(context.Background(), role, "serve-test")
	if err != nil {
		t.Fatal(err)
	}
	return secret
}

func get(t *testing.T, url, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// gql posts a GraphQL query to a running server and decodes its data into out, failing on
// any error.
func gql(t *testing.T, addr, query string, out any) {
	t.Helper()
	_, raw := postQuery(t, addr, query)
	var r struct {
		Data   json.RawMessage `json:"data"`
		Errors []any           `json:"errors"`
	}
	if err := json.Unmarshal(raw, &r); err != nil || len(r.Errors) > 0 {
		t.Fatalf("%s answered %s (%v)", query, raw, err)
	}
	if err := json.Unmarshal(r.Data, out); err != nil {
		t.Fatal(err)
	}
}

// runInProcess runs a command (its run function) in this process against the database at
// url, and returns what it printed and its error.
func runInProcess(t *testing.T, run func(context.Context, config.Config, []string, io.Writer, *slog.Logger) error,
	url string, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := run(context.Background(), config.Config{DatabaseURL: url, ShutdownTimeout: 10 * time.Second}, args, &out,
		slog.New(slog.DiscardHandler))
	return out.String(), err
}

// startServeWithToken runs `tasker serve` on a fresh test database holding an API token of
// role, and returns once it is healthy, with the database's URL and the token.
func startServeWithToken(t *testing.T, role auth.Role) (s *serveProcess, url, token string) {
	t.Helper()
	url = dbtest.NewURL(t)
	token = createToken(t, url, role)
	s = startServe(t, buildTasker(t), "-database-url", url, "-data-dir", t.TempDir())
	s.waitHealthy(t)
	return s, url, token
}
