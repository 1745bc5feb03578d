// Package runstate is the record a running `tasker serve` keeps in its data folder, so that the
// other commands (run-task, token, seed, status, ...) find the server and its private
// PostgreSQL cluster without being told where they are: the cluster's port changes at every
// start.
//
// Guarantees:
//   - Write replaces the record atomically (a temporary file renamed over it): a reader sees
//     the previous record or the new one, never a partial one. The file is readable by its
//     owner only, since the database URL grants access to the database.
//   - Remove deletes the record only when it is the one this process wrote, so a server that
//     stops never removes the record of another server started after it on the same folder.
//   - Find returns a record only when the server it names is alive: its process exists and its
//     database answers a ping. Otherwise it returns an error wrapping ErrNoServer that names the
//     data folder and says how to start a server.
package runstate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// FileName is the record's name inside the data folder.
const FileName = "server.json"

// ErrNoServer is wrapped by Find's error when no live server runs with the data folder.
var ErrNoServer = errors.New("no tasker server is running")

// State says where a running server and its private cluster are.
type State struct {
	// DataDir is the server's data folder (the folder that holds this record).
	DataDir string `json:"data_dir"`
	// HTTPURL is the base URL of the server's HTTP endpoints, e.g. http://127.0.0.1:8080.
	HTTPURL string `json:"http_url"`
	// DatabaseURL is the connection URL of the private cluster's database.
	DatabaseURL string `json:"database_url"`
	// PostgresDataDir is the private cluster's data directory.
	PostgresDataDir string `json:"postgres_data_dir"`
	// ServerPID and PostgresPID are the process ids of tasker serve and of the postmaster.
	ServerPID   int `json:"server_pid"`
	PostgresPID int `json:"postgres_pid"`
	// StartedAt is when the server started serving.
	StartedAt time.Time `json:"started_at"`
}

// Path is the record's path in dataDir.
func Path(dataDir string) string { return filepath.Join(dataDir, FileName) }

// Write records s in s.DataDir atomically, creating the folder when missing.
func Write(s State) error {
	if err := os.MkdirAll(s.DataDir, 0o700); err != nil {
		return fmt.Errorf("recording the server in %s: %w", s.DataDir, err)
	}
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("recording the server: %w", err)
	}
	tmp, err := os.CreateTemp(s.DataDir, FileName+".*.tmp")
	if err != nil {
		return fmt.Errorf("recording the server in %s: %w", s.DataDir, err)
	}
	defer func() { _ = os.Remove(tmp.Name()) }() // a no-op once renamed
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("writing %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), Path(s.DataDir)); err != nil {
		return fmt.Errorf("recording the server in %s: %w", s.DataDir, err)
	}
	return nil
}

// Remove deletes the record of dataDir when it names the process serverPID; a record of
// another server, or none, is left as it is.
func Remove(dataDir string, serverPID int) error {
	// A missing, unreadable or foreign record is not ours to remove.
	if s, err := Read(dataDir); err != nil || s.ServerPID != serverPID {
		return nil
	}
	if err := os.Remove(Path(dataDir)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing %s: %w", Path(dataDir), err)
	}
	return nil
}

// Read returns the record of dataDir as written, alive or not. A missing record is an error
// wrapping fs.ErrNotExist.
func Read(dataDir string) (State, error) {
	var s State
	b, err := os.ReadFile(Path(dataDir))
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("reading %s: %w", Path(dataDir), err)
	}
	return s, nil
}

// Find returns the record of the server running with dataDir. It fails, wrapping
// ErrNoServer, when there is no record, when the recorded server process has exited or when
// its database does not answer within a few seconds.
func Find(ctx context.Context, dataDir string) (State, error) {
	abs, err := filepath.Abs(dataDir)
	if err == nil {
		dataDir = abs
	}
	hint := "start one with `make run` (or `tasker serve`), or set DATABASE_URL"
	s, err := Read(dataDir)
	if errors.Is(err, fs.ErrNotExist) {
		return s, fmt.Errorf("%w with data folder %s: %s", ErrNoServer, dataDir, hint)
	}
	if err != nil {
		return s, fmt.Errorf("%w with data folder %s (%w): %s", ErrNoServer, dataDir, err, hint)
	}
	if !ProcessAlive(s.ServerPID) {
		return s, fmt.Errorf("%w with data folder %s (the server recorded in %s, pid %d, has exited): %s",
			ErrNoServer, dataDir, Path(dataDir), s.ServerPID, hint)
	}
	if err := Ping(ctx, s.DatabaseURL); err != nil {
		return s, fmt.Errorf("%w with data folder %s (the database of server pid %d does not answer: %w): %s",
			ErrNoServer, dataDir, s.ServerPID, err, hint)
	}
	return s, nil
}

// ProcessAlive reports whether a process with id pid runs (possibly owned by another user): it
// exists and, where /proc tells, is not a zombie (exited, waiting for its parent to reap it).
func ProcessAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	return !zombie(pid)
}

// zombie reports whether /proc/<pid>/stat shows the process in state Z; false where it cannot
// be read.
func zombie(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')') // the command name, in parentheses, may hold anything
	return i >= 0 && i+2 < len(s) && s[i+2] == 'Z'
}

// Ping connects to the database at url and runs one statement, within 3 seconds.
func Ping(ctx context.Context, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close(context.Background()) }()
	return conn.Ping(ctx)
}
