package app

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/taskerhq/tasker/internal/errs"
)

// TestCommandLineUsage runs the binary: bare tasker prints the usage (with the exit codes)
// and exits 2, an unknown command exits 2, every command and token subcommand answers -h with
// its own usage on stdout and exits 0, and a command line the command cannot run exits 1
// with "tasker: VALIDATION: " and what is wrong.
func TestCommandLineUsage(t *testing.T) {
	t.Parallel()
	bin := buildTasker(t)
	dataDir := t.TempDir()
	if _, stderr, code := runCLI(t, bin, dataDir); code != 2 || !strings.Contains(stderr, "usage: tasker <command>") ||
		!strings.Contains(stderr, "exit codes:") {
		t.Errorf("bare tasker: exit %d, stderr %q; want 2 and the usage with the exit codes", code, stderr)
	}
	if _, stderr, code := runCLI(t, bin, dataDir, "nope"); code != 2 || !strings.Contains(stderr, `tasker: VALIDATION: unknown command "nope"`) {
		t.Errorf("unknown command: exit %d, stderr %q; want 2 and the command named", code, stderr)
	}
	for _, args := range [][]string{
		{"serve"}, {"demo"}, {"worker"}, {"migrate"}, {"run-task"}, {"seed"}, {"status"},
		{"token"}, {"token", "create"}, {"token", "list"}, {"token", "revoke"},
	} {
		name := strings.Join(args, " ")
		out, stderr, code := runCLI(t, bin, dataDir, append(args, "-h")...)
		if code != 0 || !strings.HasPrefix(out, "usage: tasker "+name+" ") || stderr != "" {
			t.Errorf("%s -h: exit %d, stdout %q, stderr %q; want 0 and its usage", name, code, out, stderr)
		}
	}
	for args, want := range map[string]string{
		"token create":       "tasker: VALIDATION: token create: -role is required (reader, operator or admin)",
		"run-task":           "tasker: VALIDATION: run-task: -template is required",
		"run-task -nope":     "tasker: VALIDATION: run-task: flag provided but not defined: -nope (run 'tasker run-task -h' for its flags)",
		"token rotate":       `tasker: VALIDATION: unknown token subcommand "rotate"`,
		"status extra-args":  "tasker: VALIDATION: status: unexpected arguments",
		"worker -workers -1": "tasker: VALIDATION: worker: -workers -1 is negative",
		"worker -pprof":      "tasker: VALIDATION: worker: -pprof (TASKER_PPROF=on) serves profiles on -metrics-listen, which is not set",
	} {
		if _, stderr, code := runCLI(t, bin, dataDir, strings.Fields(args)...); code != 1 || !strings.Contains(stderr, want) {
			t.Errorf("tasker %s: exit %d, stderr %q; want 1 and %q", args, code, stderr, want)
		}
	}
}

// Every command's -h lists the flags it reads: those that use the database find it with
// -database-url and -data-dir, defined once (databaseFlags); the long-running ones take
// -shutdown-timeout.
func TestEveryCommandHelpListsItsFlags(t *testing.T) {
	t.Parallel()
	want := map[string][]string{
		"serve":        {"-database-url", "empty starts a private cluster", "-data-dir", "-listen", "-shutdown-timeout", "-database-replica-urls", "-postgres-bin-dir"},
		"demo":         {"-database-url", "empty starts a private cluster", "-data-dir", "-listen", "-shutdown-timeout"},
		"worker":       {"-database-url", "empty uses the private cluster of the tasker server", "-data-dir", "-workers", "-metrics-listen", "-pprof", "-shutdown-timeout"},
		"migrate":      {"-database-url", "empty uses the private cluster of the tasker server", "-data-dir"},
		"run-task":     {"-database-url", "empty uses the private cluster of the tasker server", "-data-dir", "-template", "-jsonl", "-templates-dir", "-initiator"},
		"seed":         {"-database-url", "empty uses the private cluster of the tasker server", "-data-dir", "-steps", "-shapes"},
		"status":       {"-data-dir"},
		"token":        {"create", "list", "revoke"},
		"token create": {"-database-url", "empty uses the private cluster of the tasker server", "-data-dir", "-role", "-name"},
		"token list":   {"-database-url", "empty uses the private cluster of the tasker server", "-data-dir"},
		"token revoke": {"usage: tasker token revoke [flags] <id or token prefix>", "-database-url", "empty uses the private cluster of the tasker server", "-data-dir"},
	}
	for name, flags := range want {
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), append(strings.Fields(name), "-h"), &stdout, &stderr)
		if code != exitOK || stderr.Len() > 0 {
			t.Errorf("%s -h: exit %d, stderr %q", name, code, stderr.String())
		}
		for _, f := range flags {
			if !strings.Contains(stdout.String(), f) {
				t.Errorf("%s -h lacks %s:\n%s", name, f, stdout.String())
			}
		}
	}
}

// A failure prints one line through errs.Describe: a domain error with its code and the
// context the command added, an internal error whole, for the operator.
func TestDescribeFailures(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("run-task: %w", errs.E(errs.NotFound, "task template examples/nope not found")),
			"tasker: NOT_FOUND: run-task: task template examples/nope not found"},
		{usageError("token create: -role is required"), "tasker: VALIDATION: token create: -role is required"},
		{fmt.Errorf("connecting: %w", errors.New("dial tcp 127.0.0.1:1: connection refused")),
			"tasker: connecting: dial tcp 127.0.0.1:1: connection refused"},
		{fmt.Errorf("reading: %w", context.Canceled), "tasker: CANCELLED: reading: context canceled"},
	} {
		if got := describe(c.err); got != c.want {
			t.Errorf("describe(%v) = %q, want %q", c.err, got, c.want)
		}
	}
}

// A configuration the environment gets wrong refuses every command before it starts, naming
// the variable.
func TestBadEnvironmentRefusesToStart(t *testing.T) {
	t.Parallel()
	cmd := exec.Command(buildTasker(t), "migrate")
	cmd.Env = append(os.Environ(), "TASKER_REFRESH_SCHEDULE=whenever")
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != exitFailure || !strings.Contains(string(out), `tasker: VALIDATION: TASKER_REFRESH_SCHEDULE="whenever"`) {
		t.Fatalf("migrate with a bad TASKER_REFRESH_SCHEDULE: %v\n%s", err, out)
	}
}
