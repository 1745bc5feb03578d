package feed

import (
	"slices"
	"testing"
	"time"

	"github.com/taskerhq/tasker/internal/events"
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

type row struct{ id, task int64 }

func newMember(key int64, limit int, accept func(*row) bool) *member[row] {
	return &member[row]{key: key, accept: accept, limit: limit,
		signal: make(chan struct{}, 1), lagged: make(chan struct{})}
}

// The pump hands each row to the members that accept it without waiting: a member whose
// queue is full is dropped and told through lagged, and the others still get every row.
func TestPumpDropsOnlyTheMemberThatOverflows(t *testing.T) {
	p := &pump[row]{channel: "c", keyOf: func(ev events.Event) int64 { return ev.TaskID },
		id: func(r *row) int64 { return r.id }}
	r := &pumpRun{cancel: func() {}, ready: make(chan struct{})}
	p.cur = r
	slow := newMember(0, 2, func(*row) bool { return true })
	one := newMember(1, 10, func(x *row) bool { return x.task == 1 })
	p.members = map[*member[row]]struct{}{slow: {}, one: {}}
	p.count(0, 1)
	p.count(1, 1)
	if !p.wants(events.Event{Channel: "c", TaskID: 7}) {
		t.Fatal("a member watching every task must wake the pump for task 7")
	}

	p.deliver(r, []row{{1, 1}, {2, 2}, {3, 1}, {4, 1}})
	select {
	case <-slow.lagged:
	default:
		t.Fatal("the member whose queue overflowed was not told")
	}
	if _, ok := p.members[slow]; ok {
		t.Fatal("the member whose queue overflowed is still served")
	}
	var got []int64
	for _, x := range one.take() {
		got = append(got, x.id)
	}
	if !slices.Equal(got, []int64{1, 3, 4}) {
		t.Fatalf("the other member got %v, want [1 3 4]", got)
	}
	// Only task 1 is watched now.
	if p.wants(events.Event{Channel: "c", TaskID: 7}) || !p.wants(events.Event{Channel: "c", TaskID: 1}) {
		t.Fatal("wake-ups must follow the remaining members' tasks")
	}
	p.remove(one)
	if p.cur != nil || p.wants(events.Event{Channel: "c", TaskID: 1}) {
		t.Fatal("a pump without members must stop and want nothing")
	}
}
