// Package replicatest starts, for one test, a private primary PostgreSQL cluster and a hot
// standby streaming from it (pg_basebackup -R), on free loopback ports in the test's temporary
// folder, with pg_stat_statements loaded on both so a test can count the statements each
// server ran. Both stop when the test ends. The shared server on 5432 is never touched.
package replicatest

import (
	"context"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/taskerhq/tasker/internal/pgembed"
)

// Pair is a running primary and its streaming standby.
type Pair struct {
	t        testing.TB
	Primary  *pgembed.Cluster
	Standby  *pgembed.Cluster
	database string
	log      *slog.Logger
}

// Start starts the primary, creates database on it, takes a base backup and starts the
// standby from it, and waits until the standby streams. It fails the test when PostgreSQL's
// server binaries (with pg_basebackup) are not installed.
func Start(t testing.TB, database string) *Pair {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	if os.Geteuid() == 0 { // PostgreSQL runs as another user, who must traverse the folders
		for _, d := range []string{dir, filepath.Dir(dir)} {
			if err := os.Chmod(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Registered first, so it runs after both servers have stopped: their output goroutines
	// may still drain a line, which must not reach a finished test.
	w := &testWriter{t: t}
	t.Cleanup(w.close)
	log := slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelWarn}))
	p := &Pair{t: t, database: database, log: log}
	primaryDir := filepath.Join(dir, "primary")
	// First start initialises the cluster; the second loads pg_stat_statements.
	c, err := pgembed.Start(ctx, pgembed.Options{DataDir: primaryDir, Database: database, Logger: log})
	if err != nil {
		t.Fatalf("starting the primary: %v", err)
	}
	if err := c.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	conf := "shared_preload_libraries = 'pg_stat_statements'\npg_stat_statements.track = all\n" +
		"wal_level = replica\nmax_wal_senders = 5\nhot_standby = on\n"
	if err := appendFile(filepath.Join(primaryDir, "postgresql.auto.conf"), conf); err != nil {
		t.Fatal(err)
	}
	if p.Primary, err = pgembed.Start(ctx, pgembed.Options{DataDir: primaryDir, Database: database, Logger: log}); err != nil {
		t.Fatalf("restarting the primary: %v", err)
	}
	t.Cleanup(func() { _ = p.Primary.Stop(context.Background()) })
	p.Exec(p.AdminURL(p.Primary), "CREATE EXTENSION IF NOT EXISTS pg_stat_statements")

	standbyDir := filepath.Join(dir, "standby")
	bin := filepath.Join(binDir(t, p.Primary.Version()), "pg_basebackup")
	out, err := exec.CommandContext(ctx, bin, "-D", standbyDir, "-R", "-X", "stream", "-c", "fast",
		"-h", "127.0.0.1", "-p", fmt.Sprint(p.Primary.Port()), "-U", pgembed.Superuser).CombinedOutput()
	if err != nil {
		t.Fatalf("pg_basebackup: %v\n%s", err, out)
	}
	if err := chownLike(standbyDir, primaryDir); err != nil {
		t.Fatal(err)
	}
	if p.Standby, err = pgembed.Start(ctx, pgembed.Options{DataDir: standbyDir, Database: database, Logger: log}); err != nil {
		t.Fatalf("starting the standby: %v", err)
	}
	t.Cleanup(func() { _ = p.Standby.Stop(context.Background()) })
	var standby bool
	p.QueryRow(p.AdminURL(p.Standby), "SELECT pg_is_in_recovery()", &standby)
	if !standby {
		t.Fatal("the standby is not in recovery")
	}
	p.WaitReplayed()
	return p
}

// AdminURL is the URL of c's postgres database: statements sent there are not counted in the
// test database's pg_stat_statements rows.
func (p *Pair) AdminURL(c *pgembed.Cluster) string {
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/postgres?sslmode=disable", pgembed.Superuser, c.Port())
}

// Exec runs statements at url on a connection of its own.
func (p *Pair) Exec(url, sql string) {
	p.t.Helper()
	conn := p.connect(url)
	defer conn.Close(context.Background())
	if _, err := conn.Exec(context.Background(), sql); err != nil {
		p.t.Fatalf("%s: %v", sql, err)
	}
}

