package main

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
)

// runAt is a run of rate units per second over one second.
func runAt(rate int) result { return result{units: rate, span: time.Second} }

func TestMedianAndRatioCell(t *testing.T) {
	river := []result{runAt(100), runAt(300), runAt(200)}
	tasker := []result{runAt(50), runAt(90), runAt(80)}
	if got := median(river).rate(); got != 200 {
		t.Errorf("median of River's runs: %v, want 200", got)
	}
	if got := median([]result{runAt(4), runAt(1)}).rate(); got != 1 {
		t.Errorf("median of two runs: %v, want the slower, 1", got)
	}
	// Median rates 200 and 80; the rounds' own ratios 0.50, 0.30, 0.40.
	if got, want := ratioCell(river, tasker), "0.40 (0.30-0.50)"; got != want {
		t.Errorf("ratioCell = %q, want %q", got, want)
	}
	if got, want := ratioCell(river[:1], tasker[:1]), "0.50"; got != want {
		t.Errorf("one round: ratioCell = %q, want %q", got, want)
	}
	// Two processes against one: the second setting over the first, round by round.
	if got, want := ratioCellOf(tasker, river, "x"), "2.50x (2.00-3.33x)"; got != want {
		t.Errorf("ratioCellOf = %q, want %q", got, want)
	}
}

// TestRateCellSplitsTheCPUTime: a run's CPU time per unit is shown, then split into the
// database's and the client's when the database's is known.
func TestRateCellSplitsTheCPUTime(t *testing.T) {
	r := result{units: 1000, span: time.Second, wall: 2 * time.Second, busy: 0.5,
		dbCPU: 200 * time.Millisecond, clientCPU: 50 * time.Millisecond}
	got := rateCell(r, "steps/s")
	want := fmt.Sprintf("1,000 steps/s (1.0 s; wall 2.0 s; CPU 50%%, %.0f µs a unit: database 200, client 50)",
		0.5*float64(runtime.NumCPU())*2*1e6/1000)
	if got != want {
		t.Errorf("rateCell = %q, want %q", got, want)
	}
	r.dbCPU = 0 // a server on another machine
	if got := rateCell(r, "steps/s"); strings.Contains(got, "database") {
		t.Errorf("rateCell = %q, with no CPU time of the database's", got)
	}
}

// TestProcessCPUReadsThisProcess: the CPU time /proc gives for this process grows with work,
// and a process that does not exist has none.
func TestProcessCPUReadsThisProcess(t *testing.T) {
	before := processCPU("self")
	deadline := time.Now().Add(100 * time.Millisecond)
	n := 0
	for time.Now().Before(deadline) {
		n++
	}
	if after := processCPU("self"); after <= before || n == 0 {
		t.Errorf("CPU time of this process: %v before a busy loop, %v after", before, after)
	}
	if got := processCPU("0"); got != 0 {
		t.Errorf("CPU time of process 0: %v, want 0", got)
	}
}
