// Package testbin builds the tasker binary for tests that run it as a real process. The binary
// is built once per test process, into a temporary folder that Remove deletes (call it from
// TestMain after m.Run).
package testbin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

var (
	once sync.Once
	dir  string
	bin  string
	err  error
)

// Tasker returns the path of the tasker binary built from this module, building it on the
// first call; a failed build fails t with the compiler's output.
func Tasker(t testing.TB) string {
	t.Helper()
	once.Do(func() {
		if dir, err = os.MkdirTemp("", "tasker-bin-"); err != nil {
			return
		}
		bin = filepath.Join(dir, "tasker")
		if out, buildErr := exec.Command("go", "build", "-o", bin, "github.com/taskerhq/tasker").CombinedOutput(); buildErr != nil {
			err = fmt.Errorf("go build: %w\n%s", buildErr, out)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// Remove deletes the folder of the built binary, if one was built.
func Remove() {
	if dir != "" {
		_ = os.RemoveAll(dir)
	}
}
