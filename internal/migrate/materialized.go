package migrate

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/pressly/goose/v3"

	"github.com/taskerhq/tasker/db"
)

// materializedMigration installs one version of a materialized read model from
// db/materialized in one transaction: it runs the file (which creates the view WITH DATA and
// its unique index), registers the view in tasker_read_model_state and logs the initial fill in
// tasker_read_model_refreshes as a successful refresh with trigger "migration", so a new
// database reports every read model as fresh. Its down step runs down.
type materializedMigration struct {
	version int64
	name    string // the view's name, the key of its tasker_read_model_state row
	up      string // path inside db.Materialized
	down    string // literal SQL run on the way down
}

// materializedMigrations lists, in version order, the migrations that install materialized
// read models. They start at version 20, after the tables they read and after
// 00006_read_model_refreshes.sql, which creates the freshness tables.
var materializedMigrations = []materializedMigration{
	{
		version: 20,
		name:    "tasker_task_status_summaries",
		up:      "materialized/tasker_task_status_summaries_v01.sql",
		down: `DROP MATERIALIZED VIEW tasker_task_status_summaries;
			DELETE FROM tasker_read_model_state WHERE name = 'tasker_task_status_summaries'`,
	},
	{
		version: 21,
		name:    "tasker_step_performance",
		up:      "materialized/tasker_step_performance_v01.sql",
		down: `DROP MATERIALIZED VIEW tasker_step_performance;
			DELETE FROM tasker_read_model_state WHERE name = 'tasker_step_performance'`,
	},
	{
		version: 22,
		name:    "tasker_hourly_throughput",
		up:      "materialized/tasker_hourly_throughput_v01.sql",
		down: `DROP MATERIALIZED VIEW tasker_hourly_throughput;
			DELETE FROM tasker_read_model_state WHERE name = 'tasker_hourly_throughput'`,
	},
}

func materializedGoMigrations() []*goose.Migration {
	out := make([]*goose.Migration, 0, len(materializedMigrations))
	for _, mm := range materializedMigrations {
		mm := mm
		up := &goose.GoFunc{RunTx: func(ctx context.Context, tx *sql.Tx) error {
			body, err := db.Materialized.ReadFile(mm.up)
			if err != nil {
				return fmt.Errorf("reading %s: %w", mm.up, err)
			}
			var started string
			if err := tx.QueryRowContext(ctx, `SELECT clock_timestamp()::text`).Scan(&started); err != nil {
				return fmt.Errorf("reading the clock: %w", err)
			}
			if _, err := tx.ExecContext(ctx, string(body)); err != nil {
				return fmt.Errorf("installing %s: %w", mm.up, err)
			}
			_, err = tx.ExecContext(ctx, fmt.Sprintf(`
				WITH fill AS (
					SELECT $1::timestamptz AS started_at, clock_timestamp() AS finished_at,
					       (SELECT count(*) FROM %s) AS row_count
				), logged AS (
					INSERT INTO tasker_read_model_refreshes
						(view_name, trigger, started_at, finished_at, duration_ms, row_count, refreshed_by)
					SELECT $2, 'migration', started_at, finished_at,
					       extract(epoch FROM finished_at - started_at) * 1000, row_count, 'migration'
					FROM fill
				)
				INSERT INTO tasker_read_model_state AS s (name, last_refreshed_at, last_data_as_of,
					last_duration_ms, last_row_count, last_attempt_at)
				SELECT $2, finished_at, started_at, extract(epoch FROM finished_at - started_at) * 1000,
				       row_count, started_at
				FROM fill
				ON CONFLICT (name) DO UPDATE SET stale_since = NULL, last_refreshed_at = EXCLUDED.last_refreshed_at,
					last_data_as_of = EXCLUDED.last_data_as_of, last_duration_ms = EXCLUDED.last_duration_ms,
					last_row_count = EXCLUDED.last_row_count, last_attempt_at = EXCLUDED.last_attempt_at,
					last_error = NULL`, mm.name), started, mm.name)
			if err != nil {
				return fmt.Errorf("registering read model %s: %w", mm.name, err)
			}
			return nil
		}}
		down := &goose.GoFunc{RunTx: func(ctx context.Context, tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, mm.down)
			return err
		}}
		out = append(out, goose.NewGoMigration(mm.version, up, down))
	}
	return out
}
