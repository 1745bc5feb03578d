package app

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"

	"github.com/taskerhq/tasker/internal/config"
	"github.com/taskerhq/tasker/internal/database"
	"github.com/taskerhq/tasker/internal/errs"
	"github.com/taskerhq/tasker/internal/handler"
	"github.com/taskerhq/tasker/internal/orchestration"
	"github.com/taskerhq/tasker/internal/template"
	"github.com/taskerhq/tasker/internal/textcheck"
)

// loadTemplates returns the templates of dir, or the templates shipped in the binary when dir
// is empty.
func loadTemplates(dir string) (*template.Registry, error) {
	if dir == "" {
		return template.Shipped(handler.NewBuiltinRegistry())
	}
	reg := template.NewRegistry(handler.NewBuiltinRegistry())
	return reg, reg.LoadDir(dir)
}

// runRunTask creates one task from a template and prints its id, or, with -jsonl, many tasks
// read as JSON lines, printing one id per line in input order. The workers run them.
func runRunTask(ctx context.Context, cfg config.Config, args []string, out io.Writer, log *slog.Logger) error {
	fs := newFlagSet("run-task", "-template namespace/name[@version] [-context JSON] [flags] | -jsonl FILE|-",
		"Create a task from a template and print its id; the server's workers run it.\n"+
			"With -jsonl, create one task per line of FILE (- reads standard input), each line a JSON object\n"+
			`{"template": "namespace/name[@version]", "context": {...}, "idempotencyKey": "...", "initiator": "...", "reason": "...", "tags": {...}}`+"\n"+
			"(only template is required), and print one task id per line in input order. Every line is checked\n"+
			"before anything is written; the tasks are then created in batches of up to -batch lines, each in one transaction.", out)
	databaseFlags(fs, &cfg, usesServer)
	fs.StringVar(&cfg.TemplatesDir, "templates-dir", cfg.TemplatesDir,
		"folder of YAML task templates (env TASKER_TEMPLATES_DIR); empty uses the templates shipped in the binary")
	ref := fs.String("template", "", "the template: namespace/name[@version] (no version: the newest release)")
	taskContext := fs.String("context", "{}", "the task context, a JSON object")
	key := fs.String("idempotency-key", "", "de-duplication key: the same key returns the task it created")
	initiator := fs.String("initiator", cfg.User, "who asks for the task (env USER)")
	reason := fs.String("reason", "", "why the task is run")
	tags := fs.String("tags", "{}", "tags, a JSON object or array")
	jsonl := fs.String("jsonl", "", "create many tasks: read JSON lines from this file (- for standard input)")
	batch := fs.Int("batch", orchestration.MaxBatch, fmt.Sprintf("with -jsonl, tasks per transaction (1 to %d)", orchestration.MaxBatch))
	if err := parseCommand(fs, args, &cfg); err != nil {
		return err
	}
	if *jsonl != "" && *ref != "" {
		return usageError("run-task: give either -template or -jsonl, not both")
	}
	if *jsonl == "" && *ref == "" {
		return usageError("run-task: -template is required (namespace/name[@version], e.g. examples/linear_workflow), or -jsonl FILE")
	}
	if *batch < 1 || *batch > orchestration.MaxBatch {
		return usageError("run-task: -batch must be between 1 and %d, got %d", orchestration.MaxBatch, *batch)
	}
	// Text PostgreSQL cannot store, or that decoding would silently change, is refused
	// before anything is read or written (internal/textcheck).
	for flagName, v := range map[string]string{"-context": *taskContext, "-tags": *tags} {
		if p := textcheck.JSON(flagName, []byte(v)); p != nil {
			return errs.E(errs.Invalid, "run-task: invalid request: %s", p)
		}
	}
	for flagName, v := range map[string]string{"-idempotency-key": *key, "-initiator": *initiator, "-reason": *reason} {
		if reason := textcheck.String(v); reason != "" {
			return errs.E(errs.Invalid, "run-task: invalid request: %s %s", flagName, reason)
		}
	}
	reg, err := loadTemplates(cfg.TemplatesDir)
	if err != nil {
		return fmt.Errorf("loading templates: %w", err)
	}
	var reqs []orchestration.CreateTaskRequest
	var lines []int
	if *jsonl != "" {
		if reqs, lines, err = readTaskLines(*jsonl, *initiator); err != nil {
			return err
		}
		if errs := orchestration.CheckTasks(reg, reqs); len(errs) > 0 {
			return lineErrors(errs, lines, 0)
		}
	} else {
		namespace, name, version, err := template.ParseRef(*ref)
		if err != nil {
			return err
		}
		reqs = []orchestration.CreateTaskRequest{{
			Namespace: namespace, Name: name, Version: version,
			Context: json.RawMessage(*taskContext), Tags: json.RawMessage(*tags),
			Initiator: *initiator, SourceSystem: "cli", Reason: *reason, IdempotencyKey: *key,
		}}
	}
	gdb, err := openDatabase(ctx, cfg)
	if err != nil {
		return err
	}
	defer database.Close(gdb)
	svc := orchestration.NewService(gdb, reg)
	if *jsonl == "" {
		task, created, err := svc.CreateTask(ctx, reqs[0])
		if err != nil {
			return err
		}
		log.Info("run-task: task ready", "task_id", task.TaskID, "template", *ref, "created", created)
		fmt.Fprintln(out, task.TaskID)
		return nil
	}
	created := 0
	for start := 0; start < len(reqs); start += *batch {
		end := min(start+*batch, len(reqs))
		res, err := svc.CreateTasks(ctx, reqs[start:end])
		if err != nil {
			return fmt.Errorf("run-task: lines %d to %d: %w (the %d lines before were created)", lines[start], lines[end-1], err, start)
		}
		if len(res.Errors) > 0 {
			return fmt.Errorf("%w (line %d and after were not written; the %d task lines before it were created, their ids printed)",
				lineErrors(res.Errors, lines, start), lines[start], start)
		}
		for _, t := range res.Tasks {
			fmt.Fprintln(out, t.TaskID)
		}
		created += res.Created()
	}
	log.Info("run-task: tasks ready", "lines", len(reqs), "created", created)
	return nil
}

