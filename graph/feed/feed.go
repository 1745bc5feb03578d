// Package feed turns the process's transition notifications (internal/events) into ordered
// streams of transition rows for GraphQL subscriptions.
//
// A notification is only a wake-up: rows are always re-read from the transition tables, in
// id order. So a stream started with an afterTransitionId first delivers what the client
// missed, in order, then live rows, with no gap and no duplicate; and a transition written by
// any process reaches it.
//
// Multiplexing. The live part of every stream of one table is served by one reader per
// process (a pump): on each wake-up it reads, in one statement per page, every transition
// above its own horizon (all tasks, all namespaces) and hands each row to the streams whose
// filter accepts it (task id, namespace), in memory. So the database work per transition
// does not grow with the number of subscribers nor with the number of distinct filters; a
// pump runs only while it has streams, and is woken only by notifications one of them wants.
//
// Joining. A stream first catches up on its own, reading its filter's rows above its cursor
// in pages (so a client resuming far in the past costs only itself), until a page comes back
// short. It then joins the pump and, once the pump's horizon is set, reads its filter's rows
// once more: that read sees every row the pump had passed before the stream joined, and every
// row above it comes from the pump. Rows it gets twice (from its own read and the pump) are
// delivered once: each stream tracks the ids it delivered, as below.
//
// Late arrivals. Transition ids come from identity sequences, so a transaction that commits
// later can hold a smaller id than a row already delivered. Every reader (each stream during
// its catch-up, and each pump) therefore keeps, above a floor, the set of ids it has read, and
// asks for "id > floor and not read": a late row below the highest delivered id is still found
// and delivered (after rows with higher ids; it is the only case where delivery is out of id
// order). The floor advances past an id once that id has been read for Options.SettleAfter
// (default 5s), or when more than Options.MaxTracked ids are tracked (catch-up of a long
// history). The guarantee is thus: a transaction that commits within SettleAfter of a
// higher-numbered transition being read is delivered too. The engine's transitions are short
// single-row transactions, well inside that window. A pump starts at the table's end less
// Options.Lookback ids, so late commits just below the end when it starts are caught too (the
// rows of that range it hands over again are dropped by the streams that have them).
//
// A stream without afterTransitionId starts at the table's current end, treating the last
// Options.Lookback ids as already delivered, so late commits among them are still caught.
//
// Slow clients. A pump never waits for a stream: each stream has a buffer of Options.Buffer
// rows (default 4,096), allocated as it fills. A stream whose buffer is full (its client does
// not read) is closed with an errs.SlowSubscriber error, recorded for EndError, rather than losing
// rows silently: the client resumes with afterTransitionId. A stream also ends when its
// context ends.
//
// Database failures. A failed read (the database restarting, a connection cut) ends nothing:
// the reader keeps its place and its tracked ids and reads again after the hub's next wake-up
// (the hub wakes every subscriber once it has reconnected) or a growing, jittered delay (100ms
// to 5s), whichever comes first; its failure streak is logged once, not per read (see
// internal/dbretry). So a client sees no gap and no duplicate across a database restart.
package feed

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"gorm.io/gorm"

	"github.com/taskerhq/tasker/internal/dbretry"
	"github.com/taskerhq/tasker/internal/errs"
	"github.com/taskerhq/tasker/internal/events"
	"github.com/taskerhq/tasker/internal/models"
)

// Options tunes streams; the zero value gives the defaults.
type Options struct {
	// SettleAfter is how long a read id keeps being checked for late arrivals below it
	// (default 5s).
	SettleAfter time.Duration
	// MaxTracked caps the read ids tracked per reader (default 10,000).
	MaxTracked int
	// Lookback is how many ids below the table's end a fresh stream or a starting pump checks
	// for late commits (default 256).
	Lookback int64
	// Batch is the number of rows read per statement (default 500).
	Batch int
	// Buffer is how many rows a stream may fall behind the pump before it is closed with a
	// errs.SlowSubscriber error (default 4,096: eight pages of a burst).
	Buffer int
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
	if o.Buffer <= 0 {
		o.Buffer = 4096
	}
	return o
}

