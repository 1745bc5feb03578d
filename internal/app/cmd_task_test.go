package app

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/taskerhq/tasker/internal/errs"
	"github.com/taskerhq/tasker/internal/testkit/dbtest"
)

func runTask(t *testing.T, url string, args ...string) (int64, error) {
	t.Helper()
	out, err := runInProcess(t, runRunTask, url, args...)
	if err != nil {
		return 0, err
	}
	id, perr := strconv.ParseInt(strings.TrimSpace(out), 10, 64)
	if perr != nil {
		t.Fatalf("run-task printed %q, want a task id", out)
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

	if _, err := runTask(t, url, "-template", "examples/linear_workflow", "-context", `{"batch_size": "x"}`, "-templates-dir", ""); !errs.Is(err, errs.Invalid) {
		t.Fatalf("invalid context: err = %v, want errs.Invalid", err)
	}
	if _, err := runTask(t, url, "-template", "examples/nope", "-templates-dir", ""); !errs.Is(err, errs.NotFound) {
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
// a lone surrogate, invalid UTF-8) with errs.Invalid naming the flag, and creates nothing.
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
		if !errs.Is(err, errs.Invalid) || !strings.Contains(err.Error(), c.args[0]) {
			t.Errorf("run-task %q: err = %v, want errs.Invalid naming %s", c.args, err, c.args[0])
		}
	}
	var tasks int64
	db.Raw(`SELECT count(*) FROM tasker_tasks`).Scan(&tasks)
	if tasks != 0 {
		t.Fatalf("refused run-task calls created %d tasks", tasks)
	}
}

func TestRunTaskJSONLines(t *testing.T) {
	t.Parallel()
	url := dbtest.NewURL(t)
	db := dbtest.Open(t, url)
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	run := func(path string, extra ...string) ([]int64, error) {
		out, err := runInProcess(t, runRunTask, url, append([]string{"-jsonl", path, "-templates-dir", ""}, extra...)...)
		var ids []int64
		for _, f := range strings.Fields(out) {
			id, perr := strconv.ParseInt(f, 10, 64)
			if perr != nil {
				t.Fatalf("run-task printed %q, want task ids", out)
			}
			ids = append(ids, id)
		}
		return ids, err
	}
	good := write("good.jsonl", `{"template": "examples/linear_workflow", "context": {"batch_size": 3}, "idempotencyKey": "a"}
{"template": "examples/diamond_workflow@1.0.0"}

{"template": "examples/linear_workflow", "idempotencyKey": "a"}
{"template": "examples/tree_workflow", "reason": "nightly", "tags": ["x"]}
{"template": "examples/diamond_workflow", "idempotencyKey": "b"}
`)
	ids, err := run(good, "-batch", "2")
	if err != nil || len(ids) != 5 {
		t.Fatalf("run-task -jsonl: ids %v, %v; want 5 ids", ids, err)
	}
	wantNames := []string{"linear_workflow", "diamond_workflow", "linear_workflow", "tree_workflow", "diamond_workflow"}
	for i, id := range ids {
		var name string
		db.Raw(`SELECT nt.name FROM tasker_tasks t JOIN tasker_named_tasks nt USING (named_task_id) WHERE t.task_id = ?`, id).Scan(&name)
		if name != wantNames[i] {
			t.Fatalf("id %d of line %d is a task of %q, want %s", id, i, name, wantNames[i])
		}
	}
	if ids[0] != ids[2] {
		t.Fatalf("lines with one key gave tasks %d and %d", ids[0], ids[2])
	}
	again, err := run(good)
	if err != nil || again[0] != ids[0] || again[4] != ids[4] || again[1] == ids[1] {
		t.Fatalf("second run: %v, %v; keyed lines must return the first run's tasks (%v)", again, err, ids)
	}

	var tasks int64
	db.Raw(`SELECT count(*) FROM tasker_tasks`).Scan(&tasks)
	bad := write("bad.jsonl", `{"template": "examples/linear_workflow"}
{"template": "examples/linear_workflow", "context": {"batch_size": "x"}}
not json
{"template": "examples/no_such_workflow"}
{"context": {}}
{"template": "examples/linear_workflow", "colour": "red"}
{"template": "examples/linear_workflow", "reason": "a\u0000b"}
`)
	ids, err = run(bad)
	if err == nil || len(ids) != 0 {
		t.Fatalf("bad lines: ids %v, err %v; want an error and no ids", ids, err)
	}
	for _, want := range []string{"line 3", "line 5", "line 6", "colour", "line 7"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	// Once every line parses, the lines the templates refuse are reported.
	bad = write("bad2.jsonl", `{"template": "examples/linear_workflow"}
{"template": "examples/linear_workflow", "context": {"batch_size": "x"}}
{"template": "examples/no_such_workflow"}
`)
	if _, err = run(bad); !errs.Is(err, errs.Invalid) || !strings.Contains(err.Error(), "line 2") ||
		!strings.Contains(err.Error(), "line 3: ") || !strings.Contains(err.Error(), "no_such_workflow") {
		t.Fatalf("refused lines: %v", err)
	}
	// Many lines with one mistake make one short error that names them all.
	flood := write("flood.jsonl", strings.Repeat(`{"template": "examples/no_such_workflow"}`+"\n", 500))
	if _, err = run(flood); err == nil || !strings.Contains(err.Error(), "lines 1-500: ") ||
		strings.Count(err.Error(), "no_such_workflow") != 1 {
		t.Fatalf("500 lines naming a missing template: %v", err)
	}
	var after int64
	db.Raw(`SELECT count(*) FROM tasker_tasks`).Scan(&after)
	if after != tasks {
		t.Fatalf("bad input wrote tasks: %d -> %d", tasks, after)
	}
}

// TestRunTaskJSONLinesFromStandardInput drives the real binary: -jsonl - reads standard input
// and prints one id per line, in input order.
func TestRunTaskJSONLinesFromStandardInput(t *testing.T) {
	t.Parallel()
	url := dbtest.NewURL(t)
	db := dbtest.Open(t, url)
	cmd := exec.Command(buildTasker(t), "run-task", "-jsonl", "-", "-templates-dir", "", "-database-url", url)
	cmd.Stdin = strings.NewReader(`{"template": "examples/tree_workflow"}
{"template": "examples/linear_workflow", "idempotencyKey": "one"}
{"template": "examples/linear_workflow", "idempotencyKey": "one"}
`)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("run-task -jsonl -: %v\n%s", err, stderr.String())
	}
	ids := strings.Fields(stdout.String())
	if len(ids) != 3 || ids[1] != ids[2] || ids[0] == ids[1] {
		t.Fatalf("printed %q; want three ids in input order, the last two the same task", stdout.String())
	}
	var name string
	db.Raw(`SELECT nt.name FROM tasker_tasks t JOIN tasker_named_tasks nt USING (named_task_id) WHERE t.task_id = ?`, ids[0]).Scan(&name)
	if name != "tree_workflow" {
		t.Fatalf("first id %s is a task of %q, want tree_workflow", ids[0], name)
	}
}

// TestReportLinesGroupsLinesByReason: lines that share a reason are named together as
// ranges, reasons keep the order of their first line, and past the caps the rest is counted,
// not dropped.
func TestReportLinesGroupsLinesByReason(t *testing.T) {
	many := make([]lineProblem, 0, 2*maxRanges+3)
	for i := range 2*maxRanges + 3 {
		many = append(many, lineProblem{2*i + 1, "odd"})
	}
	distinct := make([]lineProblem, 0, maxReasons+5)
	for i := range maxReasons + 5 {
		distinct = append(distinct, lineProblem{i + 1, fmt.Sprintf("reason %d", i)})
	}
	distinct = append(distinct, lineProblem{100, "reason 0"}, lineProblem{101, "reason 24"})
	for _, c := range []struct {
		name string
		in   []lineProblem
		want []string
	}{
		{"one line", []lineProblem{{4, "bad"}}, []string{"line 4: bad"}},
		{"runs and reasons in first-line order", []lineProblem{{1, "b"}, {2, "b"}, {3, "a"}, {4, "b"}, {5, "b"}, {6, "b"}, {9, "b"}},
			[]string{"lines 1-2, 4-6, 9: b", "line 3: a"}},
		{"too many runs", many, []string{"lines 1, 3, 5, 7, 9, 11, 13, 15, 17, 19 and 13 more: odd"}},
		{"too many reasons", distinct, func() []string {
			var w []string
			for i := range maxReasons {
				w = append(w, fmt.Sprintf("line %d: reason %d", i+1, i))
			}
			w[0] = "lines 1, 100: reason 0"
			return append(w, "6 more lines with 5 other problems")
		}()},
	} {
		if got := reportLines(c.in); !slices.Equal(got, c.want) {
			t.Errorf("%s: reportLines = %q, want %q", c.name, got, c.want)
		}
	}
}
