package web_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	cdpruntime "github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"gorm.io/gorm"

	"github.com/taskerhq/tasker/graph/server"
	"github.com/taskerhq/tasker/internal/auth"
	"github.com/taskerhq/tasker/internal/database"
	"github.com/taskerhq/tasker/internal/events"
	"github.com/taskerhq/tasker/internal/handler"
	"github.com/taskerhq/tasker/internal/querystats"
	"github.com/taskerhq/tasker/internal/refresh"
	"github.com/taskerhq/tasker/internal/template"
	"github.com/taskerhq/tasker/internal/testkit/dbtest"
	"github.com/taskerhq/tasker/internal/testkit/eventstest"
)

// testServer is one test's database and the real API (with the playground and the console) on a
// local HTTP server.
type testServer struct {
	url       string
	db        *gorm.DB
	store     *auth.Store
	refresher *refresh.Refresher
	hub       *events.Hub
}

// newServer starts the server over a fresh database; required makes it ask for API tokens.
func newServer(t *testing.T, required bool) *testServer {
	t.Helper()
	dbURL := dbtest.NewURL(t)
	ctx, cancel := context.WithCancel(context.Background())
	db, err := database.Open(ctx, dbURL, database.Options{Tracer: querystats.Tracer{}, MaxOpenConns: 20})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	hub := eventstest.Start(t, dbURL, log)
	reg, err := template.Shipped(handler.NewBuiltinRegistry())
	if err != nil {
		t.Fatal(err)
	}
	store := auth.NewStore(db)
	mode := auth.Off
	if required {
		mode = auth.Required
	}
	guard, err := auth.NewGuard(mode, store, auth.Limits{}.WithDefaults(), nil, log)
	if err != nil {
		t.Fatal(err)
	}
	refresher, err := refresh.New(db, nil, refresh.Config{}, log) // refreshes only when asked
	if err != nil {
		t.Fatal(err)
	}
	api := server.New(server.Config{}, server.Deps{DB: db, Hub: hub, Log: log, Templates: reg, Guard: guard,
		Refresher: refresher})
	mux := http.NewServeMux()
	api.Mount(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
		cancel()
		_ = database.Close(db)
	})
	return &testServer{url: srv.URL, db: db, store: store, refresher: refresher, hub: hub}
}

// browser is a headless Chromium tab that records every request the page makes and every
// script error, console error and CSP violation it reports.
type browser struct {
	t    *testing.T
	ctx  context.Context
	base string // the server's origin

	mu       sync.Mutex
	requests []string
	problems []string
	expected []string // problems containing one of these are expected by the test
}

// expect makes problems that contain text expected: the check does not fail on them.
func (b *browser) expect(text string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.expected = append(b.expected, text)
}

// chromiumPath finds the browser the tests drive; it fails the test, saying how to install it,
// when there is none.
func chromiumPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("TASKER_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Fatal("the browser tests need Chromium and none is installed: apt-get install -y chromium " +
		"(or set TASKER_CHROMIUM to a Chrome or Chromium binary); .ci/run installs it")
	return ""
}

// newBrowser starts Chromium with a fresh profile and every background network feature off,
// so that the only requests it makes are the page's.
func newBrowser(t *testing.T, base string) *browser {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true), // the tests may run as root
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("no-default-browser-check", true),
		chromedp.Flag("metrics-recording-only", true),
		chromedp.Flag("safebrowsing-disable-auto-update", true),
		chromedp.WindowSize(1400, 900),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	b := &browser{t: t, base: base}
	ctx, cancelCtx := chromedp.NewContext(actx, chromedp.WithListener(b.record))
	b.ctx = ctx
	t.Cleanup(func() {
		cancelCtx()
		cancelAlloc()
	})
	// The first action starts the browser; a deadline on it would stop the whole browser.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting Chromium: %v", err)
	}
	t.Cleanup(b.check)
	return b
}

// record keeps what the page requested and reported (it runs on the tab's reading goroutine).
func (b *browser) record(ev any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch e := ev.(type) {
	case *network.EventRequestWillBeSent:
		b.requests = append(b.requests, e.Request.URL)
	case *network.EventWebSocketCreated:
		b.requests = append(b.requests, e.URL)
	case *cdpruntime.EventExceptionThrown:
		b.problems = append(b.problems, "exception: "+exceptionText(e.ExceptionDetails))
	case *cdpruntime.EventConsoleAPICalled:
		if e.Type == cdpruntime.ConsoleAPICalledTypeError || e.Type == cdpruntime.ConsoleAPICalledTypeAssert {
			b.problems = append(b.problems, "console."+string(e.Type)+": "+argsText(e.Args))
		}
	case *cdplog.EventEntryAdded:
		if e.Entry.Level == cdplog.EntryLevelError {
			b.problems = append(b.problems, "log ("+string(e.Entry.Source)+"): "+e.Entry.Text+" "+e.Entry.URL)
		}
	}
}

