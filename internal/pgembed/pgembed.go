package pgembed

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrInUse means that another process holds the data directory's lock.
var ErrInUse = errors.New("data directory is in use by another process")

// Superuser is the role that owns the cluster; it authenticates by trust from 127.0.0.1.
const Superuser = "postgres"

// Options configures Start.
type Options struct {
	// DataDir is the cluster's data directory (PGDATA). It and its parents are created when
	// missing; the cluster is initialised on first use. Required.
	DataDir string
	// FallbackDataDir, when set, is used instead of DataDir when the server runs as root and the
	// user that runs PostgreSQL cannot traverse DataDir's parents (see FallbackDataDir()).
	FallbackDataDir string
	// BinDir holds initdb and postgres; empty finds an installation (see FindBinaries).
	BinDir string
	// Port is the TCP port on 127.0.0.1; 0 picks a free one at each start.
	Port int
	// Database is created when missing; default "tasker".
	Database string
	// StartTimeout bounds Start as a whole, including crash recovery; default 2 minutes.
	StartTimeout time.Duration
	// Logger receives lifecycle lines and PostgreSQL's warnings and errors; nil discards them.
	Logger *slog.Logger
}

// Cluster is a running private PostgreSQL cluster. Stop it with Stop.
type Cluster struct {
	bin      Binaries
	dataDir  string
	sockDir  string
	port     int
	database string
	user     *runAs
	log      *slog.Logger
	lock     *os.File

	cmd     *exec.Cmd
	exited  chan struct{}
	exitErr error // written before exited is closed
	output  *tail

	stopOnce sync.Once
	stopErr  error
}

