package auth

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/99designs/gqlgen/graphql/handler/transport"

	"github.com/taskerhq/tasker/internal/events"
)

// Websocket close codes of refused or ended connections (graphql-transport-ws uses the 44xx
// range for these).
const (
	CloseUnauthenticated = 4401
	CloseUnavailable     = 4503
)

// connState is one websocket connection: its caller, its active subscriptions, and how to
// end it.
type connState struct {
	subs      atomic.Int64
	principal Principal
	slot      *wsSlot
	cancel    context.CancelFunc // ends the connection's context: its operations stop
	closing   sync.Once
}

type connKey struct{}

// wsSlot receives the connection accepted for an upgrade request, so that the guard can close
// it with its own code (gqlgen's transport closes a cancelled connection with 1000).
type wsSlot struct {
	mu   sync.Mutex
	conn transport.WebsocketConn
}

type wsSlotKey struct{}

// WebsocketImplementation wraps the websocket implementation of the transport so that the
// guard can close a connection whose token is revoked with code 4401.
func (g *Guard) WebsocketImplementation(inner transport.WebsocketImplementation) transport.WebsocketImplementation {
	if inner == nil {
		inner = transport.CoderWebsocketImplementation{}
	}
	return slotWebsocket{inner: inner}
}

type slotWebsocket struct {
	inner transport.WebsocketImplementation
}

func (s slotWebsocket) Accept(w http.ResponseWriter, r *http.Request, opts transport.WebsocketAcceptOptions) (transport.WebsocketConn, error) {
	conn, err := s.inner.Accept(w, r, opts)
	if err == nil {
		if slot, _ := r.Context().Value(wsSlotKey{}).(*wsSlot); slot != nil {
			slot.mu.Lock()
			slot.conn = conn
			slot.mu.Unlock()
		}
	}
	return conn, err
}

// WatchRevocations makes the guard end, within moments, every websocket connection whose
// token is revoked or deleted, in whichever process that happens: it listens through hub on
// events.ChannelTokensRevoked (and re-checks every connection's token when the hub
// reconnects, since notifications may have been missed). Call it before serving.
func (g *Guard) WatchRevocations(hub *events.Hub) { g.hub = hub }

// WebsocketInit is the websocket transport's InitFunc: it authenticates the connection from
// the Authorization entry of the connection_init payload ("Bearer <token>"), or else from the
// upgrade request's Authorization header. A refused connection is closed with code 4401 (4503
// when the token store is unreachable) and a reason that starts with the error code.
//
// An admitted connection is watched: when its token is revoked (see WatchRevocations), or an
// operation finds it revoked (MutateOperationContext), the connection is closed with 4401 and
// its subscriptions end.
func (g *Guard) WebsocketInit(ctx context.Context, payload transport.InitPayload) (context.Context, *transport.InitPayload, error) {
	slot, _ := ctx.Value(wsSlotKey{}).(*wsSlot)
	cs := &connState{slot: slot}
	ctx = context.WithValue(ctx, connKey{}, cs)
	if g.mode == Off {
		cs.principal = anonymous
		return WithPrincipal(ctx, anonymous), nil, nil
	}
	header := payload.Authorization()
	var p Principal
	if header == "" {
		hp, ok := FromContext(ctx)
		if !ok {
			msg := string(Unauthenticated) + ": send Authorization: Bearer <API token> in the connection_init payload"
			return transport.AppendCloseReason(transport.WithWebsocketCloseCode(ctx, CloseUnauthenticated), msg), nil, errors.New(msg)
		}
		p = hp
	} else {
		var err error
		if p, err = g.authenticate(ctx, header); err != nil {
			code, closeCode, msg := Unauthenticated, CloseUnauthenticated, "invalid or revoked API token"
			if !errors.Is(err, ErrInvalidToken) {
				code, closeCode, msg = ServiceUnavailable, CloseUnavailable, "the API token could not be checked; retry later"
			}
			full := string(code) + ": " + msg
			return transport.AppendCloseReason(transport.WithWebsocketCloseCode(ctx, closeCode), full), nil, errors.New(full)
		}
	}
	cs.principal = p
	ctx, cs.cancel = context.WithCancel(WithPrincipal(ctx, p))
	if g.hub != nil && g.mode == Required {
		go g.watch(ctx, cs)
	}
	return ctx, nil, nil
}

// watch closes the connection of cs when its token is revoked; it ends with the connection.
func (g *Guard) watch(ctx context.Context, cs *connState) {
	id := cs.principal.TokenID
	sub := g.hub.Subscribe(func(ev events.Event) bool {
		return ev.Channel == events.ChannelTokensRevoked && ev.ID == id
	})
	defer sub.Close()
	for {
		select {
		case <-ctx.Done():
			return
		case <-sub.C:
		}
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		active, err := g.store.Active(qctx, id)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				g.log.WarnContext(ctx, "auth: re-checking the token of a websocket connection failed", "token_id", id, "error", err)
			}
			continue
		}
		if !active {
			g.closeRevoked(cs)
			return
		}
	}
}

// revokedReason is the close reason of a connection whose token was revoked.
const revokedReason = string(Unauthenticated) + ": the API token was revoked"

// closeRevoked closes the connection of cs with 4401 and ends its operations.
func (g *Guard) closeRevoked(cs *connState) {
	cs.closing.Do(func() {
		g.log.Info("auth: closing a websocket connection: its API token was revoked", "token_id", cs.principal.TokenID, "name", cs.principal.Name)
		if cs.slot != nil {
			cs.slot.mu.Lock()
			conn := cs.slot.conn
			cs.slot.mu.Unlock()
			if conn != nil {
				// Sent first: the transport's own close (1000, when the context ends) is then
				// a no-op.
				_ = conn.WriteClose(CloseUnauthenticated, revokedReason)
			}
		}
		if cs.cancel != nil {
			cs.cancel()
		}
	})
}
