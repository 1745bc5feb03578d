// Package feed turns the process's transition notifications (internal/events) into ordered
// streams of transition rows for GraphQL subscriptions.
//
// A notification is only a wake-up: on every wake-up a stream re-reads the transition table
// for rows it has not delivered, in id order, with its filter applied in SQL. So a stream
// started with an afterTransitionId first delivers what the client missed, in order, then live
// rows, with no gap and no duplicate; and a transition written by any process reaches it.
//
// Late arrivals. Transition ids come from identity sequences, so a transaction that commits
// later can hold a smaller id than a row already delivered. A stream therefore keeps, above a
// floor, the set of ids it has delivered, and every read asks for "id > floor and not
// delivered": a late row below the highest delivered id is still found and delivered (after
// rows with higher ids; it is the only case where delivery is out of id order). The floor
// advances past a delivered id once that id has been delivered for Options.SettleAfter
// (default 5s), or when more than Options.MaxTracked ids are tracked (catch-up of a long
// history). The guarantee is thus: a transaction that commits within SettleAfter of a
// higher-numbered transition being delivered is delivered too. The engine's transitions are
// short single-row transactions, well inside that window.
//
// A stream without afterTransitionId starts at the table's current end, treating the last
// Options.Lookback ids as already delivered, so late commits among them are still caught.
//
// A stream ends when its context ends; it never blocks the hub or other streams (the hub's
// wake-ups coalesce, and a slow client only delays its own stream).
package feed

import (
	"context"
	"log/slog"
	"slices"
	"time"

	"gorm.io/gorm"

	"github.com/taskerhq/tasker/internal/dbretry"
	"github.com/taskerhq/tasker/internal/events"
	"github.com/taskerhq/tasker/internal/models"
)

// Options tunes streams; the zero value gives the defaults.
type Options struct {
	// SettleAfter is how long a delivered id keeps being checked for late arrivals below it
	// (default 5s).
	SettleAfter time.Duration
	// MaxTracked caps the delivered ids tracked per stream (default 10,000).
	MaxTracked int
	// Lookback is how many ids below the table's end a fresh stream checks for late commits
	// (default 256).
	Lookback int64
	// Batch is the number of rows read per statement (default 500).
	Batch int
}

func (o Options) withDefaults() Options {
	if o.SettleAfter <= 0 {
		o.SettleAfter = 5 * time.Second
	}
	if o.MaxTracked <= 0 {
		o.MaxTracked = 10_000
	}
	if o.Lookback <= 0 {
		o.Lookback = 256
	}
	if o.Batch <= 0 {
		o.Batch = 500
	}
	return o
}

// Feed opens transition streams over one database and one events hub.
type Feed struct {
	db   *gorm.DB
	hub  *events.Hub
	log  *slog.Logger
	opts Options
	now  func() time.Time
}

// New returns a Feed reading db and woken by hub (which must be running).
func New(db *gorm.DB, hub *events.Hub, log *slog.Logger, opts Options) *Feed {
	return &Feed{db: db, hub: hub, log: log, opts: opts.withDefaults(), now: time.Now}
}

// StepTransitions streams step transitions (of task taskID when positive) with ids above
// *afterID (from the table's current end when afterID is nil) until ctx ends.
func (f *Feed) StepTransitions(ctx context.Context, taskID int64, afterID *int64) (<-chan *models.StepTransitionRecord, error) {
	src := source[models.StepTransitionRecord]{
		filter: func(ev events.Event) bool {
			return ev.Channel == events.ChannelStepTransitions && (taskID <= 0 || ev.TaskID == taskID)
		},
		read: func(ctx context.Context, floor int64, exclude []int64, limit int) ([]models.StepTransitionRecord, error) {
			return models.StepTransitionsAfter(ctx, f.db, floor, exclude, taskID, limit)
		},
		max: func(ctx context.Context) (int64, error) { return models.MaxStepTransitionID(ctx, f.db) },
		id:  func(r *models.StepTransitionRecord) int64 { return r.ID },
	}
	return start(ctx, f, src, afterID)
}

