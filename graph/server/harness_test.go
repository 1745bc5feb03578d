package server_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"gorm.io/gorm"

	"github.com/taskerhq/tasker/graph/server"
	"github.com/taskerhq/tasker/internal/database"
	"github.com/taskerhq/tasker/internal/events"
	"github.com/taskerhq/tasker/internal/handler"
	"github.com/taskerhq/tasker/internal/querystats"
	"github.com/taskerhq/tasker/internal/template"
	"github.com/taskerhq/tasker/internal/testkit/dbtest"
	"github.com/taskerhq/tasker/internal/testkit/fixture"
	"github.com/taskerhq/tasker/internal/testkit/logbuf"
)

// env is one test's database, running hub and API server.
type env struct {
	t    testing.TB
	url  string // database URL
	db   *gorm.DB
	hub  *events.Hub
	api  *server.API
	srv  *httptest.Server
	fx   *fixture.Builder
	logs *logbuf.Buffer
	// statements counts every statement the server's pool runs (its own counter, whatever
	// the statement's context).
	statements *atomic.Int64
	templates  *template.Registry // the server's templates: the shipped ones, and any a test adds
}

// countAll counts every statement of a pool, and what querystats.Tracer counts.
type countAll struct {
	querystats.Tracer
	n *atomic.Int64
}

func (c countAll) TraceQueryStart(ctx context.Context, conn *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	c.n.Add(1)
	return c.Tracer.TraceQueryStart(ctx, conn, data)
}

// newEnv starts the real handler on an httptest server over a fresh database. Query stats
// are on unless cfg says otherwise through mutate.
func newEnv(t testing.TB, mutate ...func(*server.Config)) *env {
	t.Helper()
	return newEnvAt(t, dbtest.NewURL(t), mutate...)
}

// newEnvAt is newEnv over the fresh database at url (a dbtest URL, maybe as another role).
func newEnvAt(t testing.TB, url string, mutate ...func(*server.Config)) *env {
	t.Helper()
	statements := &atomic.Int64{}
	b := newBackendAt(t, url, countAll{n: statements}, 30)
	cfg := server.Config{QueryStats: true}
	for _, m := range mutate {
		m(&cfg)
	}
	api := server.New(cfg, server.Deps{DB: b.db, Hub: b.hub, Log: b.log, Templates: b.templates})
	mux := http.NewServeMux()
	api.Mount(mux)
	return &env{t: t, url: b.url, db: b.db, hub: b.hub, api: api, srv: b.serve(mux), fx: fixture.New(t, b.db),
		logs: b.logs, statements: statements, templates: b.templates}
}

// backend is what a test's server runs on: a fresh database, a pool with tracer, a running
// events hub, the shipped templates and a log collected in logs.
type backend struct {
	t         testing.TB
	ctx       context.Context // ends when the test ends
	url       string
	db        *gorm.DB
	hub       *events.Hub
	log       *slog.Logger
	logs      *logbuf.Buffer
	templates *template.Registry
}

// newBackend starts a backend; everything stops when the test ends, after the server serve
// starts.
func newBackend(t testing.TB, tracer pgx.QueryTracer, maxOpenConns int) *backend {
	t.Helper()
	return newBackendAt(t, dbtest.NewURL(t), tracer, maxOpenConns)
}

// newBackendAt is newBackend over the fresh database at url.
func newBackendAt(t testing.TB, url string, tracer pgx.QueryTracer, maxOpenConns int) *backend {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	db, err := database.Open(ctx, url, database.Options{Tracer: tracer, MaxOpenConns: maxOpenConns})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	logs := &logbuf.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	hub := events.NewHub(url, log)
	hubDone := make(chan struct{})
	go func() { defer close(hubDone); _ = hub.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-hubDone
		_ = database.Close(db)
	})
	select {
	case <-hub.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("events hub not ready after 10s")
	}
	reg, err := template.Shipped(handler.NewBuiltinRegistry())
	if err != nil {
		t.Fatal(err)
	}
	return &backend{t: t, ctx: ctx, url: url, db: db, hub: hub, log: log, logs: logs, templates: reg}
}

// serve starts an httptest server of h, closed when the test ends, before the backend stops.
func (b *backend) serve(h http.Handler) *httptest.Server {
	srv := httptest.NewServer(h)
	b.t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
	})
	return srv
}

// gqlError is one entry of a response's errors.
type gqlError struct {
	Message    string         `json:"message"`
	Path       []any          `json:"path"`
	Extensions map[string]any `json:"extensions"`
}

// response is a GraphQL response with the API's extensions.
type response struct {
	Data       json.RawMessage `json:"data"`
	Errors     []gqlError      `json:"errors"`
	Extensions struct {
		QueryStats *struct {
			SQLStatements int64   `json:"sqlStatements"`
			DBTimeMs      float64 `json:"dbTimeMs"`
		} `json:"queryStats"`
	} `json:"extensions"`
	status int
}

// do POSTs a query and decodes the response.
func (e *env) do(query string, vars map[string]any) response {
	e.t.Helper()
	return e.post(map[string]any{"query": query, "variables": vars})
}

func (e *env) post(body map[string]any) response {
	e.t.Helper()
	b, err := json.Marshal(body)
	if err != nil {
		e.t.Fatal(err)
	}
	resp, err := http.Post(e.srv.URL+"/query", "application/json", bytes.NewReader(b))
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	return decode(e.t, resp)
}

func decode(t testing.TB, resp *http.Response) response {
	t.Helper()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var r response
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatalf("decoding response %s: %v", raw, err)
	}
	r.status = resp.StatusCode
	return r
}

// data runs a query that must succeed and decodes its data into out.
func (e *env) data(query string, vars map[string]any, out any) response {
	e.t.Helper()
	r := e.do(query, vars)
	if len(r.Errors) > 0 {
		e.t.Fatalf("query failed: %+v\nserver log:\n%s", r.Errors, e.logs.String())
	}
	if err := json.Unmarshal(r.Data, out); err != nil {
		e.t.Fatalf("decoding data %s: %v", r.Data, err)
	}
	return r
}

// oneError runs a query that must fail with exactly one error of the given code.
func (e *env) oneError(query string, vars map[string]any, code string) gqlError {
	e.t.Helper()
	r := e.do(query, vars)
	if len(r.Errors) != 1 {
		e.t.Fatalf("want one error with code %s, got %+v (data %s)", code, r.Errors, r.Data)
	}
	if got := r.Errors[0].Extensions["code"]; got != code {
		e.t.Fatalf("error code = %v, want %s (message %q)\nserver log:\n%s", got, code, r.Errors[0].Message, e.logs.String())
	}
	return r.Errors[0]
}

func id(n int64) string { return strconv.FormatInt(n, 10) }

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}
