package feed

import (
	"testing"
	"time"
)

func TestTrackerSettlesOnlyOldContiguousPrefix(t *testing.T) {
	t0 := time.Unix(1000, 0)
	tr := &tracker{floor: 10, seen: map[int64]time.Time{
		11: t0, 12: t0, 14: t0.Add(10 * time.Second), 15: t0,
	}}
	tr.settle(t0.Add(time.Second), 100)
	// 11 and 12 are old: settled. 14 is recent, so 15 (old) stays tracked behind it.
	if tr.floor != 12 {
		t.Fatalf("floor = %d, want 12", tr.floor)
	}
	if got := tr.exclude(); len(got) != 2 || got[0] != 14 || got[1] != 15 {
		t.Fatalf("tracked = %v, want [14 15]", got)
	}
	// Over the cap, the oldest ids settle whatever their age.
	tr.settle(t0.Add(-time.Hour), 1)
	if tr.floor != 14 || len(tr.seen) != 1 {
		t.Fatalf("floor = %d, tracked %v; want 14 and one id", tr.floor, tr.exclude())
	}
}