// slowSubscriber is the error that ends a stream whose client fell buffer rows behind.
func slowSubscriber(buffer int) error {
	return errs.E(errs.SlowSubscriber, "the subscription fell %d transitions behind because its client reads too slowly, and was closed: "+
		"subscribe again with afterTransitionId set to the last id received", buffer)
}

// Feed opens transition streams over one database and one events hub.
type Feed struct {
	db    *gorm.DB
	hub   *events.Hub
	log   *slog.Logger
	opts  Options
	now   func() time.Time
	live  atomic.Int64 // streams caught up and served by a pump
	steps *pump[models.StepTransitionRecord]
	tasks *pump[models.TaskTransitionRecord]
}

// New returns a Feed reading db and woken by hub (which must be running).
func New(db *gorm.DB, hub *events.Hub, log *slog.Logger, opts Options) *Feed {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f := &Feed{db: db, hub: hub, log: log, opts: opts.withDefaults(), now: time.Now}
	f.steps = &pump[models.StepTransitionRecord]{
		f: f, channel: events.ChannelStepTransitions,
		keyOf: func(ev events.Event) int64 { return ev.TaskID },
		read: func(ctx context.Context, floor int64, exclude []int64, limit int) ([]models.StepTransitionRecord, error) {
			return models.StepTransitionsAfter(ctx, db, floor, exclude, 0, limit)
		},
		max: func(ctx context.Context) (int64, error) { return models.MaxStepTransitionID(ctx, db) },
		id:  func(r *models.StepTransitionRecord) int64 { return r.ID },
	}
	f.tasks = &pump[models.TaskTransitionRecord]{
		f: f, channel: events.ChannelTaskTransitions,
		read: func(ctx context.Context, floor int64, exclude []int64, limit int) ([]models.TaskTransitionRecord, error) {
			return models.TaskTransitionsWithNamespaceAfter(ctx, db, floor, exclude, limit)
		},
		max: func(ctx context.Context) (int64, error) { return models.MaxTaskTransitionID(ctx, db) },
		id:  func(r *models.TaskTransitionRecord) int64 { return r.ID },
	}
	return f
}

// Subscribers counts the live streams: caught up, joined to their pump and not ended. A
// stream counted here receives every later transition it accepts.
func (f *Feed) Subscribers() int { return int(f.live.Load()) }

// StepTransitions streams step transitions (of task taskID when positive) with ids above
// *afterID (from the table's current end when afterID is nil) until ctx ends.
func (f *Feed) StepTransitions(ctx context.Context, taskID int64, afterID *int64) (<-chan *models.StepTransitionRecord, error) {
	m := &member[models.StepTransitionRecord]{
		key:    max(taskID, 0),
		accept: func(r *models.StepTransitionRecord) bool { return taskID <= 0 || r.TaskID == taskID },
		read: func(ctx context.Context, floor int64, exclude []int64, limit int) ([]models.StepTransitionRecord, error) {
			return models.StepTransitionsAfter(ctx, f.db, floor, exclude, taskID, limit)
		},
	}
	return open(ctx, f, f.steps, m, afterID)
}

// TaskTransitions streams task transitions (of tasks in namespace when not empty) with ids
// above *afterID (from the table's current end when afterID is nil) until ctx ends.
func (f *Feed) TaskTransitions(ctx context.Context, namespace string, afterID *int64) (<-chan *models.TaskTransitionRecord, error) {
	m := &member[models.TaskTransitionRecord]{
		accept: func(r *models.TaskTransitionRecord) bool { return namespace == "" || r.Namespace == namespace },
		read: func(ctx context.Context, floor int64, exclude []int64, limit int) ([]models.TaskTransitionRecord, error) {
			return models.TaskTransitionsAfter(ctx, f.db, floor, exclude, namespace, limit)
		},
	}
	return open(ctx, f, f.tasks, m, afterID)
}