func exceptionText(d *cdpruntime.ExceptionDetails) string {
	if d == nil {
		return ""
	}
	s := d.Text
	if d.Exception != nil && d.Exception.Description != "" {
		s += " " + d.Exception.Description
	}
	return fmt.Sprintf("%s (%s:%d)", s, d.URL, d.LineNumber)
}

func argsText(args []*cdpruntime.RemoteObject) string {
	var parts []string
	for _, a := range args {
		if a.Description != "" {
			parts = append(parts, a.Description)
		} else {
			parts = append(parts, strings.Trim(string(a.Value), `"`))
		}
	}
	return strings.Join(parts, " ")
}

// check fails the test on any request to another host and on any script error the page
// reported.
func (b *browser) check() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, r := range b.requests {
		if !local(r) {
			b.t.Errorf("the page requested %s: every request must stay on the server's host", r)
		}
	}
problems:
	for _, p := range b.problems {
		for _, e := range b.expected {
			if strings.Contains(p, e) {
				continue problems
			}
		}
		b.t.Errorf("the page reported %s", p)
	}
}

// local reports whether a request URL stays on this machine (data: and blob: URLs never leave
// the page).
func local(raw string) bool {
	u, err := url.Parse(raw)
	if err != nil {
		return false
	}
	switch u.Scheme {
	case "data", "blob", "about":
		return true
	case "http", "https", "ws", "wss":
		h := u.Hostname()
		return h == "127.0.0.1" || h == "localhost" || h == "::1"
	}
	return false
}

// requested returns the URLs requested so far.
func (b *browser) requested() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.requests...)
}

// do runs actions, failing the test (with a screenshot under bin/browser) on error.
func (b *browser) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.screenshot(b.t.Name() + "-failed")
		b.t.Fatalf("%s: %v", what, err)
	}
}

// open loads a page of the server.
func (b *browser) open(path string) {
	b.t.Helper()
	b.do("opening "+path, chromedp.Navigate(b.base+path))
}

// eval evaluates a JavaScript expression (awaiting a promise) and returns its value.
func eval[T any](b *browser, expr string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, awaitPromise))
	if err != nil {
		b.screenshot(b.t.Name() + "-failed")
		b.t.Fatalf("evaluating %s: %v", expr, err)
	}
	return v
}

func awaitPromise(p *cdpruntime.EvaluateParams) {
	yes := true
	p.AwaitPromise = &yes
}

// waitFor polls a JavaScript condition until it is true, failing the test after timeout.
func (b *browser) waitFor(what, cond string, timeout time.Duration) {
	b.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool]("Boolean("+cond+")"))
		cancel()
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			b.screenshot(b.t.Name() + "-timeout")
			b.t.Fatalf("waited %s for %s (last error: %v)", timeout, what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// artifacts is bin/browser in the repository: the screenshots the tests save.
func artifacts(t *testing.T) string {
	_, file, _, _ := runtime.Caller(0)
	dir := filepath.Join(filepath.Dir(file), "..", "..", "bin", "browser")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// screenshot saves the viewport as bin/browser/{name}.png and returns its path.
func (b *browser) screenshot(name string) string {
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		b.t.Logf("screenshot %s: %v", name, err)
		return ""
	}
	p := filepath.Join(artifacts(b.t), strings.NewReplacer("/", "-", " ", "_").Replace(name)+".png")
	if err := os.WriteFile(p, png, 0o644); err != nil {
		b.t.Logf("screenshot %s: %v", name, err)
	}
	return p
}

// chromedpClick clicks the first element matching a CSS selector, through the DOM (the
// element need not be in view).
func chromedpClick(sel string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
		found, err := chromedp.Run(ctx, chromedp.Evaluate[bool](
			`(() => { const el = document.querySelector(`+strconv.Quote(sel)+`); if (!el) return false; el.dispatchEvent(new MouseEvent('click', { bubbles: true, cancelable: true })); return true; })()`))
		if err != nil {
			return err
		}
		if !found {
			return fmt.Errorf("no element matches %s", sel)
		}
		return nil
	})
}

// text returns the text content of the first element matching a CSS selector.
func (b *browser) text(sel string) string {
	b.t.Helper()
	return eval[string](b, `(document.querySelector(`+strconv.Quote(sel)+`) || {}).textContent`)
}
