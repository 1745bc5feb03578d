package server_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/taskerhq/tasker/internal/auth"
)

// TestAbandonedRequestIsNotAnInternalError sends a query that waits on a table lock, lets the
// client go away while it waits, and checks that the server neither logs an error nor counts
// the response as failed: it is counted with outcome "cancelled".
func TestAbandonedRequestIsNotAnInternalError(t *testing.T) {
	t.Parallel()
	e := newSecureEnv(t, auth.Off, auth.Limits{})
	e.createTask("")

	lock := e.db.Begin()
	if err := lock.Exec(`LOCK TABLE tasker_tasks IN ACCESS EXCLUSIVE MODE`).Error; err != nil {
		t.Fatal(err)
	}
	defer lock.Rollback()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.srv.URL+"/query",
		bytes.NewReader([]byte(`{"query":"{ tasks(first: 5) { edges { node { id status } } } }"}`)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
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
	waitFor(t, func() bool { return waiting() > 0 })
	cancel()
	if err := <-sent; !errors.Is(err, context.Canceled) {
		t.Fatalf("the client's request ended with %v, want context.Canceled", err)
	}
	waitFor(t, func() bool { return waiting() == 0 })
	if err := lock.Rollback().Error; err != nil {
		t.Fatal(err)
	}

	want := `tasker_graphql_requests_total{field="tasks",outcome="cancelled",type="query"} 1`
	var body string
	waitFor(t, func() bool {
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
