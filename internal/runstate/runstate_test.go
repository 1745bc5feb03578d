package runstate_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/taskerhq/tasker/internal/runstate"
	"github.com/taskerhq/tasker/internal/testkit/dbtest"
)

// Find returns a record only while its server process lives and its database answers, and
// says otherwise which data folder has no server; Remove removes only its own record.
func TestFindTrustsOnlyALiveServer(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "data") // created by Write
	if _, err := runstate.Find(ctx, dir); !errors.Is(err, runstate.ErrNoServer) ||
		!strings.Contains(err.Error(), "with data folder "+dir+": start one with `make run`") {
		t.Fatalf("no record: %v, want ErrNoServer naming the folder and how to start a server", err)
	}

	live := runstate.State{DataDir: dir, HTTPURL: "http://127.0.0.1:1", DatabaseURL: dbtest.NewURL(t),
		ServerPID: os.Getpid(), StartedAt: time.Now().UTC().Truncate(time.Second)}
	if err := runstate.Write(live); err != nil {
		t.Fatal(err)
	}
	if info, err := os.Stat(runstate.Path(dir)); err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("record %v, %v: want a file readable by its owner only", info, err)
	}
	got, err := runstate.Find(ctx, dir)
	if err != nil || got != live {
		t.Fatalf("live server: %+v, %v; want %+v", got, err, live)
	}

	dead := live
	dead.ServerPID = exitedPID(t)
	if err := runstate.Write(dead); err != nil {
		t.Fatal(err)
	}
	if _, err := runstate.Find(ctx, dir); !errors.Is(err, runstate.ErrNoServer) || !strings.Contains(err.Error(), "has exited") {
		t.Fatalf("dead server: %v, want ErrNoServer saying it has exited", err)
	}

	silent := live
	silent.DatabaseURL = "postgres://postgres@127.0.0.1:1/tasker?sslmode=disable"
	if err := runstate.Write(silent); err != nil {
		t.Fatal(err)
	}
	if _, err := runstate.Find(ctx, dir); !errors.Is(err, runstate.ErrNoServer) || !strings.Contains(err.Error(), "does not answer") {
		t.Fatalf("database down: %v, want ErrNoServer saying the database does not answer", err)
	}

	// Remove leaves another server's record alone, then removes its own.
	if err := runstate.Remove(dir, live.ServerPID+1); err != nil {
		t.Fatal(err)
	}
	if _, err := runstate.Read(dir); err != nil {
		t.Fatalf("Remove by another pid removed the record: %v", err)
	}
	if err := runstate.Remove(dir, live.ServerPID); err != nil {
		t.Fatal(err)
	}
	if _, err := runstate.Read(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("after Remove: %v, want no record", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 0 {
		t.Fatalf("files left in the data folder: %v", entries)
	}
}

// exitedPID returns the id of a process that has exited (and been reaped).
func exitedPID(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	return cmd.Process.Pid
}
