package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/taskerhq/tasker/internal/config"
	"github.com/taskerhq/tasker/internal/dbtest"
	"github.com/taskerhq/tasker/internal/orchestration"
)

func runTask(t *testing.T, url string, args ...string) (int64, error) {
	t.Helper()
	var out bytes.Buffer
	err := runRunTask(context.Background(), config.Config{DatabaseURL: url}, args, &out, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		return 0, err
	}
	id, perr := strconv.ParseInt(strings.TrimSpace(out.String()), 10, 64)
	if perr != nil {
		t.Fatalf("run-task printed %q, want a task id", out.String())
	}
	return id, nil
}

func TestRunTaskCommand(t *testing.T) {
	t.Parallel()
	url := dbtest.NewURL(t)
	db := dbtest.Open(t, url)

	id, err := runTask(t, url, "-template", "examples/linear_workflow@1.0.0", "-context", `{"batch_size": 3}`, "-templates-dir", "")
	if err != nil {
		t.Fatalf("run-task: %v", err)
	}
	var steps int64
	db.Raw(`SELECT count(*) FROM tasker_workflow_steps WHERE task_id = ?`, id).Scan(&steps)
	if steps != 6 {
		t.Fatalf("task %d has %d steps, want 6", id, steps)
	}

	first, err := runTask(t, url, "-template", "examples/diamond_workflow", "-idempotency-key", "k1", "-templates-dir", "")
	if err != nil {
		t.Fatal(err)
	}
	second, err := runTask(t, url, "-template", "examples/diamond_workflow", "-idempotency-key", "k1", "-templates-dir", "")
	if err != nil || second != first {
		t.Fatalf("same key: task %d then %d (%v), want the same task", first, second, err)
	}

	if _, err := runTask(t, url, "-template", "examples/linear_workflow", "-context", `{"batch_size": "x"}`, "-templates-dir", ""); !errors.Is(err, orchestration.ErrValidation) {
		t.Fatalf("invalid context: err = %v, want ErrValidation", err)
	}
	if _, err := runTask(t, url, "-template", "examples/nope", "-templates-dir", ""); !errors.Is(err, orchestration.ErrNotFound) {
		t.Fatalf("unknown template: err = %v, want ErrNotFound", err)
	}
	if _, err := runTask(t, url, "-templates-dir", ""); err == nil || !strings.Contains(err.Error(), "-template") {
		t.Fatalf("missing -template: err = %v", err)
	}

	dir := t.TempDir()
	tpl := "namespace: ops\nname: ping\nversion: 0.2.0\nsteps:\n  - name: ping\n    handler: {kind: noop}\n"
	if err := os.WriteFile(filepath.Join(dir, "ping.yaml"), []byte(tpl), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := runTask(t, url, "-template", "ops/ping", "-templates-dir", dir); err != nil {
		t.Fatalf("template from -templates-dir: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "broken.yaml"), []byte("namespace: ops\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := runTask(t, url, "-template", "ops/ping", "-templates-dir", dir); err == nil || !strings.Contains(err.Error(), "broken.yaml") {
		t.Fatalf("broken template dir: err = %v, want the file named", err)
	}
}

// run-task refuses text PostgreSQL cannot store or that decoding would change (a NUL escape,
// a lone surrogate, invalid UTF-8) with ErrValidation naming the flag, and creates nothing.
func TestRunTaskRefusesUnstorableText(t *testing.T) {
	t.Parallel()
	url := dbtest.NewURL(t)
	db := dbtest.Open(t, url)
	for _, c := range []struct{ args []string }{
		{[]string{"-context", `{"batch_size": 3, "note": "a\u0000b"}`}},
		{[]string{"-context", `{"batch_size": 3, "note": "\ud800"}`}},
		{[]string{"-tags", `["ok", "\udc00"]`}},
		{[]string{"-idempotency-key", "k\xff"}},
		{[]string{"-reason", "why\xc3"}},
	} {
		args := append([]string{"-template", "examples/linear_workflow", "-templates-dir", ""}, c.args...)
		_, err := runTask(t, url, args...)
		if !errors.Is(err, orchestration.ErrValidation) || !strings.Contains(err.Error(), c.args[0]) {
			t.Errorf("run-task %q: err = %v, want ErrValidation naming %s", c.args, err, c.args[0])
		}
	}
	var tasks int64
	db.Raw(`SELECT count(*) FROM tasker_tasks`).Scan(&tasks)
	if tasks != 0 {
		t.Fatalf("refused run-task calls created %d tasks", tasks)
	}
}
