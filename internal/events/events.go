// Package events fans PostgreSQL notifications out to the goroutines of one process. A Hub
// holds the process's single LISTEN connection (reconnecting on its own after a database
// restart, with exponential backoff from 100ms to 2s while the database stays unreachable,
// and the failure streak logged once: see internal/dbretry) and wakes subscribers whose filter
// matches a notification.
//
// A notification is a wake-up, never the data: subscribers re-read the transition tables, so a
// missed or coalesced notification loses nothing. After every (re)connection the hub wakes
// every subscriber, since notifications sent while it was disconnected are gone.
package events

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgxlisten"

	"github.com/taskerhq/tasker/internal/dbretry"
)

// The channels the database publishes on (db/migrations/00003_transition_events.sql; since
// 00034 a transition notification lists the rows of one inserting statement, up to 50, and
// the hub turns it into one Event per row; since 00063 the engine's transactions send the
// notifications of their transitions themselves, in the same format, up to 50 rows of the
// transaction each: internal/store's notify.go).
const (
	ChannelStepTransitions = "tasker_step_transitions"
	ChannelTaskTransitions = "tasker_task_transitions"
	ChannelTasksCreated    = "tasker_tasks_created"
	// ChannelTokensRevoked carries {"id": api_token_id} when an API token is revoked or
	// deleted (db/migrations/00009_api_token_revocations.sql).
	ChannelTokensRevoked = "tasker_api_tokens_revoked"
)

// Channels lists every channel a Hub listens on.
var Channels = []string{ChannelStepTransitions, ChannelTaskTransitions, ChannelTasksCreated, ChannelTokensRevoked}

// Event is a decoded notification. Reconnect events (Channel == "") carry nothing else: they
// mean "anything may have happened, catch up".
type Event struct {
	Channel string
	ID      int64  `json:"id"`
	TaskID  int64  `json:"task_id"`
	StepID  int64  `json:"step_id"`
	From    string `json:"from"`
	To      string `json:"to"`
	Count   int64  `json:"count"`
}

// Filter chooses the events that wake a subscriber; nil accepts all. It runs on the hub's
// goroutine for every event and must be quick and never block.
type Filter func(Event) bool

// Subscription wakes its owner through C. C has room for one signal, so a burst of events
// coalesces into one wake-up and a slow subscriber never blocks the hub or other subscribers.
type Subscription struct {
	C      <-chan struct{}
	c      chan struct{}
	filter Filter
	watch  func(Event) // a watcher's (see Watch), which is given every event instead
	hub    *Hub
}

// OnlyReconnects is a Filter that accepts no notification: its subscriber is woken only when
// the hub (re)connects, which is when a loop backing off from database failures should try
// again.
func OnlyReconnects(Event) bool { return false }

// Close removes the subscription. It is safe to call twice, and on a zero Subscription (which
// never wakes).
func (s *Subscription) Close() {
	if s.hub == nil {
		return
	}
	s.hub.mu.Lock()
	delete(s.hub.subs, s)
	s.hub.mu.Unlock()
}

func (s *Subscription) wake() {
	select {
	case s.c <- struct{}{}:
	default:
	}
}

// Hub owns one LISTEN connection and the process's subscribers.
type Hub struct {
	url string
	log *slog.Logger

	mu        sync.Mutex
	subs      map[*Subscription]struct{}
	connected bool
	listened  int           // channels LISTENed on the current connection
	ready     chan struct{} // closed at the first successful LISTEN
	readyOnce sync.Once
	streak    *dbretry.Streak // failures to (re)connect and listen
}

// NewHub returns a hub that will listen on databaseURL once Run is called.
func NewHub(databaseURL string, log *slog.Logger) *Hub {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Hub{url: databaseURL, log: log, subs: map[*Subscription]struct{}{}, ready: make(chan struct{}),
		streak: dbretry.New(log, "events: listening", 100*time.Millisecond, maxReconnectDelay)}
}

// Subscribe registers a subscriber. Close it when done.
func (h *Hub) Subscribe(filter Filter) *Subscription {
	c := make(chan struct{}, 1)
	s := &Subscription{C: c, c: c, filter: filter, hub: h}
	h.mu.Lock()
	h.subs[s] = struct{}{}
	h.mu.Unlock()
	return s
}

