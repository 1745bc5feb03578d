package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/taskerhq/tasker/internal/auth"
	"github.com/taskerhq/tasker/internal/testkit/wait"
)

// TestAbandonedRequestIsNotAnInternalError sends a query that waits on a table lock, lets the
// client go away while it waits, and checks that the server neither logs an error nor counts
// the response as failed: it is counted with outcome "cancelled".
func TestAbandonedRequestIsNotAnInternalError(t *testing.T) {
	t.Parallel()
	e := newSecureEnv(t, auth.Off, auth.Limits{})
	e.createTask("")

	e.abandonWhileLocked(t, "tasker_tasks", "", `{ tasks(first: 5) { edges { node { id status } } } }`)

	want := `tasker_graphql_requests_total{field="tasks",outcome="cancelled",type="query"} 1`
	var body string
	wait.Until(t, 10*time.Second, "the cancelled request counted in /metrics", func() bool {
		resp, err := http.Get(e.srv.URL + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		body = string(raw)
		return strings.Contains(body, want)
	})
	if strings.Contains(body, `field="tasks",outcome="error"`) {
		t.Errorf("the abandoned request was counted as an error:\n%s", body)
	}
	if logs := e.logs.String(); strings.Contains(logs, "level=ERROR") || strings.Contains(logs, "internal error") {
		t.Errorf("the abandoned request was logged as an error:\n%s", logs)
	}
}

// TestAbandonedTokenLookupIsNotAnError lets the client go away while the guard looks its token
// up, and checks that the failed lookup is not logged as an error.
func TestAbandonedTokenLookupIsNotAnError(t *testing.T) {
	t.Parallel()
	e := newSecureEnv(t, auth.Required, auth.Limits{})
	e.abandonWhileLocked(t, "tasker_api_tokens", e.tokens[auth.Reader], `{ tasks(first: 5) { nodes { id } } }`)
	e.srv.Close() // waits for the request's handler to return
	if logs := e.logs.String(); strings.Contains(logs, "level=ERROR") {
		t.Errorf("the abandoned token lookup was logged as an error:\n%s", logs)
	}
}

// abandonWhileLocked sends query (with token, none when "") while table is locked, lets the
// client go away once the server waits on the lock, and returns once nothing waits on it any
// more, with the lock released.
func (e *secureEnv) abandonWhileLocked(t *testing.T, table, token, query string) {
	t.Helper()
	lock := e.db.Begin()
	if err := lock.Exec(`LOCK TABLE ` + table + ` IN ACCESS EXCLUSIVE MODE`).Error; err != nil {
		t.Fatal(err)
	}
	defer lock.Rollback()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	body, _ := json.Marshal(map[string]any{"query": query})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.srv.URL+"/query", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	sent := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		sent <- err
	}()

	waiting := func() int64 {
		var n int64
		if err := e.db.Raw(`SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock'`).Scan(&n).Error; err != nil {
			t.Fatal(err)
		}
		return n
	}
	wait.Until(t, 10*time.Second, "a request waiting", func() bool { return waiting() > 0 })
	cancel()
	if err := <-sent; !errors.Is(err, context.Canceled) {
		t.Fatalf("the client's request ended with %v, want context.Canceled", err)
	}
	wait.Until(t, 10*time.Second, "no request waiting", func() bool { return waiting() == 0 })
	if err := lock.Rollback().Error; err != nil {
		t.Fatal(err)
	}
}
