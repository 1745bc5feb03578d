// Command tasker is a workflow orchestration server: tasks made of steps joined in a DAG, run by
// workers on PostgreSQL, read through live and materialized SQL projections.
//
// Usage:
//
//	tasker serve     migrate, then serve HTTP (health, API) and run workers
//	tasker migrate   apply every pending migration to DATABASE_URL and print what was applied
//
// Run "tasker help" for every subcommand and its flags.
package main

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
	"migrate":  {summary: "apply every pending migration to DATABASE_URL and print what was applied", run: runMigrate},
	"serve":    {summary: "migrate, then serve /healthz, /readyz and the API on PORT (default 8080)", run: runServe},
	"worker":   {summary: "run workers only (no HTTP) against DATABASE_URL, to scale step execution out", run: runWorker},
	"token":    {summary: "manage API tokens: create -role reader|operator|admin [-name n], revoke <id|prefix>, list", run: runToken},
	"run-task": {summary: "create a task from a template (-template ns/name[@version] -context JSON) and print its id", run: runRunTask},
	"demo":     {summary: "serve, and create demo tasks that succeed, retry and fail (same flags as serve)", run: runDemo},
	"seed":     {summary: "generate realistic workflow data of a chosen size into DATABASE_URL", run: runSeed},
}

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := dispatch(ctx, os.Args[1:], os.Stdout, log); err != nil {
		stop()
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0) // -h printed the flags
		}
		fmt.Fprintln(os.Stderr, "tasker:", err)
		os.Exit(1)
	}
}

func dispatch(ctx context.Context, args []string, out io.Writer, log *slog.Logger) error {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(out)
		return nil
	}
	cmd, ok := commands[args[0]]
	if !ok {
		usage(os.Stderr)
		return fmt.Errorf("unknown command %q", args[0])
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