// member is one stream: its filter, its own reader (for catching up) and the queue of rows
// the pump handed over, at most limit long (allocated as it fills, not up front).
type member[T any] struct {
	key    int64 // the task id it watches for wake-ups, 0 for any
	accept func(*T) bool
	read   func(ctx context.Context, floor int64, exclude []int64, limit int) ([]T, error)
	limit  int

	mu     sync.Mutex
	queue  []*T
	signal chan struct{} // room for one: rows were queued
	lagged chan struct{} // closed when the queue overflowed; the pump has dropped the member
}

// offer queues row without waiting, reporting whether the queue had room; on overflow it
// closes lagged.
func (m *member[T]) offer(row *T) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.queue) >= m.limit {
		close(m.lagged)
		return false
	}
	m.queue = append(m.queue, row)
	select {
	case m.signal <- struct{}{}:
	default:
	}
	return true
}

// take empties the queue.
func (m *member[T]) take() []*T {
	m.mu.Lock()
	defer m.mu.Unlock()
	rows := m.queue
	m.queue = nil
	return rows
}

// open sets the stream's starting point (reading the table's end when afterID is nil) and
// runs it on its own goroutine.
func open[T any](ctx context.Context, f *Feed, p *pump[T], m *member[T], afterID *int64) (<-chan *T, error) {
	m.limit = f.opts.Buffer
	m.signal = make(chan struct{}, 1)
	m.lagged = make(chan struct{})
	tr := &tracker{seen: map[int64]time.Time{}}
	if afterID != nil {
		tr.floor = *afterID
	} else {
		end, err := p.max(ctx)
		if err != nil {
			return nil, err
		}
		tr.floor = max(0, end-f.opts.Lookback)
		existing, err := m.read(ctx, tr.floor, nil, int(f.opts.Lookback))
		if err != nil {
			return nil, err
		}
		now := f.now()
		for i := range existing {
			if id := p.id(&existing[i]); id <= end {
				tr.seen[id] = now
			}
		}
	}
	out := make(chan *T)
	go func() {
		defer close(out)
		s := &stream[T]{f: f, p: p, m: m, tr: tr, out: out}
		if err := s.run(ctx); err != nil {
			recordEnd(ctx, err)
		}
	}()
	return out, nil
}

// stream delivers one member's rows to out.
type stream[T any] struct {
	f   *Feed
	p   *pump[T]
	m   *member[T]
	tr  *tracker
	out chan<- *T
}

// errStopped: the stream's context ended.
var errStopped = context.Canceled

// run catches up alone, joins the pump, reads once more, then forwards the pump's rows, until
// ctx ends (nil) or the client falls behind (an errs.SlowSubscriber error).
func (s *stream[T]) run(ctx context.Context) error {
	defer s.p.leave(s.m)
	if err := s.catchUp(ctx); err != nil {
		return s.ended(err)
	}
	ready := s.p.join(s.m)
	select {
	case <-ctx.Done():
		return nil
	case <-s.m.lagged:
		return s.ended(s.slow())
	case <-ready:
	}
	if err := s.catchUp(ctx); err != nil {
		return s.ended(err)
	}
	s.f.live.Add(1)
	defer s.f.live.Add(-1)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.m.lagged:
			return s.ended(s.slow())
		case <-s.m.signal:
			for _, row := range s.m.take() {
				if err := s.send(ctx, row); err != nil {
					return s.ended(err)
				}
			}
			s.tr.settle(s.f.now().Add(-s.f.opts.SettleAfter), s.f.opts.MaxTracked)
		}
	}
}

// ended maps the end of the context to a clean end.
func (s *stream[T]) ended(err error) error {
	if err == errStopped {
		return nil
	}
	return err
}