// Start starts the cluster in opts.DataDir (initialising it on first use), waits until it
// accepts connections, creates opts.Database when missing and returns the running cluster.
// On error nothing is left running.
func Start(ctx context.Context, opts Options) (*Cluster, error) {
	began := time.Now()
	if opts.DataDir == "" {
		return nil, errors.New("starting PostgreSQL: no data directory given")
	}
	if opts.Port < 0 || opts.Port > 65535 {
		return nil, fmt.Errorf("starting PostgreSQL: port %d is not a TCP port", opts.Port)
	}
	timeout := opts.StartTimeout
	if timeout <= 0 {
		timeout = 2 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Cluster{database: opts.Database, log: log, output: &tail{}}
	if c.database == "" {
		c.database = "tasker"
	}
	installed, err := installations(ctx, opts.BinDir)
	if err != nil {
		return nil, err
	}
	if err := c.place(opts); err != nil {
		return nil, err
	}
	if err := c.lockDataDir(); err != nil {
		return nil, err
	}
	started := false
	defer func() {
		if !started {
			c.unlock()
		}
	}()
	if err := stopOrphans(ctx, c.dataDir, log); err != nil {
		return nil, err
	}
	clusterVersion, err := readClusterVersion(c.dataDir)
	if err != nil {
		return nil, err
	}
	if c.bin, err = pickBinaries(installed, clusterVersion); err != nil {
		return nil, err
	}
	fresh := clusterVersion == ""
	if fresh {
		if err := c.initdb(ctx); err != nil {
			return nil, err
		}
	}
	if err := chownTree(c.dataDir, c.user); err != nil {
		return nil, err
	}
	c.sockDir = c.dataDir
	// sun_path holds 107 bytes; unix_socket_directories is a comma-separated list.
	if len(c.dataDir)+len("/.s.PGSQL.65535.lock") > 100 || strings.ContainsAny(c.dataDir, ",\" \t\\") {
		c.sockDir = os.TempDir()
	}
	if err := c.run(ctx, opts.Port); err != nil {
		return nil, err
	}
	if err := c.ensureDatabase(ctx); err != nil {
		_ = c.Stop(context.Background())
		return nil, err
	}
	started = true
	log.Info("pgembed: started", "took", time.Since(began), "fresh", fresh, "version", c.bin.Version,
		"pid", c.PID(), "port", c.port, "data_dir", c.dataDir, "run_as", c.user.String())
	return c, nil
}

// place decides where the cluster lives and who runs it, creates the parents of the data
// directory and resolves symbolic links in them.
func (c *Cluster) place(opts Options) error {
	dataDir, err := filepath.Abs(opts.DataDir)
	if err != nil {
		return fmt.Errorf("resolving data directory %s: %w", opts.DataDir, err)
	}
	u, err := chooseUser(dataDir)
	if err != nil {
		return err
	}
	if blocked := unreachableParent(dataDir, u); blocked != "" {
		if opts.FallbackDataDir == "" {
			return fmt.Errorf("PostgreSQL runs as %s, which cannot traverse %s to reach the data directory %s: "+
				"choose a data directory it can reach (e.g. /var/lib/tasker) or run as a normal user", u, blocked, dataDir)
		}
		fallback, err := filepath.Abs(opts.FallbackDataDir)
		if err != nil {
			return fmt.Errorf("resolving fallback data directory %s: %w", opts.FallbackDataDir, err)
		}
		c.log.Warn("pgembed: data directory not reachable by the PostgreSQL user, using the fallback",
			"data_dir", dataDir, "blocked_at", blocked, "fallback", fallback, "run_as", u.String())
		dataDir = fallback
		if u, err = chooseUser(dataDir); err != nil {
			return err
		}
		if blocked := unreachableParent(dataDir, u); blocked != "" {
			return fmt.Errorf("PostgreSQL runs as %s, which cannot traverse %s to reach the fallback data directory %s",
				u, blocked, dataDir)
		}
	}
	if err := mkdirParents(dataDir); err != nil {
		return fmt.Errorf("preparing data directory: %w", err)
	}
	parent, err := filepath.EvalSymlinks(filepath.Dir(dataDir))
	if err != nil {
		return fmt.Errorf("resolving data directory %s: %w", dataDir, err)
	}
	c.dataDir = filepath.Join(parent, filepath.Base(dataDir))
	c.user = u
	return nil
}

// lockDataDir takes the exclusive lock "<data dir>.lock", held until Stop. The kernel releases
// it when the process dies, however it dies.
func (c *Cluster) lockDataDir() error {
	path := c.dataDir + ".lock"
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("opening lock file: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return fmt.Errorf("locking %s: %w (another tasker serve is running on it)", path, ErrInUse)
		}
		return fmt.Errorf("locking %s: %w", path, err)
	}
	_ = f.Truncate(0)
	_, _ = f.WriteString(strconv.Itoa(os.Getpid()) + "\n")
	c.lock = f
	return nil
}

func (c *Cluster) unlock() {
	if c.lock != nil {
		_ = c.lock.Close() // closing the descriptor releases the flock
		c.lock = nil
	}
}

// readClusterVersion returns the PG_VERSION of an initialised data directory, "" for a missing
// or empty one, and an error for a non-empty directory that is not a cluster.
func readClusterVersion(dataDir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, "PG_VERSION"))
	if err == nil {
		return strings.TrimSpace(string(b)), nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("reading PG_VERSION: %w", err)
	}
	entries, err := os.ReadDir(dataDir)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("reading data directory: %w", err)
	}
	if len(entries) > 0 {
		return "", fmt.Errorf("%s is not empty and holds no PostgreSQL cluster (no PG_VERSION): "+
			"empty it or choose another data directory", dataDir)
	}
	return "", nil
}

// installations lists the PostgreSQL installations Start may use: the one in binDir when set,
// else every one found on the machine.
func installations(ctx context.Context, binDir string) ([]Binaries, error) {
	if binDir == "" {
		return FindBinaries(ctx)
	}
	b, err := inspectBinDir(ctx, binDir)
	if err != nil {
		return nil, fmt.Errorf("using PostgreSQL binaries from %s: %w", binDir, err)
	}
	return []Binaries{b}, nil
}

