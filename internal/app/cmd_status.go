package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/taskerhq/tasker/internal/config"
	"github.com/taskerhq/tasker/internal/errs"
	"github.com/taskerhq/tasker/internal/runstate"
)

// runStatus prints where the tasker server running with the data folder and its private
// database are (from the server's record, internal/runstate) and whether they answer: the
// server process, HTTP /healthz and a database ping, then how many tasks are in each state.
// It fails (exit 1) when there is no record or any of the checks fails.
func runStatus(ctx context.Context, cfg config.Config, args []string, out io.Writer, _ *slog.Logger) error {
	fset := newFlagSet("status", "[flags]",
		"Print where the tasker server running with the data folder and its database are (data folder, "+
			"HTTP URL, database URL, pids) and whether they answer; exit 1 when they do not.", out)
	dataDirFlag(fset, &cfg, "data folder of the server")
	if err := parseCommand(fset, args, &cfg); err != nil {
		return err
	}
	dataDir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return err
	}
	st, err := runstate.Read(dataDir)
	if errors.Is(err, fs.ErrNotExist) {
		fmt.Fprintf(out, "data folder  %s\nserver       not running (no %s)\n", dataDir, runstate.FileName)
		return errs.E(errs.Unavailable, "%w with data folder %s: start one with `make run` (or `tasker serve`)", runstate.ErrNoServer, dataDir)
	}
	if err != nil {
		return err
	}

	var failures []string
	check := func(what string, err error) string {
		if err != nil {
			failures = append(failures, what+": "+err.Error())
			return "NOT ANSWERING: " + err.Error()
		}
		return "answering"
	}
	var procErr error
	if !runstate.ProcessAlive(st.ServerPID) {
		procErr = fmt.Errorf("process %d has exited (the record is left from a server that died)", st.ServerPID)
	}
	httpState := check("server", errors.Join(procErr, checkHealth(ctx, st.HTTPURL)))
	dbErr := runstate.Ping(ctx, st.DatabaseURL)
	dbState := check("database", dbErr)

	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "data folder\t%s\n", st.DataDir)
	fmt.Fprintf(tw, "server\t%s (pid %d, started %s): %s\n", st.HTTPURL, st.ServerPID, st.StartedAt.Local().Format(time.DateTime), httpState)
	fmt.Fprintf(tw, "playground\t%s/\n", st.HTTPURL)
	fmt.Fprintf(tw, "database\t%s (postgres pid %d, cluster in %s): %s\n", st.DatabaseURL, st.PostgresPID, st.PostgresDataDir, dbState)
	if dbErr == nil {
		tasks, err := taskStates(ctx, st.DatabaseURL)
		if err != nil {
			failures = append(failures, "counting tasks: "+err.Error())
			tasks = "cannot count them: " + err.Error()
		}
		fmt.Fprintf(tw, "tasks\t%s\n", tasks)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(failures) > 0 {
		return errs.E(errs.Unavailable, "the server recorded in %s does not answer: %s", runstate.Path(dataDir), strings.Join(failures, "; "))
	}
	return nil
}

// checkHealth asks the server's /healthz, within 3 seconds.
func checkHealth(ctx context.Context, baseURL string) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, baseURL+"/healthz", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("/healthz answered %s", resp.Status)
	}
	return nil
}

// taskStates counts the tasks in each current state, e.g. "3 (2 complete, 1 in_progress)" (a
// task without a transition is pending).
func taskStates(ctx context.Context, url string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return "", err
	}
	defer func() { _ = conn.Close(context.Background()) }()
	rows, err := conn.Query(ctx, `SELECT coalesce(tt.to_state, 'pending') AS state, count(*)
		FROM tasker_tasks t
		LEFT JOIN tasker_task_transitions tt ON tt.task_id = t.task_id AND tt.most_recent
		GROUP BY 1 ORDER BY 1`)
	if err != nil {
		return "", err
	}
	var parts []string
	total := int64(0)
	for rows.Next() {
		var state string
		var n int64
		if err := rows.Scan(&state, &n); err != nil {
			return "", err
		}
		total += n
		parts = append(parts, fmt.Sprintf("%d %s", n, state))
	}
	if err := rows.Err(); err != nil {
		return "", err
	}
	if total == 0 {
		return "none yet (create one with: tasker run-task -template examples/linear_workflow)", nil
	}
	return fmt.Sprintf("%d (%s)", total, strings.Join(parts, ", ")), nil
}
