package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"

	"github.com/taskerhq/tasker/internal/auth"
	"github.com/taskerhq/tasker/internal/testkit/wait"
)

// wsSend sends one subscribe message (any operation) on conn.
func wsSend(t *testing.T, ctx context.Context, conn *websocket.Conn, id, query string) {
	t.Helper()
	payload, _ := json.Marshal(map[string]any{"query": query})
	if err := wsjson.Write(ctx, conn, map[string]any{"id": id, "type": "subscribe", "payload": json.RawMessage(payload)}); err != nil {
		t.Fatalf("sending %s: %v", id, err)
	}
}

// wsAck opens an acknowledged connection with token.
func (e *secureEnv) wsAck(t *testing.T, token string) (*websocket.Conn, context.Context) {
	t.Helper()
	conn, ctx := e.wsDial(t, map[string]any{"Authorization": "Bearer " + token})
	if m, err := wsNext(t, ctx, conn); err != nil || m.Type != "connection_ack" {
		t.Fatalf("connection_init: %+v %v, want connection_ack", m, err)
	}
	return conn, ctx
}

// wsClosedWith reads until the connection ends and checks its close code and reason prefix.
func wsClosedWith(t *testing.T, ctx context.Context, conn *websocket.Conn, code websocket.StatusCode, reasonPrefix string) {
	t.Helper()
	for {
		_, err := wsNext(t, ctx, conn)
		if err == nil {
			continue
		}
		var ce websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != code || !strings.HasPrefix(ce.Reason, reasonPrefix) {
			t.Fatalf("connection ended with %v, want close %d with a reason starting %q", err, code, reasonPrefix)
		}
		return
	}
}

func (e *secureEnv) taskCount() int64 {
	var n int64
	e.db.Raw(`SELECT count(*) FROM tasker_tasks`).Scan(&n)
	return n
}

// A token revoked while its websocket is open: the connection is closed with 4401 at once,
// its subscription ends, and nothing it sends afterwards runs. The revocation goes through
// the database (another connection, as another process would), not through the server.
func TestRevokedTokenClosesItsWebsocket(t *testing.T) {
	t.Parallel()
	e := newSecureEnv(t, auth.Required, auth.Limits{})
	conn, ctx := e.wsAck(t, e.tokens[auth.Operator])
	wsSend(t, ctx, conn, "sub", taskTransSub)
	wsSend(t, ctx, conn, "create", createLinear)
	for created := false; !created; {
		m, err := wsNext(t, ctx, conn)
		if err != nil {
			t.Fatal(err)
		}
		created = m.ID == "create" && m.Type == "next" && strings.Contains(string(m.Payload), `"createTask"`)
	}
	if e.guard.Subscriptions() != 1 {
		t.Fatalf("%d subscriptions running, want 1", e.guard.Subscriptions())
	}
	if _, err := e.store.Revoke(context.Background(), e.tokens[auth.Operator]); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	wsClosedWith(t, ctx, conn, auth.CloseUnauthenticated, string(auth.Unauthenticated))
	t.Logf("closed %s after the revocation", time.Since(began).Round(time.Millisecond))
	wait.Until(t, 10*time.Second, "condition", func() bool { return e.guard.Subscriptions() == 0 })
}

// Without the revocation notice, the next operation on the connection re-reads the token: it
// is refused with UNAUTHENTICATED, runs nothing, and the connection is closed with 4401.
func TestRevokedTokenRefusedAtTheNextWebsocketOperation(t *testing.T) {
	t.Parallel()
	e := newSecureEnv(t, auth.Required, auth.Limits{}, func(s *secureSetup) { s.noRevocationWatch = true })
	conn, ctx := e.wsAck(t, e.tokens[auth.Operator])
	wsSend(t, ctx, conn, "sub", taskTransSub)
	wait.Until(t, 10*time.Second, "condition", func() bool { return e.guard.Subscriptions() == 1 })
	if _, err := e.store.Revoke(context.Background(), e.tokens[auth.Operator]); err != nil {
		t.Fatal(err)
	}
	wsSend(t, ctx, conn, "create", createLinear)
	for {
		m, err := wsNext(t, ctx, conn)
		if err != nil {
			var ce websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != auth.CloseUnauthenticated {
				t.Fatalf("connection ended with %v, want close 4401", err)
			}
			break
		}
		if m.ID == "create" && m.Type == "next" && !strings.Contains(string(m.Payload), string(auth.Unauthenticated)) {
			t.Fatalf("createTask with a revoked token answered %s", m.Payload)
		}
	}
	if n := e.taskCount(); n != 0 {
		t.Fatalf("a revoked token created %d tasks", n)
	}
	wait.Until(t, 10*time.Second, "condition", func() bool { return e.guard.Subscriptions() == 0 })
}

// The per-connection and per-process subscription limits hold when many subscribes arrive at
// once on several connections: exactly the limit runs, every other one is refused with
// TOO_MANY_SUBSCRIPTIONS, and ending a connection frees its share.
func TestSubscriptionLimitsHoldConcurrently(t *testing.T) {
	t.Parallel()
	const perConn, perProcess, conns, each = 3, 5, 4, 4
	e := newSecureEnv(t, auth.Required, auth.Limits{MaxSubscriptions: perConn, MaxProcessSubscriptions: perProcess, RatePerSecond: 1000, Burst: 1000})
	var mu sync.Mutex
	refused := make([]int, conns)
	closers := make([]func(), conns)
	var wg sync.WaitGroup
	for c := range conns {
		conn, ctx := e.wsAck(t, e.tokens[auth.Reader])
		closers[c] = func() { _ = conn.Close(websocket.StatusNormalClosure, "") }
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				wsSend(t, ctx, conn, string(rune('a'+i)), taskTransSub)
			}
			// Refusals arrive as messages; running subscriptions stay silent (no transitions).
			for {
				m, err := wsNext(t, ctx, conn)
				if err != nil {
					return
				}
				if m.Type != "next" && m.Type != "error" {
					continue
				}
				if !strings.Contains(string(m.Payload), string(auth.TooManySubs)) {
					t.Errorf("refusal without its code: %s", m.Payload)
				}
				mu.Lock()
				refused[c]++
				mu.Unlock()
			}
		}()
	}
	total := func() int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, r := range refused {
			n += r
		}
		return n
	}
	wait.Until(t, 10*time.Second, "condition", func() bool { return total() >= conns*each-perProcess && e.guard.Subscriptions() == perProcess })
	time.Sleep(200 * time.Millisecond) // any excess refusal or start would show now
	mu.Lock()
	for c, r := range refused {
		if each-r > perConn {
			t.Errorf("connection %d runs %d subscriptions, over its limit of %d", c, each-r, perConn)
		}
	}
	mu.Unlock()
	if got, n := e.guard.Subscriptions(), total(); got != perProcess || n != conns*each-perProcess {
		t.Fatalf("%d subscriptions running and %d refused, want %d and %d", got, n, perProcess, conns*each-perProcess)
	}
	for _, c := range closers {
		c()
	}
	wg.Wait()
	wait.Until(t, 10*time.Second, "condition", func() bool { return e.guard.Subscriptions() == 0 })
	conn, ctx := e.wsAck(t, e.tokens[auth.Reader])
	wsSend(t, ctx, conn, "again", taskTransSub)
	wait.Until(t, 10*time.Second, "condition", func() bool { return e.guard.Subscriptions() == 1 })
}