// Watch registers a watcher: fn is called on the hub's goroutine with every event, in order,
// reconnections (Channel "") included, until the subscription is closed; its C never wakes.
// It suits a subscriber that routes events itself (one lookup per event) rather than many
// subscriptions that each filter every event. Like a Filter, fn must be quick and never
// block.
func (h *Hub) Watch(fn func(Event)) *Subscription {
	s := &Subscription{watch: fn, hub: h}
	h.mu.Lock()
	h.subs[s] = struct{}{}
	h.mu.Unlock()
	return s
}

// Ready is closed once the hub has listened successfully for the first time.
func (h *Hub) Ready() <-chan struct{} { return h.ready }

// Connected reports whether the LISTEN connection is currently up.
func (h *Hub) Connected() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.connected
}

// Subscribers counts the current subscriptions.
func (h *Hub) Subscribers() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs)
}

// maxReconnectDelay caps the wait between two reconnection attempts of a hub. It is short on
// purpose: the hub's reconnection is what wakes the other loops backing off from database
// failures (they wait for it, up to their own longer backoff), so it bounds how long after
// the database's return the whole process resumes.
const maxReconnectDelay = 2 * time.Second

// Run listens until ctx ends, reconnecting after failures with exponential backoff and
// jitter (100ms to 2s); the failure streak is logged once, then every 30s while it lasts, then
// its recovery (see internal/dbretry).
func (h *Hub) Run(ctx context.Context) error {
	var wait time.Duration // before the next connection attempt; zero after a success
	l := &pgxlisten.Listener{
		Connect: func(ctx context.Context) (*pgx.Conn, error) {
			if !dbretry.Wait(ctx, wait, nil) {
				return nil, ctx.Err()
			}
			h.mu.Lock()
			h.listened = 0
			h.mu.Unlock()
			connectCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			return pgx.Connect(connectCtx, h.url)
		},
		LogError: func(ctx context.Context, err error) {
			var nerr notificationError
			if errors.As(err, &nerr) {
				// One notification could not be handled; the connection is still up.
				h.log.Warn("events: handling a notification", "error", err)
				return
			}
			h.setConnected(false)
			if ctx.Err() == nil {
				wait = h.streak.Fail(err)
			}
		},
		ReconnectDelay: -1, // Connect waits the backoff itself
	}
	for _, ch := range Channels {
		l.Handle(ch, handler{hub: h})
	}
	h.log.Info("events: listening", "channels", Channels)
	err := l.Listen(ctx)
	h.setConnected(false)
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("events listener: %w", err)
}

func (h *Hub) setConnected(up bool) {
	h.mu.Lock()
	h.connected = up
	h.mu.Unlock()
}

// dispatch wakes the subscribers whose filter accepts any of evs and gives evs to the
// watchers; every filter and watcher sees every event, in order.
func (h *Hub) dispatch(evs ...Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		if s.watch != nil {
			for _, ev := range evs {
				s.watch(ev)
			}
			continue
		}
		woken := false
		for _, ev := range evs {
			if ev.Channel == "" || s.filter == nil || s.filter(ev) {
				woken = true
			}
		}
		if woken {
			s.wake()
		}
	}
}

type handler struct{ hub *Hub }

// payload is a notification's payload: either one event's fields, or (transitions, one
// notification per inserting statement) the events of several rows.
type payload struct {
	Event
	Rows []Event `json:"rows"`
}

func (hd handler) HandleNotification(_ context.Context, n *pgconn.Notification, _ *pgx.Conn) error {
	var p payload
	if err := decodePayload([]byte(n.Payload), &p); err != nil {
		// Undecodable payload: wake everyone on the channel rather than lose the signal.
		hd.hub.dispatch(Event{})
		return notificationError{fmt.Errorf("decoding %s payload %q: %w", n.Channel, n.Payload, err)}
	}
	if p.Rows == nil {
		p.Rows = []Event{p.Event}
	}
	for i := range p.Rows {
		p.Rows[i].Channel = n.Channel
	}
	hd.hub.dispatch(p.Rows...)
	return nil
}

// HandleBacklog runs right after LISTEN on every (re)connection. Anything may have been missed
// while disconnected, so once all channels are listened on, every subscriber is woken to
// catch up from the tables.
func (hd handler) HandleBacklog(context.Context, string, *pgx.Conn) error {
	h := hd.hub
	h.mu.Lock()
	h.listened++
	all := h.listened == len(Channels)
	if all {
		h.connected = true
	}
	h.mu.Unlock()
	if all {
		h.streak.Succeed()
		h.readyOnce.Do(func() { close(h.ready) })
		h.dispatch(Event{})
	}
	return nil
}

// notificationError is the failure to handle one notification, on a connection that is up.
type notificationError struct{ error }

func (e notificationError) Unwrap() error { return e.error }