// taskLine is one line of run-task -jsonl.
type taskLine struct {
	Template       string          `json:"template"`
	Context        json.RawMessage `json:"context"`
	IdempotencyKey string          `json:"idempotencyKey"`
	Initiator      string          `json:"initiator"`
	Reason         string          `json:"reason"`
	Tags           json.RawMessage `json:"tags"`
}

// readTaskLines reads the requests of path ("-": standard input), one JSON object a line, and
// the line number of each. Blank lines are skipped. Every malformed line is reported, with its
// number, in one errs.Invalid.
func readTaskLines(path, initiator string) ([]orchestration.CreateTaskRequest, []int, error) {
	in := io.Reader(os.Stdin)
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, nil, fmt.Errorf("run-task: %w", err)
		}
		defer f.Close()
		in = f
	}
	var reqs []orchestration.CreateTaskRequest
	var lines []int
	var problems []lineProblem
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64*1024), 16<<20)
	for n := 1; sc.Scan(); n++ {
		text := bytes.TrimSpace(sc.Bytes())
		if len(text) == 0 {
			continue
		}
		if p := textcheck.JSON("", text); p != nil {
			problems = append(problems, lineProblem{n, p.Error()})
			continue
		}
		var l taskLine
		dec := json.NewDecoder(bytes.NewReader(text))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&l); err != nil {
			problems = append(problems, lineProblem{n, fmt.Sprintf("not a task line: %v", err)})
			continue
		}
		if l.Template == "" {
			problems = append(problems, lineProblem{n, "template is required (namespace/name[@version])"})
			continue
		}
		namespace, name, version, err := template.ParseRef(l.Template)
		if err != nil {
			problems = append(problems, lineProblem{n, fmt.Sprintf("template: %v", err)})
			continue
		}
		if l.Initiator == "" {
			l.Initiator = initiator
		}
		reqs = append(reqs, orchestration.CreateTaskRequest{Namespace: namespace, Name: name, Version: version,
			Context: l.Context, Tags: l.Tags, Initiator: l.Initiator, SourceSystem: "cli", Reason: l.Reason,
			IdempotencyKey: l.IdempotencyKey})
		lines = append(lines, n)
	}
	if err := sc.Err(); err != nil {
		return nil, nil, fmt.Errorf("run-task: reading %s: %w", path, err)
	}
	if len(problems) > 0 {
		return nil, nil, orchestration.Invalid("jsonl", reportLines(problems)...)
	}
	return reqs, lines, nil
}

// lineErrors reports batch errors by input line: errs index a batch starting at request offset.
// The error wraps the first item error (so errs.KindOf finds its kind).
func lineErrors(errs []orchestration.ItemError, lines []int, offset int) error {
	problems := make([]lineProblem, len(errs))
	for i, e := range errs {
		problems[i] = lineProblem{lines[offset+e.Index], e.Err.Error()}
	}
	return &lineError{msg: "run-task: " + strings.Join(reportLines(problems), "; "), first: errs[0].Err}
}

// lineProblem is what is wrong with one input line.
type lineProblem struct {
	line   int
	reason string
}

// maxReasons caps the distinct reasons reportLines spells out.
const maxReasons = 20

// reportLines words problems (in line order) for an error message: the lines that share a
// reason are named together, as ranges ("lines 1-3, 7: reason"), the reasons in the order of
// their first line. At most maxReasons reasons are spelled out; a last entry counts the lines
// of the others. So ten thousand lines naming one missing template make a one-line error, and
// every line with a problem is still accounted for.
func reportLines(problems []lineProblem) []string {
	var reasons []string
	byReason := map[string][]int{}
	for _, p := range problems {
		if _, seen := byReason[p.reason]; !seen {
			reasons = append(reasons, p.reason)
		}
		byReason[p.reason] = append(byReason[p.reason], p.line)
	}
	out := make([]string, 0, min(len(reasons), maxReasons+1))
	rest := 0
	for i, r := range reasons {
		if i >= maxReasons {
			rest += len(byReason[r])
			continue
		}
		out = append(out, lineRanges(byReason[r])+": "+r)
	}
	if rest > 0 {
		out = append(out, fmt.Sprintf("%d more lines with %d other problems", rest, len(reasons)-maxReasons))
	}
	return out
}

// maxRanges caps the runs of lines lineRanges spells out.
const maxRanges = 10

// lineRanges names ascending line numbers, runs of consecutive lines as ranges: "line 4",
// "lines 1-3, 7"; after maxRanges runs, the lines left are counted ("and 12 more").
func lineRanges(lines []int) string {
	if len(lines) == 1 {
		return "line " + strconv.Itoa(lines[0])
	}
	var b strings.Builder
	b.WriteString("lines ")
	runs := 0
	for i := 0; i < len(lines); {
		j := i
		for j+1 < len(lines) && lines[j+1] == lines[j]+1 {
			j++
		}
		if runs == maxRanges {
			fmt.Fprintf(&b, " and %d more", len(lines)-i)
			break
		}
		runs++
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(strconv.Itoa(lines[i]))
		if j > i {
			b.WriteString("-" + strconv.Itoa(lines[j]))
		}
		i = j + 1
	}
	return b.String()
}

type lineError struct {
	msg   string
	first error
}

func (e *lineError) Error() string { return e.msg }
func (e *lineError) Unwrap() error { return e.first }
