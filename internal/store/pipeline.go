package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/taskerhq/tasker/internal/database"
)

// recordSQL is RecordAndSettle's statement.
const recordSQL = `SELECT unnest(tasker_engine_record(?::bigint[], ?::jsonb, ?::bigint[], ?::bigint[]))`

// RecordAndClaim runs a busy batch's two statements as one transaction: RecordAndSettle
// (taskIDs, outcomes, busy), then ClaimAndStart (claim), whose snapshot, taken after the recording,
// holds the steps the recording made ready. It returns what each returns.
//
// On the engine pool (WithEngine), both statements are sent at once, in one round trip: a
// pipeline, which PostgreSQL runs as one implicit transaction, committed when the last
// statement has succeeded and rolled back whole when either fails (the claim is then not run).
// BEGIN, the two statements and COMMIT took four round trips, during which the engine's
// backend waited for the engine and the engine for it. Without an engine pool, the two run in
// an EngineTx.
//
// A pipeline that committed may still report an error (the connection lost before its
// answer): as with a COMMIT whose answer is lost, its claims are then left to their leases.
// The statements notify their transitions themselves; nothing else is written.
func (s *Store) RecordAndClaim(ctx context.Context, asyncCommit bool, taskIDs []int64, outcomes []HeldOutcome,
	busy Busy, claim ClaimRequest) (kept []string, claimed []ClaimedStep, err error) {
	p := s.engine
	if p == nil {
		err = s.EngineTx(ctx, asyncCommit, func(tx *Store) error {
			var err error
			if kept, err = tx.RecordAndSettle(ctx, taskIDs, outcomes, busy); err != nil {
				return err
			}
			claimed, err = tx.ClaimAndStart(ctx, claim)
			return err
		})
		if err != nil {
			return nil, nil, err
		}
		return kept, claimed, nil
	}
	if p.AsyncCommit != asyncCommit {
		return nil, nil, fmt.Errorf("engine pipeline: asynchronous commit %v, but the engine pool was opened with %v",
			asyncCommit, p.AsyncCommit)
	}
	payload, err := json.Marshal(outcomes)
	if err != nil {
		return nil, nil, fmt.Errorf("encoding attempt outcomes: %w", err)
	}
	c := newClaimScan(claim)
	claimStmt, claimArgs, ok := numberedNamed(c.query, c.args)
	if !ok {
		return nil, nil, errors.New("engine pipeline: the claim's parameters cannot be numbered")
	}
	b := &pgx.Batch{}
	b.Queue(numbered(recordSQL), database.Array[int64](taskIDs), string(payload),
		database.Array[int64](busy.Tasks), database.Array[int64](busy.Steps))
	b.Queue(claimStmt, claimArgs...)
	err = onEngineConn(ctx, p, func(conn *pgx.Conn) error {
		br := conn.SendBatch(ctx, b)
		var err error
		if kept, err = pgxRows(br, func(t *string) []any { return []any{t} }); err != nil {
			_ = br.Close()
			return err
		}
		if claimed, err = pgxRows(br, c.dest); err != nil {
			_ = br.Close()
			return err
		}
		return br.Close()
	})
	if err != nil {
		return nil, nil, translate(p.DB, err)
	}
	c.finish(claimed)
	return kept, claimed, nil
}

// pgxRows reads the rows of the next statement of br into one T each, filled through dest.
func pgxRows[T any](br pgx.BatchResults, dest func(*T) []any) ([]T, error) {
	rows, err := br.Query()
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		out = append(out, *new(T))
		if err := rows.Scan(dest(&out[len(out)-1])...); err != nil {
			return nil, err
		}
	}
	return out, rows.Err()
}

// onEngineConn runs fn on the pgx connection under one connection of the engine pool p.
func onEngineConn(ctx context.Context, p *database.EnginePool, fn func(conn *pgx.Conn) error) error {
	db, err := p.DB.DB()
	if err != nil {
		return err
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	return conn.Raw(func(driverConn any) error {
		c, ok := driverConn.(*stdlib.Conn)
		if !ok {
			return fmt.Errorf("engine pool: a connection of type %T, not pgx's", driverConn)
		}
		return fn(c.Conn())
	})
}