// initdb initialises a cluster in a temporary sibling directory and renames it into place.
func (c *Cluster) initdb(ctx context.Context) error {
	tmp := c.dataDir + ".initdb"
	if err := os.RemoveAll(tmp); err != nil {
		return fmt.Errorf("removing an interrupted initialisation: %w", err)
	}
	if err := os.Remove(c.dataDir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing empty data directory: %w", err)
	}
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return fmt.Errorf("creating data directory: %w", err)
	}
	if err := chownTree(tmp, c.user); err != nil {
		return err
	}
	args := []string{"-D", tmp, "-U", Superuser, "--auth-local=trust", "--auth-host=trust",
		"-E", "UTF8", "--locale=C"}
	if c.bin.Major >= 14 {
		args = append(args, "--no-instructions")
	}
	cmd := exec.CommandContext(ctx, filepath.Join(c.bin.Dir, "initdb"), args...)
	cmd.Dir = "/"
	cmd.Env = childEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: c.user.credential()}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("initialising cluster with %s/initdb as %s: %w\n%s", c.bin.Dir, c.user, err, lastLines(string(out), 15))
	}
	if err := os.Rename(tmp, c.dataDir); err != nil {
		return fmt.Errorf("moving initialised cluster into place: %w", err)
	}
	return nil
}

// run starts postgres and waits until it accepts connections. With an automatic port it tries
// again on another port when the chosen one was taken in the meantime.
func (c *Cluster) run(ctx context.Context, port int) error {
	for attempt := 1; ; attempt++ {
		c.port = port
		if port == 0 {
			p, err := freePort()
			if err != nil {
				return err
			}
			c.port = p
		}
		if err := c.spawn(); err != nil {
			return err
		}
		err := c.waitReady(ctx)
		if err == nil {
			return nil
		}
		c.kill()
		if port == 0 && attempt < 3 && strings.Contains(c.output.String(), "could not bind") {
			c.log.Warn("pgembed: port taken, trying another", "port", c.port)
			continue
		}
		return err
	}
}

// spawn starts postgres as a child from a goroutine locked to its OS thread until postgres
// exits, so that the parent-death signal fires only when the whole server dies.
func (c *Cluster) spawn() error {
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("creating output pipe: %w", err)
	}
	cmd := exec.Command(filepath.Join(c.bin.Dir, "postgres"),
		"-D", c.dataDir,
		"-c", "listen_addresses=127.0.0.1",
		"-c", "port="+strconv.Itoa(c.port),
		"-c", "unix_socket_directories="+c.sockDir,
		"-c", "shared_buffers=128MB",
		"-c", "max_connections=100",
		"-c", "logging_collector=off",
	)
	cmd.Dir = "/"
	cmd.Env = childEnv()
	cmd.Stdout = w
	cmd.Stderr = w
	cmd.SysProcAttr = childAttr(c.user)
	c.cmd = cmd
	c.exited = make(chan struct{})
	c.exitErr = nil
	c.output = &tail{}
	startErr := make(chan error, 1)
	go func() {
		// The thread stays locked: it ends with this goroutine, after postgres has exited.
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			startErr <- err
			return
		}
		startErr <- nil
		c.exitErr = cmd.Wait()
		close(c.exited)
	}()
	err = <-startErr
	_ = w.Close()
	if err != nil {
		_ = r.Close()
		return fmt.Errorf("starting %s/postgres as %s: %w", c.bin.Dir, c.user, err)
	}
	go c.output.consume(r, c.log)
	return nil
}

// waitReady polls until postgres reports itself ready, it exits, or ctx ends.
func (c *Cluster) waitReady(ctx context.Context) error {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if c.ready(ctx) {
			return nil
		}
		select {
		case <-c.exited:
			return fmt.Errorf("starting PostgreSQL %s in %s: postgres exited (%v):\n%s",
				c.bin.Version, c.dataDir, c.exitErr, c.output.String())
		case <-ctx.Done():
			return fmt.Errorf("waiting for PostgreSQL to accept connections: %w\n%s", ctx.Err(), c.output.String())
		case <-tick.C:
		}
	}
}

