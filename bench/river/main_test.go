package main

import (
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