// QueryRow scans one row of sql at url into dst.
func (p *Pair) QueryRow(url, sql string, dst ...any) {
	p.t.Helper()
	conn := p.connect(url)
	defer conn.Close(context.Background())
	if err := conn.QueryRow(context.Background(), sql).Scan(dst...); err != nil {
		p.t.Fatalf("%s: %v", sql, err)
	}
}

// Connect opens a connection of the test's own to url (the primary's or the standby's),
// closed when the test ends.
func (p *Pair) Connect(url string) *pgx.Conn {
	p.t.Helper()
	conn := p.connect(url)
	p.t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

func (p *Pair) connect(url string) *pgx.Conn {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		p.t.Fatal(err)
	}
	return conn
}

// WaitReplayed waits until the standby has replayed everything the primary has written.
func (p *Pair) WaitReplayed() {
	p.t.Helper()
	var target string
	p.QueryRow(p.AdminURL(p.Primary), "SELECT pg_current_wal_insert_lsn()::text", &target)
	deadline := time.Now().Add(30 * time.Second)
	for {
		var caughtUp bool
		p.QueryRow(p.AdminURL(p.Standby), "SELECT pg_last_wal_replay_lsn() >= '"+target+"'::pg_lsn", &caughtUp)
		if caughtUp {
			return
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("the standby has not replayed %s after 30s", target)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ResetStatements empties pg_stat_statements on both servers (the standby's counts its own
// statements only).
func (p *Pair) ResetStatements() {
	p.t.Helper()
	p.Exec(p.AdminURL(p.Primary), "SELECT pg_stat_statements_reset()")
	p.Exec(p.AdminURL(p.Standby), "SELECT pg_stat_statements_reset()")
}

// Statements is the number of statements c ran in the test database since the last
// ResetStatements.
func (p *Pair) Statements(c *pgembed.Cluster) int64 {
	p.t.Helper()
	var n int64
	p.QueryRow(p.AdminURL(c), `SELECT COALESCE(sum(calls), 0)::bigint FROM pg_stat_statements s
		JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = '`+p.database+`'`, &n)
	return n
}

// binDir is where the PostgreSQL binaries of version are.
func binDir(t testing.TB, version string) string {
	major, _, _ := strings.Cut(version, ".")
	dir := filepath.Join("/usr/lib/postgresql", major, "bin")
	if _, err := os.Stat(filepath.Join(dir, "pg_basebackup")); err == nil {
		return dir
	}
	path, err := exec.LookPath("pg_basebackup")
	if err != nil {
		t.Fatalf("pg_basebackup not found: install the PostgreSQL server binaries: %v", err)
	}
	return filepath.Dir(path)
}

func appendFile(path, text string) error {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(text); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

// chownLike gives dir and everything in it to the owner of like.
func chownLike(dir, like string) error {
	st, err := os.Stat(like)
	if err != nil {
		return err
	}
	sys := st.Sys().(*syscall.Stat_t)
	return filepath.WalkDir(dir, func(path string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(path, int(sys.Uid), int(sys.Gid))
	})
}

// testWriter logs PostgreSQL's warnings to the test until close.
type testWriter struct {
	t      testing.TB
	mu     sync.Mutex
	closed bool
}

func (w *testWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed {
		w.t.Log(strings.TrimRight(string(b), "\n"))
	}
	return len(b), nil
}

func (w *testWriter) close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
}

// StandbyURL is the URL of the test database on the standby.
func (p *Pair) StandbyURL() string {
	return fmt.Sprintf("postgres://%s@127.0.0.1:%d/%s?sslmode=disable", pgembed.Superuser, p.Standby.Port(), p.database)
}

// StopStandby stops the standby (a fast shutdown: its sessions are ended).
func (p *Pair) StopStandby() {
	p.t.Helper()
	if err := p.Standby.Stop(context.Background()); err != nil {
		p.t.Fatal(err)
	}
}

// RestartStandby starts the stopped standby again on the same port.
func (p *Pair) RestartStandby() {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := pgembed.Start(ctx, pgembed.Options{DataDir: p.Standby.DataDir(), Port: p.Standby.Port(), Database: p.database,
		Logger: p.log})
	if err != nil {
		p.t.Fatalf("restarting the standby: %v", err)
	}
	p.Standby = c
	p.t.Cleanup(func() { _ = c.Stop(context.Background()) })
}
