package app

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/taskerhq/tasker/internal/config"
	"github.com/taskerhq/tasker/internal/errs"
	"github.com/taskerhq/tasker/internal/runstate"
)

// newFlagSet returns the flag set of `tasker <name>`. Its Usage prints the synopsis, about and
// the flags to out; parse it with parseFlags.
func newFlagSet(name, synopsis, about string, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // parseFlags reports errors itself
	fs.Usage = func() {
		fmt.Fprintf(out, "usage: tasker %s %s\n\n%s\n", name, synopsis, about)
		n := 0
		fs.VisitAll(func(*flag.Flag) { n++ })
		if n > 0 {
			fmt.Fprintln(out, "\nflags:")
			fs.SetOutput(out)
			fs.PrintDefaults()
			fs.SetOutput(io.Discard)
		}
	}
	return fs
}

// usageError is the error of a command line the command cannot run: a domain error of kind
// Invalid, so that it prints as "tasker: VALIDATION: …".
func usageError(format string, args ...any) error { return errs.E(errs.Invalid, format, args...) }

// parseFlags parses args with fs. -h prints the usage and returns flag.ErrHelp (Main exits 0);
// a bad flag returns a usage error naming the command and pointing to its -h.
func parseFlags(fs *flag.FlagSet, args []string) error {
	helpOnly := fs.Usage
	fs.Usage = func() {} // printed below, where a bad flag and -h differ
	err := fs.Parse(args)
	fs.Usage = helpOnly
	switch {
	case err == flag.ErrHelp:
		fs.Usage()
		return err
	case err != nil:
		return usageError("%s: %v (run 'tasker %s -h' for its flags)", fs.Name(), err, fs.Name())
	}
	return nil
}

// parseCommand parses the flags of a command that takes no positional argument into cfg (its
// flags write there), then checks the whole configuration (config.Finish).
func parseCommand(fs *flag.FlagSet, args []string, cfg *config.Config) error {
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	if err := cfg.Finish(); err != nil {
		return usageError("%s: %v", fs.Name(), err)
	}
	return nil
}

// clusterUse says what an empty database URL means to a command.
type clusterUse bool

const (
	// usesServer: the private cluster of the tasker server running with the data folder.
	usesServer clusterUse = false
	// startsCluster: a private cluster the command starts in the data folder (tasker serve).
	startsCluster clusterUse = true
)

// databaseFlags registers -database-url and -data-dir on fs, writing into cfg: every command
// that reads or writes the database registers them here. A command that uses the server's
// cluster finds its database with resolveDatabaseURL.
func databaseFlags(fs *flag.FlagSet, cfg *config.Config, use clusterUse) {
	empty := "empty uses the private cluster of the tasker server running with -data-dir"
	dataDir := "data folder of the tasker server whose private cluster to use when no database URL is given"
	if use == startsCluster {
		empty = "empty starts a private cluster"
		dataDir = "local state; the private cluster lives in its postgres/ folder"
	}
	fs.StringVar(&cfg.DatabaseURL, "database-url", cfg.DatabaseURL, "PostgreSQL URL (env DATABASE_URL); "+empty)
	dataDirFlag(fs, cfg, dataDir)
}

// dataDirFlag registers -data-dir on fs, writing into cfg; about says what the folder is to
// the command.
func dataDirFlag(fs *flag.FlagSet, cfg *config.Config, about string) {
	fs.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir, about+" (env TASKER_DATA_DIR)")
}

// shutdownFlag registers -shutdown-timeout on fs, writing into cfg; about says what it bounds.
func shutdownFlag(fs *flag.FlagSet, cfg *config.Config, about string) {
	fs.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", cfg.ShutdownTimeout, about+" (env TASKER_SHUTDOWN_TIMEOUT)")
}

// resolveDatabaseURL finds the database of a command: -database-url, else DATABASE_URL (the
// flag's default), else the private cluster of the tasker server running with cfg.DataDir,
// found through its record in that folder (internal/runstate). With none of them, the error
// (of kind Unavailable) says that no server is running there and how to start one.
func resolveDatabaseURL(ctx context.Context, cfg config.Config) (string, error) {
	if cfg.DatabaseURL != "" {
		return cfg.DatabaseURL, nil
	}
	s, err := runstate.Find(ctx, cfg.DataDir)
	if err != nil {
		return "", errs.E(errs.Unavailable, "%w", err)
	}
	return s.DatabaseURL, nil
}

// noArgs refuses positional arguments after the flags of a command that takes none.
func noArgs(fs *flag.FlagSet) error {
	if fs.NArg() > 0 {
		return usageError("%s: unexpected arguments %q (run 'tasker %s -h')", fs.Name(), strings.Join(fs.Args(), " "), fs.Name())
	}
	return nil
}
