package app

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/taskerhq/tasker/internal/config"
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

// parseFlags parses args with fs. -h prints the usage and returns flag.ErrHelp (main exits 0);
// a bad flag returns an error naming the command and pointing to its -h.
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
		return fmt.Errorf("%s: %w (run 'tasker %s -h' for its flags)", fs.Name(), err, fs.Name())
	}
	return nil
}

// databaseFlags registers -database-url and -data-dir on fs, writing into cfg. Every command
// that reads or writes the database registers them with this function and finds its database
// with resolveDatabaseURL.
func databaseFlags(fs *flag.FlagSet, cfg *config.Config) {
	fs.StringVar(&cfg.DatabaseURL, "database-url", cfg.DatabaseURL,
		"PostgreSQL URL (env DATABASE_URL); empty uses the private cluster of the tasker server running with -data-dir")
	fs.StringVar(&cfg.DataDir, "data-dir", cfg.DataDir,
		"data folder of the tasker server whose private cluster to use when no database URL is given (env TASKER_DATA_DIR)")
}

// resolveDatabaseURL finds the database of a command: -database-url, else DATABASE_URL (the
// flag's default), else the private cluster of the tasker server running with cfg.DataDir,
// found through its record in that folder (internal/runstate). With none of them, the error
// says that no server is running there and how to start one.
func resolveDatabaseURL(ctx context.Context, cfg config.Config) (string, error) {
	if cfg.DatabaseURL != "" {
		return cfg.DatabaseURL, nil
	}
	s, err := runstate.Find(ctx, cfg.DataDir)
	if err != nil {
		return "", err
	}
	return s.DatabaseURL, nil
}

// noArgs refuses positional arguments after the flags of a command that takes none.
func noArgs(fs *flag.FlagSet) error {
	if fs.NArg() > 0 {
		return fmt.Errorf("%s: unexpected arguments %q (run 'tasker %s -h')", fs.Name(), strings.Join(fs.Args(), " "), fs.Name())
	}
	return nil
}
