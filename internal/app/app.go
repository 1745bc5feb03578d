// Package app is the tasker command line. Main reads the configuration once
// (internal/config: the environment, then the command's flags), runs the command, and prints
// a failure as one line through errs.Describe, the mapping the GraphQL API uses too; the exit
// codes are in the usage (exitOK, exitFailure, exitUsage). serve, demo and worker run their
// long-lived parts (tracing, the private cluster, the pool, the events hub, the refresher,
// retention, the workers, the HTTP server) under one lifecycle (lifecycle.go): started in
// order, stopped in reverse under one deadline, the failure of any part stopping the others.
// The binary's main (server.go at the module root) only hands Main the arguments.
package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"sort"
	"syscall"

	"github.com/taskerhq/tasker/internal/config"
	"github.com/taskerhq/tasker/internal/errs"
)

// command is one subcommand of the tasker binary.
type command struct {
	summary string
	run     func(ctx context.Context, cfg config.Config, args []string, out io.Writer, log *slog.Logger) error
}

var commands = map[string]command{
	"migrate":  {summary: "apply every pending migration to the database and print what was applied", run: runMigrate},
	"serve":    {summary: "migrate, then serve the API, playground and health on PORT (default 8080) and run workers", run: runServe},
	"worker":   {summary: "run workers only (no HTTP) against the database, to scale step execution out", run: runWorker},
	"token":    {summary: "manage API tokens: create -role reader|operator|admin [-name n], list, revoke <id|prefix>", run: runToken},
	"run-task": {summary: "create a task from a template (-template ns/name[@version] -context JSON) and print its id", run: runRunTask},
	"demo":     {summary: "serve, and create one task of every example template (same flags as serve)", run: runDemo},
	"seed":     {summary: "generate realistic workflow data of a chosen size into the database", run: runSeed},
	"status":   {summary: "print where the running server and its database are, and whether they answer", run: runStatus},
}

// Exit codes of the tasker binary.
const (
	// exitOK: the command did what it was asked, or -h printed its usage.
	exitOK = 0
	// exitFailure: the command failed; the reason is on stderr (see describe).
	exitFailure = 1
	// exitUsage: no command was named, or an unknown one.
	exitUsage = 2
)

// errUnknownCommand is returned by dispatch for a command that does not exist.
var errUnknownCommand = errors.New("unknown command")

// Main runs the tasker command line with args (without the program name) and returns the
// process's exit code (exitOK, exitFailure, exitUsage). SIGINT and SIGTERM cancel the
// command's context, which stops long-running commands in order.
func Main(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return run(ctx, args, os.Stdout, os.Stderr)
}

// run is Main with its context and outputs: the log goes to stderr, and so does a failure,
// as one line (describe).
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) < 1 {
		usage(stderr)
		return exitUsage
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	err := dispatch(ctx, args, stdout, stderr, log)
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp), // -h printed the usage
		errors.Is(err, errStopWhileStarting): // a server stopped before it had started
		return exitOK
	case errors.Is(err, errUnknownCommand):
		fmt.Fprintln(stderr, describe(err))
		return exitUsage
	default:
		fmt.Fprintln(stderr, describe(err))
		return exitFailure
	}
}

// describe is the line a failed command prints on stderr, through errs.Describe like every
// error a GraphQL client gets: a domain error prints its code, then the error with the
// context the command added ("tasker: NOT_FOUND: run-task: …"); an internal error prints the
// whole error, unmasked, for the operator whose process it is ("tasker: connecting to …").
func describe(err error) string {
	code, _ := errs.Describe(err)
	if errs.KindOf(err) == errs.Internal {
		return "tasker: " + err.Error()
	}
	return "tasker: " + code + ": " + err.Error()
}

func dispatch(ctx context.Context, args []string, stdout, stderr io.Writer, log *slog.Logger) error {
	if args[0] == "help" || args[0] == "-h" || args[0] == "-help" || args[0] == "--help" {
		usage(stdout)
		return nil
	}
	cmd, ok := commands[args[0]]
	if !ok {
		usage(stderr)
		return errs.E(errs.Invalid, "%w %q", errUnknownCommand, args[0])
	}
	cfg, err := config.FromEnv()
	if err != nil {
		return usageError("%w", err)
	}
	if cfg.GCPercent > 0 {
		debug.SetGCPercent(cfg.GCPercent)
	}
	return cmd.run(ctx, cfg, args[1:], stdout, log)
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: tasker <command> [flags]\n\ncommands:")
	names := make([]string, 0, len(commands))
	for name := range commands {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		fmt.Fprintf(w, "  %-10s %s\n", name, commands[name].summary)
	}
	fmt.Fprint(w, `
run 'tasker <command> -h' for a command's flags; a flag that names an environment variable
(env X) overrides it.

exit codes:
  0  done (or -h printed the usage)
  1  the command failed; stderr ends with "tasker: CODE: message" for a refusal (CODE is
     VALIDATION, NOT_FOUND, CONFLICT, INVALID_TRANSITION, SERVICE_UNAVAILABLE or CANCELLED,
     as in the GraphQL API) or "tasker: message" for an internal error
  2  no command, or an unknown one
`)
}