func (s *stream[T]) slow() error {
	s.f.log.Info("feed: closing a subscription whose client fell behind", "buffer", s.f.opts.Buffer)
	return slowSubscriber(s.f.opts.Buffer)
}

// catchUp reads the member's rows above its floor, in pages, until a page comes back short.
func (s *stream[T]) catchUp(ctx context.Context) error {
	streak := dbretry.New(s.f.log, "feed: reading transitions", firstRetry, maxRetry)
	var reconnected *events.Subscription // from the first failure: the hub's reconnection ends a wait
	defer func() {
		if reconnected != nil {
			reconnected.Close()
		}
	}()
	for {
		rows, err := s.m.read(ctx, s.tr.floor, s.tr.exclude(), s.f.opts.Batch)
		if err != nil {
			if ctx.Err() != nil {
				return errStopped
			}
			if reconnected == nil {
				reconnected = s.f.hub.Subscribe(events.OnlyReconnects)
			}
			if !dbretry.Wait(ctx, streak.Fail(err), reconnected.C) {
				return errStopped
			}
			continue
		}
		streak.Succeed()
		for i := range rows {
			if err := s.send(ctx, &rows[i]); err != nil {
				return err
			}
		}
		s.tr.settle(s.f.now().Add(-s.f.opts.SettleAfter), s.f.opts.MaxTracked)
		if len(rows) < s.f.opts.Batch {
			return nil
		}
	}
}

// send delivers row unless it was already delivered (or is below the settled floor).
func (s *stream[T]) send(ctx context.Context, row *T) error {
	id := s.p.id(row)
	if _, dup := s.tr.seen[id]; dup || id <= s.tr.floor {
		return nil
	}
	select {
	case s.out <- row:
	case <-ctx.Done():
		return errStopped
	case <-s.m.lagged:
		return s.slow()
	}
	s.tr.seen[id] = s.f.now()
	return nil
}

// Retry delays of a reader whose read failed (the database restarting, a connection cut):
// exponential with jitter (internal/dbretry), its failure streak logged once.
const (
	firstRetry = 100 * time.Millisecond
	maxRetry   = 5 * time.Second
)

// pump reads one transition table for every stream of the process and fans the rows out.
type pump[T any] struct {
	f       *Feed
	channel string
	keyOf   func(events.Event) int64 // the task a notification concerns; nil: unknown
	read    func(ctx context.Context, floor int64, exclude []int64, limit int) ([]T, error)
	max     func(ctx context.Context) (int64, error)
	id      func(*T) int64

	mu      sync.Mutex
	members map[*member[T]]struct{}
	cur     *pumpRun                      // nil while there is no member
	keys    atomic.Pointer[map[int64]int] // members per watched task id (0: any), read by wants
}

// pumpRun is one period during which a pump has members.
type pumpRun struct {
	cancel context.CancelFunc
	ready  chan struct{} // closed once the run's horizon is set
}

// wants is the pump's hub filter: a notification on its channel that some member watches.
// It runs on the hub's goroutine and takes no lock.
func (p *pump[T]) wants(ev events.Event) bool {
	if ev.Channel != p.channel {
		return false
	}
	keys := p.keys.Load()
	if keys == nil || len(*keys) == 0 {
		return false
	}
	return p.keyOf == nil || (*keys)[0] > 0 || (*keys)[p.keyOf(ev)] > 0
}

// join adds m to the members, starting a run when it is the first, and returns the channel
// closed once the run's horizon is set.
func (p *pump[T]) join(m *member[T]) <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.members == nil {
		p.members = map[*member[T]]struct{}{}
	}
	p.members[m] = struct{}{}
	p.count(m.key, 1)
	if p.cur == nil {
		ctx, cancel := context.WithCancel(context.Background())
		r := &pumpRun{cancel: cancel, ready: make(chan struct{})}
		p.cur = r
		// Subscribed before the run reads anything: no notification after its reads is missed.
		sub := p.f.hub.Subscribe(p.wants)
		go p.run(ctx, r, sub)
	}
	return p.cur.ready
}