// TaskTransitions streams task transitions (of tasks in namespace when not empty) with ids
// above *afterID (from the table's current end when afterID is nil) until ctx ends.
func (f *Feed) TaskTransitions(ctx context.Context, namespace string, afterID *int64) (<-chan *models.TaskTransitionRecord, error) {
	src := source[models.TaskTransitionRecord]{
		filter: func(ev events.Event) bool { return ev.Channel == events.ChannelTaskTransitions },
		read: func(ctx context.Context, floor int64, exclude []int64, limit int) ([]models.TaskTransitionRecord, error) {
			return models.TaskTransitionsAfter(ctx, f.db, floor, exclude, namespace, limit)
		},
		max: func(ctx context.Context) (int64, error) { return models.MaxTaskTransitionID(ctx, f.db) },
		id:  func(r *models.TaskTransitionRecord) int64 { return r.ID },
	}
	return start(ctx, f, src, afterID)
}

// source is what a stream needs to know about one transition table.
type source[T any] struct {
	filter events.Filter
	read   func(ctx context.Context, floor int64, exclude []int64, limit int) ([]T, error)
	max    func(ctx context.Context) (int64, error)
	id     func(*T) int64
}

// start subscribes to the hub before the first read, so nothing committed after the read
// can be missed, sets the stream's starting point, and runs it on its own goroutine.
func start[T any](ctx context.Context, f *Feed, src source[T], afterID *int64) (<-chan *T, error) {
	sub := f.hub.Subscribe(src.filter)
	tr := &tracker{seen: map[int64]time.Time{}}
	if afterID != nil {
		tr.floor = *afterID
	} else {
		end, err := src.max(ctx)
		if err != nil {
			sub.Close()
			return nil, err
		}
		tr.floor = max(0, end-f.opts.Lookback)
		existing, err := src.read(ctx, tr.floor, nil, int(f.opts.Lookback))
		if err != nil {
			sub.Close()
			return nil, err
		}
		now := f.now()
		for i := range existing {
			if id := src.id(&existing[i]); id <= end {
				tr.seen[id] = now
			}
		}
	}
	out := make(chan *T)
	go func() {
		defer close(out)
		defer sub.Close()
		run(ctx, f, src, tr, sub, out)
	}()
	return out, nil
}

// Retry delays of a stream whose read failed (the database restarting, a connection cut).
const (
	firstRetry = 100 * time.Millisecond
	maxRetry   = 5 * time.Second
)

// run delivers rows until ctx ends. A failed read (the database is restarting, its connection
// was cut) does not end the stream: it keeps its place and its tracked ids and reads again
// after the hub's next wake-up (the hub wakes every subscriber once it has reconnected) or a
// growing, jittered delay (100ms to 5s), whichever comes first; the stream's failure streak is
// logged once, not per read (see internal/dbretry). So a client sees no gap and no duplicate
// across a database restart without having to resubscribe.
func run[T any](ctx context.Context, f *Feed, src source[T], tr *tracker, sub *events.Subscription, out chan<- *T) {
	streak := dbretry.New(f.log, "feed: reading transitions", firstRetry, maxRetry)
	for {
		for {
			rows, err := src.read(ctx, tr.floor, tr.exclude(), f.opts.Batch)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				if !dbretry.Wait(ctx, streak.Fail(err), sub.C) {
					return
				}
				continue
			}
			streak.Succeed()
			for i := range rows {
				select {
				case out <- &rows[i]:
				case <-ctx.Done():
					return
				}
				tr.seen[src.id(&rows[i])] = f.now()
			}
			tr.settle(f.now().Add(-f.opts.SettleAfter), f.opts.MaxTracked)
			if len(rows) < f.opts.Batch {
				break
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-sub.C:
		}
	}
}

// tracker remembers which ids above floor were delivered (or existed when the stream
// started), and since when.
type tracker struct {
	floor int64
	seen  map[int64]time.Time
}

// exclude lists the tracked ids, ascending.
func (t *tracker) exclude() []int64 {
	ids := make([]int64, 0, len(t.seen))
	for id := range t.seen {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// settle advances the floor over the ascending prefix of tracked ids seen before cutoff, and
// further while more than maxTracked ids are tracked.
func (t *tracker) settle(cutoff time.Time, maxTracked int) {
	ids := t.exclude()
	n := 0
	for n < len(ids) && (!t.seen[ids[n]].After(cutoff) || len(ids)-n > maxTracked) {
		n++
	}
	for _, id := range ids[:n] {
		delete(t.seen, id)
	}
	if n > 0 {
		t.floor = ids[n-1]
	}
}
