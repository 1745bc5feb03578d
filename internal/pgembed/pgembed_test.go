package pgembed

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/taskerhq/tasker/internal/runstate"
)

// childEnvVar makes the test binary act as a server that starts a cluster in the named data
// directory, prints "<postmaster pid> <port>" and runs until killed.
const childEnvVar = "PGEMBED_TEST_CHILD_DATA_DIR"

func TestMain(m *testing.M) {
	if dir := os.Getenv(childEnvVar); dir != "" {
		os.Exit(runChild(dir))
	}
	os.Exit(m.Run())
}

func runChild(dir string) int {
	c, err := Start(context.Background(), Options{DataDir: dir})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 2
	}
	fmt.Printf("%d %d\n", c.PID(), c.Port())
	// Runs until its stdin closes (the test ended) or it is killed (the test's point).
	_, _ = io.Copy(io.Discard, os.Stdin)
	_ = c.Stop(context.Background())
	return 0
}

// testDataDir is a cluster directory inside a fresh temporary directory. When the tests run as
// root, PostgreSQL runs as another user, who must be able to traverse the temporary
// directories (created 0700 by the testing package).
func testDataDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if os.Geteuid() == 0 {
		for _, d := range []string{dir, filepath.Dir(dir)} {
			if err := os.Chmod(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	return filepath.Join(dir, "pg")
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func start(t *testing.T, opts Options) *Cluster {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := Start(ctx, opts)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _ = c.Stop(context.Background()) })
	return c
}

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("connecting to %s: %v", url, err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

func accepts(port int) bool {
	conn, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second)
	if err != nil {
		return false
	}
	_ = conn.Close()
	return true
}

// assertGone waits until the postmaster pid has exited and its port refuses connections.
func assertGone(t *testing.T, pid, port int) {
	t.Helper()
	if !waitUntil(context.Background(), 15*time.Second, func() bool { return !runstate.ProcessAlive(pid) && !accepts(port) }) {
		t.Fatalf("postgres pid %d still running (alive=%v) or port %d still accepting (accepts=%v)",
			pid, runstate.ProcessAlive(pid), port, accepts(port))
	}
}

func TestStartRestartKeepsData(t *testing.T) {
	t.Parallel()
	dir := testDataDir(t)
	ctx := context.Background()

	began := time.Now()
	c := start(t, Options{DataDir: dir, Database: "app"})
	t.Logf("fresh start took %s", time.Since(began))
	if !strings.HasSuffix(c.URL(), "/app?sslmode=disable") || !strings.Contains(c.URL(), ":"+strconv.Itoa(c.Port())+"/") {
		t.Fatalf("URL %q does not name database app on port %d", c.URL(), c.Port())
	}
	if _, err := os.Stat(filepath.Join(c.DataDir(), "PG_VERSION")); err != nil {
		t.Fatalf("data directory not initialised: %v", err)
	}
	conn := connect(t, c.URL())
	if _, err := conn.Exec(ctx, "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('still here')"); err != nil {
		t.Fatal(err)
	}
	_ = conn.Close(ctx)

	_, err := Start(ctx, Options{DataDir: dir, Logger: testLogger(t)})
	if !errors.Is(err, ErrInUse) {
		t.Fatalf("second Start on a data directory in use: got %v, want ErrInUse", err)
	}

	pid, port := c.PID(), c.Port()
	if err := c.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := c.Stop(ctx); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	assertGone(t, pid, port)
	if _, err := os.Stat(filepath.Join(c.DataDir(), "postmaster.pid")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("postmaster.pid after a clean stop: %v", err)
	}

	began = time.Now()
	c2 := start(t, Options{DataDir: dir, Database: "app"})
	t.Logf("restart took %s", time.Since(began))
	var v string
	if err := connect(t, c2.URL()).QueryRow(ctx, "SELECT v FROM kept").Scan(&v); err != nil || v != "still here" {
		t.Fatalf("row after restart: %q, %v", v, err)
	}
}

func TestClusterDiesWithItsServer(t *testing.T) {
	t.Parallel()
	dir := testDataDir(t)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnvVar+"="+dir)
	cmd.Stderr = tWriter{t}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("reading the child's cluster pid: %v", err)
	}
	var pid, port int
	if _, err := fmt.Sscanf(line, "%d %d", &pid, &port); err != nil {
		t.Fatalf("child printed %q: %v", line, err)
	}
	if !runstate.ProcessAlive(pid) || !accepts(port) {
		t.Fatalf("cluster of the child not running: alive=%v accepts=%v", runstate.ProcessAlive(pid), accepts(port))
	}

	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	assertGone(t, pid, port)

	// The next server starts cleanly on the same data directory.
	c := start(t, Options{DataDir: dir})
	if err := connect(t, c.URL()).Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestStartStopsAnOrphanedCluster(t *testing.T) {
	t.Parallel()
	dir := testDataDir(t)
	ctx := context.Background()
	c := start(t, Options{DataDir: dir})
	if err := c.Stop(ctx); err != nil {
		t.Fatal(err)
	}

	// A postmaster daemonized by pg_ctl is not tied to any server: the situation a server
	// leaves behind when its cluster survived it.
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	u, err := chooseUser(c.DataDir())
	if err != nil {
		t.Fatal(err)
	}
	pgctl := exec.Command(filepath.Join(c.bin.Dir, "pg_ctl"), "start", "-w", "-D", c.DataDir(), "-l", "/dev/null",
		"-o", fmt.Sprintf("-c listen_addresses=127.0.0.1 -c port=%d -c unix_socket_directories=%s", port, c.sockDir))
	pgctl.Dir = "/"
	pgctl.Env = childEnv()
	pgctl.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: u.credential()}
	if out, err := pgctl.CombinedOutput(); err != nil {
		t.Fatalf("pg_ctl start: %v\n%s", err, out)
	}
	b, err := os.ReadFile(filepath.Join(c.DataDir(), "postmaster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	orphan, _ := strconv.Atoi(strings.SplitN(string(b), "\n", 2)[0])
	if !runstate.ProcessAlive(orphan) || !accepts(port) {
		t.Fatalf("orphan postmaster %d not running on port %d", orphan, port)
	}

	c2 := start(t, Options{DataDir: dir})
	if runstate.ProcessAlive(orphan) {
		t.Fatalf("orphaned postmaster %d still running after Start", orphan)
	}
	assertGone(t, orphan, port)
	if c2.PID() == orphan {
		t.Fatalf("Start reused the orphan %d instead of starting its own postmaster", orphan)
	}
	if err := connect(t, c2.URL()).Ping(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestStartRefusesANonClusterDirectory(t *testing.T) {
	t.Parallel()
	dir := testDataDir(t)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	keep := filepath.Join(dir, "notes.txt")
	if err := os.WriteFile(keep, []byte("mine"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Start(context.Background(), Options{DataDir: dir, Logger: testLogger(t)})
	if err == nil || !strings.Contains(err.Error(), "holds no PostgreSQL cluster") {
		t.Fatalf("Start on a non-empty non-cluster directory: got %v", err)
	}
	if b, err := os.ReadFile(keep); err != nil || string(b) != "mine" {
		t.Fatalf("the directory's content changed: %q, %v", b, err)
	}
}

func TestStartWithABinDirWithoutPostgres(t *testing.T) {
	t.Parallel()
	empty := t.TempDir()
	dir := testDataDir(t)
	_, err := Start(context.Background(), Options{DataDir: dir, BinDir: empty, Logger: testLogger(t)})
	if err == nil || !strings.Contains(err.Error(), empty) {
		t.Fatalf("Start with an empty BinDir: got %v, want an error naming %s", err, empty)
	}
	for _, p := range []string{dir, dir + ".lock"} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("a failed Start created %s (%v)", p, err)
		}
	}
}

func TestFindBinariesWithNoneInstalled(t *testing.T) {
	t.Parallel()
	empty := t.TempDir()
	_, err := findBinaries(context.Background(), binSearch{path: empty, libGlob: filepath.Join(empty, "*", "bin")})
	if !errors.Is(err, ErrNoBinaries) {
		t.Fatalf("got %v, want ErrNoBinaries", err)
	}
	for _, want := range []string{"apt-get install postgresql", "make run", "DATABASE_URL"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestFindBinariesOnThisMachine(t *testing.T) {
	t.Parallel()
	found, err := FindBinaries(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for i, b := range found {
		if b.Major < 10 || !isExecutable(filepath.Join(b.Dir, "initdb")) {
			t.Errorf("installation %+v: want an executable initdb and a version >= 10", b)
		}
		if i > 0 && versionLess(found[i-1].Version, b.Version) {
			t.Errorf("installations not newest first: %+v", found)
		}
	}
}

func TestPickBinaries(t *testing.T) {
	t.Parallel()
	found := []Binaries{{Dir: "/pg17", Version: "17.2", Major: 17}, {Dir: "/pg15", Version: "15.20", Major: 15}}
	for _, tc := range []struct {
		clusterVersion, wantDir, wantErr string
	}{
		{"", "/pg17", ""},
		{"15", "/pg15", ""},
		{"17", "/pg17", ""},
		{"13", "", "created by PostgreSQL 13 but only 17.2 in /pg17, 15.20 in /pg15 is installed"},
		{"x", "", "not a version"},
	} {
		b, err := pickBinaries(found, tc.clusterVersion)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("cluster %q: got %v, want error containing %q", tc.clusterVersion, err, tc.wantErr)
			}
			continue
		}
		if err != nil || b.Dir != tc.wantDir {
			t.Errorf("cluster %q: got %+v, %v; want %s", tc.clusterVersion, b, err, tc.wantDir)
		}
	}
}

func TestParseVersion(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		out, version string
		major        int
	}{
		{"postgres (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)\n", "15.20", 15},
		{"postgres (PostgreSQL) 17beta1\n", "17", 17},
		{"postgres (PostgreSQL) 9.6.24\n", "9.6", 9},
	} {
		v, m, err := parseVersion(tc.out)
		if err != nil || v != tc.version || m != tc.major {
			t.Errorf("parseVersion(%q) = %q, %d, %v; want %q, %d", tc.out, v, m, err, tc.version, tc.major)
		}
	}
	if _, _, err := parseVersion("bash: postgres: not found"); err == nil {
		t.Error("parseVersion accepted output without a version")
	}
	if !versionLess("9.6", "15.2") || !versionLess("15.2", "15.10") || versionLess("16.1", "16.1") {
		t.Error("versionLess does not order versions numerically")
	}
}

func TestUnreachableParent(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	private := filepath.Join(base, "private")
	open := filepath.Join(base, "open")
	for dir, mode := range map[string]os.FileMode{private: 0o700, open: 0o755} {
		if err := os.Mkdir(dir, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, mode); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Dir(base), 0o755); err != nil {
		t.Fatal(err)
	}
	stranger := &runAs{name: "stranger", uid: uint32(os.Getuid()) + 54321, gid: uint32(os.Getgid()) + 54321}
	if got := unreachableParent(filepath.Join(private, "a", "pg"), stranger); got != private {
		t.Errorf("below a 0700 directory of another user: got %q, want %q", got, private)
	}
	if got := unreachableParent(filepath.Join(open, "a", "pg"), stranger); got != "" {
		t.Errorf("below 0755 directories: got %q, want reachable", got)
	}
	if got := unreachableParent(filepath.Join(private, "pg"), nil); got != "" {
		t.Errorf("the current user: got %q, want reachable", got)
	}
}

// TestPlaceUsesTheFallbackOnlyWhenNeeded checks where the cluster goes when its directory is
// under a private directory: as root (PostgreSQL then runs as another user) the fallback is
// used; as a normal user, who can traverse their own private directories, it is not.
func TestPlaceUsesTheFallbackOnlyWhenNeeded(t *testing.T) {
	t.Parallel()
	private := filepath.Join(t.TempDir(), "home")
	if err := os.Mkdir(private, 0o700); err != nil {
		t.Fatal(err)
	}
	fallback := filepath.Join(testDataDir(t), "fallback", "postgres")
	c := &Cluster{log: testLogger(t)}
	if err := c.place(Options{DataDir: filepath.Join(private, "tasker", "postgres"), FallbackDataDir: fallback}); err != nil {
		t.Fatal(err)
	}
	want := filepath.Join(private, "tasker", "postgres")
	if os.Geteuid() == 0 {
		want = fallback
	}
	if resolved, _ := filepath.EvalSymlinks(filepath.Dir(want)); c.DataDir() != filepath.Join(resolved, "postgres") {
		t.Fatalf("data dir %q, want %q", c.DataDir(), want)
	}
	if os.Geteuid() == 0 {
		err := (&Cluster{log: testLogger(t)}).place(Options{DataDir: filepath.Join(private, "x", "postgres")})
		if err == nil || !strings.Contains(err.Error(), "cannot traverse "+private) {
			t.Fatalf("without a fallback: got %v, want an error naming %s", err, private)
		}
	}
}
