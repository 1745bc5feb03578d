package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"

	"github.com/taskerhq/tasker/internal/auth"
	"github.com/taskerhq/tasker/internal/testkit/dbtest"
)

func TestTokenCommand(t *testing.T) {
	t.Parallel()
	url := dbtest.NewURL(t)
	out, err := runInProcess(t, runToken, url, "create", "--role", "operator", "--name", "deploy-bot")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	secret := lines[len(lines)-1]
	if !strings.HasPrefix(secret, auth.TokenPrefix) || strings.Contains(secret, " ") {
		t.Fatalf("last line %q is not the token alone", secret)
	}
	store := auth.NewStore(dbtest.Open(t, url))
	p, err := store.Authenticate(context.Background(), secret)
	if err != nil || p.Role != auth.Operator || p.Name != "deploy-bot" {
		t.Fatalf("created token authenticates as %+v, %v", p, err)
	}

	out, err = runInProcess(t, runToken, url, "list")
	if err != nil || !strings.Contains(out, "deploy-bot") || !strings.Contains(out, "operator") || strings.Contains(out, secret) {
		t.Fatalf("list printed %q (%v): want the token's name and role, never the token", out, err)
	}
	if out, err = runInProcess(t, runToken, url, "revoke", secret[:12]); err != nil || !strings.Contains(out, "revoked API token") {
		t.Fatalf("revoke printed %q, %v", out, err)
	}
	if _, err := store.Authenticate(context.Background(), secret); err == nil {
		t.Fatal("a revoked token still authenticates")
	}

	for _, bad := range [][]string{
		{},
		{"create"},
		{"create", "--role", "root"},
		{"revoke"},
		{"revoke", "a", "b"},
		{"list", "extra"},
		{"rotate"},
	} {
		if _, err := runInProcess(t, runToken, url, bad...); err == nil {
			t.Errorf("token %q succeeded", bad)
		}
	}
}

// `tasker token revoke`, run as its own process, ends the websockets that a running
// `tasker serve` holds for that token: the connection is closed with 4401 and the token's
// operations stop, without the client sending anything.
func TestTokenRevokeClosesWebsocketsOfARunningServer(t *testing.T) {
	t.Parallel()
	s, url, token := startServeWithToken(t, auth.Operator)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, "ws://"+s.addr+"/query", &websocket.DialOptions{Subprotocols: []string{"graphql-transport-ws"}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	send := func(v map[string]any) {
		t.Helper()
		if err := wsjson.Write(ctx, conn, v); err != nil {
			t.Fatal(err)
		}
	}
	type msg struct {
		ID, Type string
		Payload  json.RawMessage
	}
	next := func() (msg, error) {
		for {
			var m msg
			if err := wsjson.Read(ctx, conn, &m); err != nil {
				return m, err
			}
			if m.Type != "ping" && m.Type != "pong" && m.Type != "ka" {
				return m, nil
			}
		}
	}
	send(map[string]any{"type": "connection_init", "payload": map[string]any{"Authorization": "Bearer " + token}})
	if m, err := next(); err != nil || m.Type != "connection_ack" {
		t.Fatalf("connection_init: %+v %v", m, err)
	}
	send(map[string]any{"id": "sub", "type": "subscribe", "payload": map[string]any{
		"query": `subscription { taskTransitions { id toState } }`}})
	send(map[string]any{"id": "create", "type": "subscribe", "payload": map[string]any{
		"query": `mutation { createTask(input: {namespace: "examples", name: "linear_workflow"}) { id } }`}})
	for {
		m, err := next()
		if err != nil {
			t.Fatalf("before the revocation: %v", err)
		}
		if m.ID == "create" && m.Type == "next" {
			if !strings.Contains(string(m.Payload), `"createTask"`) {
				t.Fatalf("createTask before the revocation: %s", m.Payload)
			}
			break
		}
	}

	if out, stderr, code := runCLI(t, buildTasker(t), t.TempDir(), "token", "revoke", "-database-url", url, token[:12]); code != 0 {
		t.Fatalf("tasker token revoke: exit %d\n%s%s", code, out, stderr)
	}
	began := time.Now()
	for {
		_, err := next()
		if err == nil {
			continue
		}
		var ce websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != auth.CloseUnauthenticated || !strings.HasPrefix(ce.Reason, string(auth.Unauthenticated)) {
			t.Fatalf("after the revocation the connection ended with %v, want close 4401 UNAUTHENTICATED", err)
		}
		break
	}
	t.Logf("closed %s after tasker token revoke returned", time.Since(began).Round(time.Millisecond))

	// And over HTTP the token is refused too.
	req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("http://%s/query?query=%%7B__typename%%7D", s.addr), nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("revoked token over HTTP: %d, want 401", resp.StatusCode)
	}
}
