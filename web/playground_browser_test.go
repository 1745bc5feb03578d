package web_test

import (
	"strings"
	"testing"
	"time"

	"github.com/taskerhq/tasker/graph/server"
)

// TestBrowserPlaygroundOffline opens the playground in Chromium and runs its first example:
// GraphiQL starts from the files the binary serves, with one tab per example, and every
// request the page makes stays on the server's host.
func TestBrowserPlaygroundOffline(t *testing.T) {
	t.Parallel()
	srv := newServer(t, false)
	b := newBrowser(t, srv.url)
	b.open("/")
	b.waitFor("GraphiQL to render its editor", `document.querySelector('.graphiql-container .graphiql-query-editor')`, 20*time.Second)
	if n := eval[int](b, `document.querySelectorAll('.graphiql-tab').length`); n != len(server.Examples) {
		t.Errorf("%d tabs, want one per example (%d)", n, len(server.Examples))
	}
	b.do("running the first example", chromedpClick(`.graphiql-execute-button`))
	b.waitFor("the example's result", `(document.querySelector('.graphiql-response') || {}).textContent?.includes('"tasks"')`, 20*time.Second)
	result := eval[string](b, `document.querySelector('.graphiql-response').textContent`)
	if !strings.Contains(result, `"nodes"`) || strings.Contains(result, `"errors"`) {
		t.Errorf("example result = %s", result)
	}
	b.screenshot("playground")

	var query, assets int
	for _, r := range b.requested() {
		switch {
		case strings.HasSuffix(r, "/query"):
			query++
		case strings.Contains(r, server.PlaygroundPrefix):
			assets++
		}
	}
	if query == 0 || assets < 5 {
		t.Errorf("requests %v: want the playground's files and at least one POST /query", b.requested())
	}
}