// ready reports whether postgres accepts connections: postmaster.pid names this postmaster with
// status "ready" (PostgreSQL 10 and later), then a connection succeeds.
func (c *Cluster) ready(ctx context.Context) bool {
	if c.bin.Major >= 10 {
		b, err := os.ReadFile(filepath.Join(c.dataDir, "postmaster.pid"))
		if err != nil {
			return false
		}
		lines := strings.Split(string(b), "\n")
		if len(lines) < 8 || strings.TrimSpace(lines[0]) != strconv.Itoa(c.PID()) || strings.TrimSpace(lines[7]) != "ready" {
			return false
		}
	}
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	conn, err := pgx.Connect(cctx, c.adminURL())
	if err != nil {
		return false
	}
	_ = conn.Close(cctx)
	return true
}

// ensureDatabase creates the service's database on the embedded server when it is missing. It
// runs before the service opens its handle, on an administrative connection of its own: DDL
// of the embedded server's bootstrap, not a write of the product's data.
func (c *Cluster) ensureDatabase(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, c.adminURL())
	if err != nil {
		return fmt.Errorf("connecting to PostgreSQL: %w", err)
	}
	defer func() { _ = conn.Close(context.Background()) }()
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", c.database).Scan(&exists); err != nil {
		return fmt.Errorf("looking up database %q: %w", c.database, err)
	}
	if exists {
		return nil
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{c.database}.Sanitize()); err != nil {
		return fmt.Errorf("creating database %q: %w", c.database, err)
	}
	c.log.Info("pgembed: created database", "database", c.database)
	return nil
}

// kill ends a postgres that failed to start: immediate shutdown, then SIGKILL.
func (c *Cluster) kill() {
	_ = c.cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-c.exited:
	case <-time.After(5 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.exited
	}
}

// Stop shuts the cluster down: a fast shutdown (SIGINT), escalated to an immediate shutdown
// (SIGQUIT) when ctx ends first and to SIGKILL 5 seconds later. It returns after postgres has
// exited and the data directory's lock is released. It is safe to call more than once; later
// calls return the first call's result.
func (c *Cluster) Stop(ctx context.Context) error {
	c.stopOnce.Do(func() { c.stopErr = c.stop(ctx) })
	return c.stopErr
}

func (c *Cluster) stop(ctx context.Context) error {
	defer c.unlock()
	began := time.Now()
	select {
	case <-c.exited:
		c.log.Warn("pgembed: postgres had already exited", "err", c.exitErr)
		return nil
	default:
	}
	mode := "fast"
	_ = c.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-c.exited:
	case <-ctx.Done():
		mode = "immediate"
		_ = c.cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-c.exited:
		case <-time.After(5 * time.Second):
			mode = "killed"
			_ = c.cmd.Process.Kill()
			<-c.exited
		}
	}
	c.log.Info("pgembed: stopped", "took", time.Since(began), "mode", mode, "pid", c.PID())
	if mode != "fast" {
		return fmt.Errorf("stopping PostgreSQL: the fast shutdown did not finish in time (%s shutdown used)", mode)
	}
	return nil
}

// URL is the connection URL of the cluster's database.
func (c *Cluster) URL() string {
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable", Superuser, c.port, url.PathEscape(c.database))
}

func (c *Cluster) adminURL() string {
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/postgres?sslmode=disable&connect_timeout=2", Superuser, c.port)
}

// Port is the TCP port the cluster listens on at 127.0.0.1.
func (c *Cluster) Port() int { return c.port }

// PID is the process id of the postmaster.
func (c *Cluster) PID() int { return c.cmd.Process.Pid }

// DataDir is the data directory in use (FallbackDataDir when the configured one was not
// reachable).
func (c *Cluster) DataDir() string { return c.dataDir }

// Version is the PostgreSQL version that runs the cluster, e.g. "16.4".
func (c *Cluster) Version() string { return c.bin.Version }

