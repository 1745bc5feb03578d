// Package app is the tasker command line: it parses each subcommand's flags, reads the
// configuration once, and wires and runs the long-lived parts (HTTP server, workers, refresher,
// listener) under one lifecycle. The binary's main (server.go at the module root) only hands
// it the arguments.
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
	"sort"
	"syscall"

	"github.com/taskerhq/tasker/internal/config"
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

// exitUsage is the exit code of a command line that names no command or an unknown one.
const exitUsage = 2

// errUnknownCommand is returned by dispatch for a command that does not exist.
var errUnknownCommand = errors.New("unknown command")

// Main runs the tasker command line with args (without the program name) and returns the
// process's exit code: 0 on success and after -h, 2 for a missing or unknown command, 1 for
// any other failure, whose message goes to stderr prefixed "tasker:". SIGINT and SIGTERM
// cancel the command's context, which stops long-running commands in order.
func Main(args []string) int {
	if len(args) < 1 {
		usage(os.Stderr)
		return exitUsage
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := dispatch(ctx, args, os.Stdout, log); err != nil {
		stop()
		if errors.Is(err, flag.ErrHelp) {
			return 0 // -h printed the usage
		}
		fmt.Fprintln(os.Stderr, "tasker:", err)
		if errors.Is(err, errUnknownCommand) {
			return exitUsage
		}
		return 1
	}
	return 0
}

func dispatch(ctx context.Context, args []string, out io.Writer, log *slog.Logger) error {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "-help" || args[0] == "--help" {
		usage(out)
		return nil
	}
	cmd, ok := commands[args[0]]
	if !ok {
		usage(os.Stderr)
		return fmt.Errorf("%w %q", errUnknownCommand, args[0])
	}
	cfg, err := config.FromEnv()
	if err != nil {
		return err
	}
	return cmd.run(ctx, cfg, args[1:], out, log)
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
	fmt.Fprintln(w, "\nrun 'tasker <command> -h' for a command's flags")
}
