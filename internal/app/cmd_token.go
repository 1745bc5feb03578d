package app

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/taskerhq/tasker/internal/auth"
	"github.com/taskerhq/tasker/internal/config"
	"github.com/taskerhq/tasker/internal/database"
	"github.com/taskerhq/tasker/internal/migrate"
)

// tokenSubcommand is a subcommand of `tasker token`, with its synopsis and purpose.
type tokenSubcommand struct{ name, synopsis, about string }

// tokenSubcommands are the subcommands of `tasker token`.
var tokenSubcommands = []tokenSubcommand{
	{"create", "-role reader|operator|admin [-name n] [flags]",
		"Create an API token with a role and print it, alone, on the last line (it is shown only once)."},
	{"list", "[flags]", "List the API tokens: id, name, role, prefix, when created and revoked (never the tokens)."},
	{"revoke", "[flags] <id or token prefix>", "Revoke an API token: requests carrying it are refused from now on."},
}

// tokenUsage prints the usage of `tasker token`.
func tokenUsage(w io.Writer) {
	fmt.Fprintln(w, "usage: tasker token <create|list|revoke> [flags]\n\nManage API tokens.\n\nsubcommands:")
	for _, s := range tokenSubcommands {
		fmt.Fprintf(w, "  %-7s %s\n", s.name, s.about)
	}
	fmt.Fprintln(w, "\nrun 'tasker token <subcommand> -h' for its flags")
}

// runToken manages API tokens:
//
//	tasker token create -role reader|operator|admin [-name n]   prints the token on its last line
//	tasker token revoke <id or token prefix>
//	tasker token list
//
// It finds its database like every other command (resolveDatabaseURL): -database-url,
// DATABASE_URL, or the private cluster of the running server. It migrates first, so it also
// works on a database no server has started on yet.
func runToken(ctx context.Context, cfg config.Config, args []string, out io.Writer, _ *slog.Logger) error {
	if len(args) == 0 {
		tokenUsage(out)
		return usageError("token needs a subcommand: create, list or revoke")
	}
	sub, args := args[0], args[1:]
	if sub == "-h" || sub == "-help" || sub == "--help" || sub == "help" {
		tokenUsage(out)
		return flag.ErrHelp
	}
	i := slices.IndexFunc(tokenSubcommands, func(s tokenSubcommand) bool { return s.name == sub })
	if i < 0 {
		return usageError("unknown token subcommand %q: want create, list or revoke (run 'tasker token -h')", sub)
	}
	fs := newFlagSet("token "+sub, tokenSubcommands[i].synopsis, tokenSubcommands[i].about, out)
	databaseFlags(fs, &cfg, usesServer)
	var roleFlag, name string
	if sub == "create" {
		fs.StringVar(&roleFlag, "role", "", "reader, operator or admin (required)")
		fs.StringVar(&name, "name", "", "a name for the token, recorded with every change it makes")
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	var role auth.Role
	switch sub {
	case "create", "list":
		if err := noArgs(fs); err != nil {
			return err
		}
	case "revoke":
		if fs.NArg() != 1 {
			return usageError("token revoke needs exactly one argument: the token's id or a prefix of the token")
		}
	}
	if sub == "create" {
		if roleFlag == "" {
			return usageError("token create: -role is required (reader, operator or admin)")
		}
		r, err := auth.ParseRole(roleFlag)
		if err != nil {
			return usageError("token create -role: %w", err)
		}
		role = r
	}

	gdb, err := openDatabase(ctx, cfg)
	if err != nil {
		return err
	}
	defer database.Close(gdb)
	if _, err := migrate.Up(ctx, database.SQL(gdb)); err != nil {
		return err
	}
	store := auth.NewStore(gdb)

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