// Exited is closed when postgres exits, whether through Stop or unexpectedly.
func (c *Cluster) Exited() <-chan struct{} { return c.exited }

// ExitErr is how postgres exited; valid once Exited is closed.
func (c *Cluster) ExitErr() error {
	select {
	case <-c.exited:
		return c.exitErr
	default:
		return nil
	}
}

// freePort asks the kernel for a TCP port that is free on 127.0.0.1 now.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// childEnv is this process's environment without PG* variables, which would otherwise
// redirect initdb and postgres (PGDATA, PGPORT, ...).
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PG") {
			env = append(env, kv)
		}
	}
	return env
}

// stopOrphans stops a postgres left running in dataDir by a server that died without stopping
// it, then waits until every process of that cluster has exited. The caller holds the data
// directory's lock, so no live server owns such a process.
func stopOrphans(ctx context.Context, dataDir string, log *slog.Logger) error {
	pidFile := filepath.Join(dataDir, "postmaster.pid")
	b, err := os.ReadFile(pidFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading %s: %w", pidFile, err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0]))
	if pid > 0 && postgresIn(pid, dataDir) {
		log.Warn("pgembed: stopping a postgres left running by a previous run", "pid", pid, "data_dir", dataDir)
		gone := func() bool { return !postgresIn(pid, dataDir) }
		for _, step := range []struct {
			sig  syscall.Signal
			wait time.Duration
		}{{syscall.SIGINT, 10 * time.Second}, {syscall.SIGQUIT, 5 * time.Second}, {syscall.SIGKILL, 5 * time.Second}} {
			_ = syscall.Kill(pid, step.sig)
			if waitUntil(ctx, step.wait, gone) {
				break
			}
		}
		if !gone() {
			return fmt.Errorf("stopping the postgres (pid %d) left running in %s: it did not exit", pid, dataDir)
		}
	}
	if !waitUntil(ctx, 10*time.Second, func() bool { return len(processesIn(dataDir)) == 0 }) {
		return fmt.Errorf("waiting for the processes of a previous cluster in %s to exit: still running: %v",
			dataDir, processesIn(dataDir))
	}
	// No postgres runs in dataDir: the pid file is stale, and its pid may belong to an unrelated
	// process by now, which would make postgres refuse to start.
	if err := os.Remove(pidFile); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing stale %s: %w", pidFile, err)
	}
	return nil
}

// waitUntil polls cond every 10ms until it holds (true) or timeout or ctx ends (false).
func waitUntil(ctx context.Context, timeout time.Duration, cond func() bool) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return cond()
		case <-deadline.C:
			return cond()
		case <-tick.C:
		}
	}
	return true
}

// tail keeps the last lines postgres wrote, for error messages, and logs them: warnings and
// errors at Warn (except the routine end of connections at shutdown), everything else at Debug.
type tail struct {
	mu    sync.Mutex
	lines []string
}

func (t *tail) consume(r io.ReadCloser, log *slog.Logger) {
	defer r.Close()
	br := bufio.NewReader(r)
	for {
		line, err := br.ReadString('\n')
		if line = strings.TrimRight(line, "\n"); line != "" {
			t.add(line, log)
		}
		if err != nil {
			return
		}
	}
}

func (t *tail) add(line string, log *slog.Logger) {
	t.mu.Lock()
	t.lines = append(t.lines, line)
	if len(t.lines) > 30 {
		t.lines = t.lines[len(t.lines)-30:]
	}
	t.mu.Unlock()
	level := slog.LevelDebug
	for _, marker := range []string{"WARNING:", "ERROR:", "FATAL:", "PANIC:"} {
		if strings.Contains(line, marker) {
			level = slog.LevelWarn
		}
	}
	if strings.Contains(line, "terminating connection due to administrator command") {
		level = slog.LevelDebug // every open connection says so during a shutdown
	}
	log.Log(context.Background(), level, "pgembed: postgres", "line", line)
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(t.lines, "\n")
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
