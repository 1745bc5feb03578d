package main

import (
	"context"
	_ "embed"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// floorSQL creates bench_write_floor: the writes of a one-step task's drain, done by the
// database alone (see floor.sql).
//
//go:embed floor.sql
var floorSQL string

// floorSettings keep bench_write_floor's statements on their indexes: the drain starts on a
// fresh database whose tables have no statistics, and the procedure's plans are cached for
// the whole drain. JIT would compile the triggers' statements anew in every transaction.
var floorSettings = []string{
	"SET enable_seqscan = off", "SET enable_bitmapscan = off", "SET enable_sort = off",
	"SET enable_hashjoin = off", "SET jit = off",
}

// runFloor drains tasks one-step tasks of sc's template with bench_write_floor, from backends
// connections at once, each in batches of batch steps: the cost of the rows alone that
// tasker's engine writes for the same drain. The tasks are created as for runTasker; the
// rate, span and CPU times are measured the same way (the client is idle: it waits on CALL).
func runFloor(ctx context.Context, dbURL, tasker, templates string, sc scenario, tasks, batch, backends int) (result, error) {
	if sc.steps != 1 {
		return result{}, fmt.Errorf("the write floor drains one-step tasks; %s has %d steps a task", sc.template, sc.steps)
	}
	res, pool, err := createTasks(ctx, dbURL, tasker, templates, sc, tasks)
	if err != nil {
		return res, err
	}
	defer pool.Close()
	drain, err := drainFloor(ctx, pool, dbURL, batch, backends)
	if err != nil {
		return res, err
	}
	res.span, res.wall, res.busy, res.dbCPU = drain.span, drain.wall, drain.busy, drain.dbCPU
	return res, nil
}

// drainFloor creates bench_write_floor in dbURL (pool is on it) and drains the database's
// one-step tasks with it, from backends connections at once, in batches of batch; it checks
// that every task completed and returns the drain's span, wall time, busy share and the
// database's CPU time.
func drainFloor(ctx context.Context, pool *pgxpool.Pool, dbURL string, batch, backends int) (result, error) {
	var res result
	var tasks int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM tasker_tasks`).Scan(&tasks); err != nil {
		return res, err
	}
	if _, err := pool.Exec(ctx, floorSQL); err != nil {
		return res, fmt.Errorf("creating bench_write_floor: %w", err)
	}
	conns := make([]*pgx.Conn, backends)
	for i := range conns {
		var err error
		if conns[i], err = pgx.Connect(ctx, dbURL); err != nil {
			return res, err
		}
		defer conns[i].Close(context.Background())
		for _, s := range floorSettings {
			if _, err := conns[i].Exec(ctx, s); err != nil {
				return res, err
			}
		}
	}
	start := time.Now()
	cpu := readCPU()
	db0 := serverCPU()
	errs := make(chan error, backends)
	for i, c := range conns {
		go func() {
			_, err := c.Exec(ctx, "CALL bench_write_floor($1, $2)", batch, "floor:"+strconv.Itoa(i))
			errs <- err
		}()
	}
	var err error
	for range conns {
		if e := <-errs; e != nil && err == nil {
			err = fmt.Errorf("bench_write_floor: %w", e)
		}
	}
	if err != nil {
		return res, err
	}
	// Read while the backends live: a backend that exits takes its CPU time with it.
	res.wall = time.Since(start)
	res.busy = cpu.busySince()
	res.dbCPU = serverCPU() - db0
	var done int
	if err := pool.QueryRow(ctx, `SELECT count(*) FROM tasker_task_transitions WHERE most_recent AND to_state = 'complete'`).Scan(&done); err != nil {
		return res, err
	}
	if done != tasks {
		return res, fmt.Errorf("bench_write_floor completed %d of %d tasks", done, tasks)
	}
	res.span, err = span(ctx, pool, taskerSpanSQL)
	return res, err
}
