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
	result := b.runExample(`"tasks"`)
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

// runExample runs the playground's open tab and returns the response once it contains want.
// GraphiQL renders its execute button before its editors are wired to it, and a click in
// that moment does nothing; so a click that started no request (the button never turned
// into "Stop", the response stays empty) is repeated. A click that started one is waited
// for, never repeated: a second click would stop it.
func (b *browser) runExample(want string) string {
	b.t.Helper()
	// The response editor's value, read from the CodeMirror instance on its wrapper: the
	// pane's text also holds the editor's placeholders.
	const response = `(((document.querySelector('.graphiql-response .CodeMirror') || {}).CodeMirror || { getValue: () => '' }).getValue())`
	const idle = `((document.querySelector('.graphiql-execute-button') || {}).ariaLabel || '').startsWith('Execute')`
	deadline := time.Now().Add(30 * time.Second)
	var lastClick time.Time
	for {
		got := eval[string](b, response)
		if strings.Contains(got, want) {
			return got
		}
		if time.Now().After(deadline) {
			b.screenshot(b.t.Name() + "-timeout")
			b.t.Fatalf("waited 30s for a response containing %s; the response pane holds %q", want, got)
		}
		if strings.TrimSpace(got) == "" && time.Since(lastClick) > 3*time.Second && eval[bool](b, idle) {
			if !lastClick.IsZero() {
				b.t.Logf("the click %s ago started no request; clicking again", time.Since(lastClick).Round(time.Millisecond))
			}
			b.do("running the example", chromedpClick(`.graphiql-execute-button`))
			lastClick = time.Now()
		}
		time.Sleep(50 * time.Millisecond)
	}
}
