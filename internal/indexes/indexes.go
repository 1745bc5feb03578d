// Package indexes sets the secondary indexes of tables aside during a bulk load and builds
// them again afterwards. Building an index once over a million rows costs a fraction of
// maintaining it row by row as they are inserted.
//
// Only indexes that enforce nothing are ever set aside: no primary key, unique or exclusion
// index, and none that backs a constraint. The data therefore stays exactly as constrained
// while they are away; only the queries that would use them run slower. Each index set aside
// is recorded in tasker_deferred_indexes (migration 00060) in the transaction that drops it,
// and its record is deleted in the transaction that builds it again. A load that dies
// half-way leaves its indexes recorded, and the next Restore, which every `tasker migrate`,
// `serve`, `worker` and `seed` runs, builds them. Several processes may restore at once:
// each recorded index is built by exactly one of them.
package indexes

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
)

// Index is one index set aside: its name, its table and the statement that builds it.
type Index struct {
	Name, Table, Definition string
}

// createPrefix starts every definition pg_get_indexdef gives for the indexes Defer drops
// (non-unique ones); Restore builds them with IF NOT EXISTS, so a build that committed its
// index but not its record's deletion cannot fail the next one.
const createPrefix = "CREATE INDEX "

// Defer drops every index of tables (in the current schema) that enforces nothing and
// records it, all in one transaction, and returns what it dropped, largest table first. The
// drop waits for the transactions that use the tables (DROP INDEX locks its table), and
// queries started afterwards plan without the dropped indexes until Restore.
func Defer(ctx context.Context, db *sql.DB, tables []string) ([]Index, error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("setting indexes aside: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	rows, err := tx.QueryContext(ctx, `
		SELECT i.relname, t.relname, pg_get_indexdef(i.oid)
		FROM pg_index x
		JOIN pg_class i ON i.oid = x.indexrelid
		JOIN pg_class t ON t.oid = x.indrelid
		WHERE t.relnamespace = current_schema()::regnamespace
		  AND t.relname = ANY($1)
		  AND NOT x.indisunique AND NOT x.indisprimary AND NOT x.indisexclusion
		  AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.oid)
		ORDER BY pg_relation_size(t.oid) DESC, t.relname, i.relname`, tables)
	if err != nil {
		return nil, fmt.Errorf("listing indexes of %v: %w", tables, err)
	}
	var out []Index
	for rows.Next() {
		var ix Index
		if err := rows.Scan(&ix.Name, &ix.Table, &ix.Definition); err != nil {
			rows.Close()
			return nil, fmt.Errorf("listing indexes of %v: %w", tables, err)
		}
		out = append(out, ix)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing indexes of %v: %w", tables, err)
	}
	for _, ix := range out {
		if !strings.HasPrefix(ix.Definition, createPrefix) {
			return nil, fmt.Errorf("index %s: unexpected definition %q", ix.Name, ix.Definition)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO tasker_deferred_indexes (index_name, table_name, definition)
			VALUES ($1, $2, $3)`, ix.Name, ix.Table, ix.Definition); err != nil {
			return nil, fmt.Errorf("recording index %s: %w", ix.Name, err)
		}
		if _, err := tx.ExecContext(ctx, "DROP INDEX "+pgx.Identifier{ix.Name}.Sanitize()); err != nil {
			return nil, fmt.Errorf("dropping index %s: %w", ix.Name, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("setting indexes aside: %w", err)
	}
	return out, nil
}

// Restore builds every recorded index, on up to conns connections at once (largest table
// first), each in a transaction that also deletes its record, and returns how many it built.
// An index whose record another process holds is left to that process. A database without
// the record table (older than migration 00060) has nothing to restore. With nothing recorded,
// the usual case at every start, it costs two one-row queries.
func Restore(ctx context.Context, db *sql.DB, conns int) (int, error) {
	var present, recorded bool
	if err := db.QueryRowContext(ctx, `SELECT to_regclass('tasker_deferred_indexes') IS NOT NULL`).Scan(&present); err != nil {
		return 0, fmt.Errorf("looking for indexes to restore: %w", err)
	}
	if present {
		if err := db.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM tasker_deferred_indexes)`).Scan(&recorded); err != nil {
			return 0, fmt.Errorf("looking for indexes to restore: %w", err)
		}
	}
	if !recorded {
		return 0, nil
	}
	var (
		mu    sync.Mutex
		built int
		errs  = make([]error, max(1, conns))
		wg    sync.WaitGroup
	)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				ok, err := restoreOne(ctx, db)
				if err != nil || !ok {
					errs[i] = err
					return
				}
				mu.Lock()
				built++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return built, errors.Join(errs...)
}

// restoreOne builds one recorded index that no other transaction holds and deletes its
// record, in one transaction; it reports false when there is none left to take.
func restoreOne(ctx context.Context, db *sql.DB) (bool, error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return false, fmt.Errorf("restoring an index: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	var name, def string
	err = tx.QueryRowContext(ctx, `
		SELECT index_name, definition FROM tasker_deferred_indexes
		ORDER BY pg_relation_size(to_regclass(table_name)) DESC NULLS LAST, index_name
		LIMIT 1 FOR UPDATE SKIP LOCKED`).Scan(&name, &def)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("restoring an index: %w", err)
	}
	if !strings.HasPrefix(def, createPrefix) {
		return false, fmt.Errorf("restoring index %s: unexpected definition %q", name, def)
	}
	// This connection's build is one of several running at once: it sorts in memory where it
	// can and starts no parallel workers of its own.
	if _, err := tx.ExecContext(ctx, `SELECT set_config('maintenance_work_mem', '256MB', true),
		set_config('max_parallel_maintenance_workers', '0', true)`); err != nil {
		return false, fmt.Errorf("restoring index %s: %w", name, err)
	}
	if _, err := tx.ExecContext(ctx, createPrefix+"IF NOT EXISTS "+strings.TrimPrefix(def, createPrefix)); err != nil {
		return false, fmt.Errorf("restoring index %s: %w", name, err)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM tasker_deferred_indexes WHERE index_name = $1`, name); err != nil {
		return false, fmt.Errorf("restoring index %s: %w", name, err)
	}
	if err := tx.Commit(); err != nil {
		return false, fmt.Errorf("restoring index %s: %w", name, err)
	}
	return true, nil
}
