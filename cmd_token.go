package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"text/tabwriter"
	"time"

	"github.com/taskerhq/tasker/internal/auth"
	"github.com/taskerhq/tasker/internal/config"
	"github.com/taskerhq/tasker/internal/database"
	"github.com/taskerhq/tasker/internal/migrate"
)

// runToken manages API tokens:
//
//	tasker token create --role reader|operator|admin [--name n]   prints the token on its last line
//	tasker token revoke <id or token prefix>
//	tasker token list
//
// It uses DATABASE_URL, or the private cluster of the data dir when DATABASE_URL is unset
// (only while no server is using that cluster). It migrates first, so it also works on a
// database no server has started on yet.
func runToken(ctx context.Context, cfg config.Config, args []string, out io.Writer, log *slog.Logger) error {
	if len(args) == 0 {
		return errors.New("token needs a subcommand: create, revoke or list")
	}
	sub, args := args[0], args[1:]
	fs := flag.NewFlagSet("token "+sub, flag.ContinueOnError)
	fs.StringVar(&cfg.DatabaseURL, "database-url", cfg.DatabaseURL, "PostgreSQL URL (env DATABASE_URL); empty uses the private cluster of the data dir")
	var roleFlag, name string
	switch sub {
	case "create":
		fs.StringVar(&roleFlag, "role", "", "reader, operator or admin (required)")
		fs.StringVar(&name, "name", "", "a name for the token, recorded with every change it makes")
	case "revoke", "list":
	default:
		return fmt.Errorf("unknown token subcommand %q: want create, revoke or list", sub)
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	var role auth.Role
	switch sub {
	case "create":
		if fs.NArg() > 0 {
			return fmt.Errorf("token create: unexpected arguments %q", fs.Args())
		}
		r, err := auth.ParseRole(roleFlag)
		if err != nil {
			return fmt.Errorf("token create --role: %w", err)
		}
		role = r
	case "revoke":
		if fs.NArg() != 1 {
			return errors.New("token revoke needs exactly one argument: the token's id or a prefix of the token")
		}
	case "list":
		if fs.NArg() > 0 {
			return fmt.Errorf("token list: unexpected arguments %q", fs.Args())
		}
	}

	dbURL := cfg.DatabaseURL
	if dbURL == "" {
		cluster, err := startPostgres(ctx, cfg, log)
		if err != nil {
			return fmt.Errorf("%w (set DATABASE_URL, or stop the server using the private cluster)", err)
		}
		defer func() {
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
			defer cancel()
			_ = cluster.Stop(sctx)
		}()
		dbURL = cluster.URL()
	}
	gdb, err := database.Open(ctx, dbURL, database.Options{MaxOpenConns: 2})
	if err != nil {
		return err
	}
	defer database.Close(gdb)
	if _, err := migrate.Up(ctx, database.SQL(gdb)); err != nil {
		return err
	}
	store := auth.NewStore(database.SQL(gdb))

	switch sub {
	case "create":
		t, secret, err := store.Create(ctx, role, name)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "created API token %d (name %q, role %s, prefix %s); it is shown only once:\n", t.ID, t.Name, t.Role, t.Prefix)
		fmt.Fprintln(out, secret)
	case "revoke":
		t, err := store.Revoke(ctx, fs.Arg(0))
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "revoked API token %d (name %q, role %s, prefix %s)\n", t.ID, t.Name, t.Role, t.Prefix)
	case "list":
		tokens, err := store.List(ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tNAME\tROLE\tPREFIX\tCREATED\tREVOKED")
		for _, t := range tokens {
			revoked := "-"
			if t.RevokedAt != nil {
				revoked = t.RevokedAt.UTC().Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", t.ID, t.Name, t.Role, t.Prefix, t.CreatedAt.UTC().Format(time.RFC3339), revoked)
		}
		return tw.Flush()
	}
	return nil
}