// leave removes m (when still a member), stopping the run when it was the last.
func (p *pump[T]) leave(m *member[T]) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.remove(m)
}

// remove is leave with p.mu held.
func (p *pump[T]) remove(m *member[T]) {
	if _, ok := p.members[m]; !ok {
		return
	}
	delete(p.members, m)
	p.count(m.key, -1)
	if len(p.members) == 0 && p.cur != nil {
		p.cur.cancel()
		p.cur = nil
	}
}

// count adds delta to the members watching key, copying the map (wants reads it unlocked).
func (p *pump[T]) count(key int64, delta int) {
	next := map[int64]int{}
	if old := p.keys.Load(); old != nil {
		for k, n := range *old {
			next[k] = n
		}
	}
	if next[key] += delta; next[key] <= 0 {
		delete(next, key)
	}
	p.keys.Store(&next)
}

// run sets the run's horizon, then reads every new row after each wake-up and hands it to
// the members, until the run is cancelled (its last member left).
func (p *pump[T]) run(ctx context.Context, r *pumpRun, sub *events.Subscription) {
	defer sub.Close()
	f := p.f
	tr := &tracker{seen: map[int64]time.Time{}}
	streak := dbretry.New(f.log, "feed: reading transitions", firstRetry, maxRetry)
	for {
		end, err := p.max(ctx)
		if err == nil {
			tr.floor = max(0, end-f.opts.Lookback)
			break
		}
		if ctx.Err() != nil || !dbretry.Wait(ctx, streak.Fail(err), sub.C) {
			return
		}
	}
	close(r.ready)
	for {
		rows, err := p.read(ctx, tr.floor, tr.exclude(), f.opts.Batch)
		if err != nil {
			if ctx.Err() != nil || !dbretry.Wait(ctx, streak.Fail(err), sub.C) {
				return
			}
			continue
		}
		streak.Succeed()
		p.deliver(r, rows)
		now := f.now()
		for i := range rows {
			tr.seen[p.id(&rows[i])] = now
		}
		tr.settle(now.Add(-f.opts.SettleAfter), f.opts.MaxTracked)
		if len(rows) == f.opts.Batch {
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-sub.C:
		}
	}
}

// deliver hands every row to the members that accept it, in order, without waiting: a member
// whose buffer is full is removed and told through its lagged channel.
func (p *pump[T]) deliver(r *pumpRun, rows []T) {
	if len(rows) == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cur != r {
		return // stopped: its members left
	}
	for i := range rows {
		row := &rows[i]
		for m := range p.members {
			if m.accept(row) && !m.offer(row) {
				p.remove(m)
			}
		}
	}
}

// tracker remembers which ids above floor were read (or existed when the stream started),
// and since when.
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

// endKey is the context key of an endRecord.
type endKey struct{}

// endRecord holds the error a stream ended with, until EndError takes it.
type endRecord struct {
	mu  sync.Mutex
	err error
}

// WithEndRecord returns a context under which a stream opened records the error it ends with
// (an errs.SlowSubscriber error), for EndError.
func WithEndRecord(ctx context.Context) context.Context {
	return context.WithValue(ctx, endKey{}, &endRecord{})
}

// EndError returns the error a stream opened under ctx (see WithEndRecord) ended with, once:
// later calls return nil. It returns nil while the stream runs or when it ended cleanly.
func EndError(ctx context.Context) error {
	rec, _ := ctx.Value(endKey{}).(*endRecord)
	if rec == nil {
		return nil
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	err := rec.err
	rec.err = nil
	return err
}

func recordEnd(ctx context.Context, err error) {
	if rec, _ := ctx.Value(endKey{}).(*endRecord); rec != nil {
		rec.mu.Lock()
		rec.err = err
		rec.mu.Unlock()
	}
}
