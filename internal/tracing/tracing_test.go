package tracing_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/coder/websocket"
	"github.com/jackc/pgx/v5"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"gorm.io/gorm"

	"github.com/taskerhq/tasker/graph/server"
	"github.com/taskerhq/tasker/internal/database"
	"github.com/taskerhq/tasker/internal/handler"
	"github.com/taskerhq/tasker/internal/httpserver"
	"github.com/taskerhq/tasker/internal/orchestration"
	"github.com/taskerhq/tasker/internal/querystats"
	"github.com/taskerhq/tasker/internal/template"
	"github.com/taskerhq/tasker/internal/testkit/dbtest"
	"github.com/taskerhq/tasker/internal/tracing"
)

// offFailures are what was wrong with tracing off, checked by TestMain before any test turns
// tracing on (the provider is global to the process).
var offFailures []string

func TestMain(m *testing.M) {
	offFailures = checkOff()
	os.Exit(m.Run())
}

type nopQueryTracer struct{}

func (nopQueryTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryStartData) context.Context {
	return ctx
}
func (nopQueryTracer) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

type extensionCount int

func (c *extensionCount) Use(graphql.HandlerExtension) { *c++ }

// checkOff starts tracing with a configuration that leaves it off and reports what it
// installed nonetheless.
func checkOff() []string {
	var fails []string
	cfg, err := tracing.ConfigFromEnv(func(string) string { return "" })
	if err != nil || cfg.Enabled {
		fails = append(fails, fmt.Sprintf("empty environment: enabled=%v err=%v, want off", cfg.Enabled, err))
	}
	p, err := tracing.Start(context.Background(), cfg, nil)
	if err != nil {
		fails = append(fails, fmt.Sprintf("Start: %v", err))
	}
	if tracing.Enabled() {
		fails = append(fails, "Enabled() is true")
	}
	if _, isSDK := otel.GetTracerProvider().(*sdktrace.TracerProvider); isSDK {
		fails = append(fails, "the global tracer provider is the SDK's")
	}
	_, span := otel.Tracer("test").Start(context.Background(), "probe")
	if span.IsRecording() || span.SpanContext().IsValid() {
		fails = append(fails, "a span of the global provider records or has a valid context")
	}
	span.End()
	mux := http.NewServeMux()
	if h := tracing.HTTP(mux); h != http.Handler(mux) {
		fails = append(fails, "HTTP wrapped the handler")
	}
	var exts extensionCount
	if tracing.UseGraphQL(&exts); exts > 0 {
		fails = append(fails, "UseGraphQL added an extension")
	}
	if tracing.PGX(nil) != nil {
		fails = append(fails, "PGX(nil) is not nil")
	}
	if qt := tracing.PGX(nopQueryTracer{}); qt != (nopQueryTracer{}) {
		fails = append(fails, "PGX wrapped the statement tracer")
	}
	if err := p.Shutdown(context.Background()); err != nil {
		fails = append(fails, fmt.Sprintf("Shutdown: %v", err))
	}
	return fails
}

// With tracing off, nothing is installed: no exporter, the global provider stays no-op, and
// the instrumentation returns what it was given.
func TestOffInstallsNothing(t *testing.T) {
	for _, f := range offFailures {
		t.Error(f)
	}
}

func TestConfigFromEnv(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		env     map[string]string
		enabled bool
		err     string
	}{
		{env: nil, enabled: false},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, enabled: true},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, enabled: true},
		{env: map[string]string{"TASKER_TRACING": "on"}, enabled: true},
		{env: map[string]string{"TASKER_TRACING": "off", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, enabled: false},
		{env: map[string]string{"TASKER_TRACING": "on", "OTEL_SDK_DISABLED": "true"}, enabled: false},
		{env: map[string]string{"TASKER_TRACING": "on", "OTEL_TRACES_EXPORTER": "none"}, enabled: false},
		{env: map[string]string{"TASKER_TRACING": "on", "OTEL_TRACES_EXPORTER": "otlp"}, enabled: true},
		{env: map[string]string{"TASKER_TRACING": "yes"}, err: `TASKER_TRACING="yes" is neither on nor off`},
		{env: map[string]string{"OTEL_SDK_DISABLED": "maybe"}, err: `OTEL_SDK_DISABLED="maybe" is not a boolean`},
		{env: map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, err: `OTEL_TRACES_EXPORTER="zipkin" is not supported`},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, err: `OTEL_EXPORTER_OTLP_PROTOCOL="grpc" is not supported`},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"}, err: `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL="grpc" is not supported`},
	} {
		cfg, err := tracing.ConfigFromEnv(func(k string) string { return tc.env[k] })
		switch {
		case tc.err != "":
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%v: err = %v, want %q", tc.env, err, tc.err)
			}
		case err != nil:
			t.Errorf("%v: %v", tc.env, err)
		case cfg.Enabled != tc.enabled:
			t.Errorf("%v: enabled = %v, want %v", tc.env, cfg.Enabled, tc.enabled)
		}
	}
}

var (
	enableOnce sync.Once
	exporter   = tracetest.NewInMemoryExporter()
)

// enable turns tracing on for the rest of the process, exporting to exporter.
func enable(t testing.TB) {
	t.Helper()
	enableOnce.Do(func() {
		if _, err := tracing.Start(context.Background(), tracing.Config{Enabled: true, Exporter: exporter}, nil); err != nil {
			t.Fatal(err)
		}
	})
	if !tracing.Enabled() {
		t.Fatal("tracing is not on")
	}
}

// spansWhere returns the ended spans for which keep holds.
func spansWhere(keep func(tracetest.SpanStub) bool) []tracetest.SpanStub {
	var out []tracetest.SpanStub
	for _, s := range exporter.GetSpans() {
		if keep(s) {
			out = append(out, s)
		}
	}
	return out
}

func attr(s tracetest.SpanStub, key attribute.Key) (attribute.Value, bool) {
	for _, kv := range s.Attributes {
		if kv.Key == key {
			return kv.Value, true
		}
	}
	return attribute.Value{}, false
}

func hasAttr(key attribute.Key, want string) func(tracetest.SpanStub) bool {
	return func(s tracetest.SpanStub) bool {
		v, ok := attr(s, key)
		return ok && v.Emit() == want
	}
}

// waitFor polls until cond holds or 10s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// serveAPI runs the HTTP server with the GraphQL API on a fresh database, as tasker serve
// builds them, and returns its address.
func serveAPI(t testing.TB) (string, *gorm.DB) {
	t.Helper()
	gdb, err := database.Open(context.Background(), dbtest.NewURL(t), database.Options{Tracer: querystats.Tracer{}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = database.Close(gdb) })
	srv, err := httpserver.New("127.0.0.1:0", gdb, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	server.New(server.Config{QueryStats: true}, server.Deps{DB: gdb, Log: quietLog()}).Mount(srv.Mux)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ctx, 5*time.Second) }()
	t.Cleanup(func() { cancel(); <-done })
	return srv.Addr(), gdb
}

// postQuery posts a GraphQL request with X-Request-Id requestID (none when empty) and returns
// the response body and the response's X-Request-Id.
func postQuery(t testing.TB, addr, requestID, body string) ([]byte, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, "http://"+addr+"/query", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if requestID != "" {
		req.Header.Set("X-Request-Id", requestID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	reply, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /query: %s %s", resp.Status, reply)
	}
	return reply, resp.Header.Get("X-Request-Id")
}

// A GraphQL request makes one trace: the HTTP span, the operation's span as its child, the
// root field's span under that, and SQL spans below; every one carries the request id.
func TestRequestSpansFormOneTraceWithTheRequestID(t *testing.T) {
	enable(t)
	t.Parallel()
	addr, _ := serveAPI(t)

	const id = "trace-req-1"
	if _, got := postQuery(t, addr, id, `{"query":"query Names { namespaces { name } }","operationName":"Names"}`); got != id {
		t.Fatalf("X-Request-Id = %q, want %q", got, id)
	}
	waitFor(t, "the HTTP span", func() bool {
		return len(spansWhere(func(s tracetest.SpanStub) bool {
			return s.Name == "POST /query" && hasAttr(tracing.RequestIDKey, id)(s)
		})) == 1
	})
	byID := map[trace.SpanID]tracetest.SpanStub{}
	var traceID trace.TraceID
	for _, s := range spansWhere(hasAttr(tracing.RequestIDKey, id)) {
		byID[s.SpanContext.SpanID()] = s
		traceID = s.SpanContext.TraceID()
	}
	inTrace := spansWhere(func(s tracetest.SpanStub) bool { return s.SpanContext.TraceID() == traceID })
	if len(inTrace) != len(byID) {
		t.Fatalf("%d spans in the trace, %d of them with the request id: every span must have it", len(inTrace), len(byID))
	}
	one := func(name string) tracetest.SpanStub {
		t.Helper()
		var found []tracetest.SpanStub
		for _, s := range byID {
			if s.Name == name {
				found = append(found, s)
			}
		}
		if len(found) != 1 {
			t.Fatalf("%d spans named %q in the request's trace, want 1", len(found), name)
		}
		return found[0]
	}
	httpSpan, op, field := one("POST /query"), one("query Names"), one("Query.namespaces")
	if httpSpan.Parent.IsValid() || httpSpan.SpanKind != trace.SpanKindServer {
		t.Errorf("HTTP span: parent %v kind %v, want a root server span", httpSpan.Parent, httpSpan.SpanKind)
	}
	if op.Parent.SpanID() != httpSpan.SpanContext.SpanID() {
		t.Errorf("operation span's parent is %v, want the HTTP span", op.Parent.SpanID())
	}
	if v, _ := attr(op, "graphql.operation.type"); v.AsString() != "query" {
		t.Errorf("graphql.operation.type = %q", v.AsString())
	}
	if field.Parent.SpanID() != op.SpanContext.SpanID() {
		t.Errorf("root field span's parent is %v, want the operation span", field.Parent.SpanID())
	}
	var sql int
	for _, s := range byID {
		if _, ok := attr(s, "db.query.text"); !ok {
			continue
		}
		sql++
		// Each SQL span descends from the operation span.
		p, ok := s.Parent.SpanID(), false
		for hops := 0; hops < 10 && !ok; hops++ {
			ok = p == op.SpanContext.SpanID()
			p = byID[p].Parent.SpanID()
		}
		if !ok {
			t.Errorf("SQL span %q does not descend from the operation span", s.Name)
		}
	}
	if sql == 0 {
		t.Fatal("no SQL span in the request's trace")
	}
}

// A request without a usable X-Request-Id gets a generated one: the same in the response
// header as on the spans.
func TestGeneratedRequestIDIsTheOneOnTheSpans(t *testing.T) {
	enable(t)
	t.Parallel()
	addr, _ := serveAPI(t)
	_, id := postQuery(t, addr, "not valid: has spaces", `{"query":"{ namespaces { name } }"}`)
	if id == "" || id == "not valid: has spaces" {
		t.Fatalf("X-Request-Id = %q, want a generated id", id)
	}
	waitFor(t, "the spans of the generated id", func() bool {
		return len(spansWhere(func(s tracetest.SpanStub) bool {
			return s.Name == "POST /query" && hasAttr(tracing.RequestIDKey, id)(s)
		})) == 1 &&
			len(spansWhere(func(s tracetest.SpanStub) bool { return s.Name == "query" && hasAttr(tracing.RequestIDKey, id)(s) })) == 1
	})
}

// A GraphQL error fails the operation's span and the root field's span.
func TestFailedOperationMarksItsSpans(t *testing.T) {
	enable(t)
	t.Parallel()
	addr, _ := serveAPI(t)
	const id = "trace-req-error"
	postQuery(t, addr, id, `{"query":"mutation Refresh { refreshReadModel(name: \"nope\") { name } }"}`)
	ofRequest := hasAttr(tracing.RequestIDKey, id)
	waitFor(t, "the operation span", func() bool {
		return len(spansWhere(func(s tracetest.SpanStub) bool { return s.Name == "mutation Refresh" && ofRequest(s) })) == 1
	})
	for _, name := range []string{"mutation Refresh", "Mutation.refreshReadModel"} {
		spans := spansWhere(func(s tracetest.SpanStub) bool { return s.Name == name && ofRequest(s) })
		if len(spans) != 1 || spans[0].Status.Code != codes.Error {
			t.Errorf("%s: %d spans, want 1 with an error status: %+v", name, len(spans), spans)
		}
	}
}

// Every statement of a request has its SQL span: as many as the statements the response
// reports, the same count as without tracing (the statement budgets of graph/server).
func TestEveryStatementHasItsSpan(t *testing.T) {
	enable(t)
	t.Parallel()
	addr, _ := serveAPI(t)
	const id = "trace-req-count"
	body, _ := postQuery(t, addr, id, `{"query":"{ namespaces { name } namedTasks { name } tasks(first: 5) { edges { node { id steps { name } } } } }"}`)
	var reply struct {
		Extensions struct {
			QueryStats struct {
				SQLStatements int `json:"sqlStatements"`
			} `json:"queryStats"`
		} `json:"extensions"`
	}
	if err := json.Unmarshal(body, &reply); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the HTTP span", func() bool {
		return len(spansWhere(func(s tracetest.SpanStub) bool {
			return s.Name == "POST /query" && hasAttr(tracing.RequestIDKey, id)(s)
		})) == 1
	})
	statements := spansWhere(func(s tracetest.SpanStub) bool {
		return strings.HasPrefix(s.Name, "query ") && hasAttr(tracing.RequestIDKey, id)(s)
	})
	if n := reply.Extensions.QueryStats.SQLStatements; n == 0 || len(statements) != n {
		t.Fatalf("%d SQL spans, %d statements reported: want equal and not 0 (%s)", len(statements), n, body)
	}
}

// An engine's attempt makes claim → run → record spans, each with the step's ids.
func TestEngineSpansClaimRunRecord(t *testing.T) {
	enable(t)
	t.Parallel()
	ctx := context.Background()
	url := dbtest.NewURL(t)
	gdb, err := database.Open(ctx, url, database.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = database.Close(gdb) })
	handlers := handler.NewBuiltinRegistry()
	reg, err := template.Shipped(handlers)
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.RegisterAll(ctx, gdb); err != nil {
		t.Fatal(err)
	}
	task, _, err := orchestration.NewService(gdb, reg).CreateTask(ctx, orchestration.CreateTaskRequest{
		Namespace: "examples", Name: "linear_workflow", Context: []byte(`{}`), Initiator: "test", Reason: "tracing",
	})
	if err != nil {
		t.Fatal(err)
	}
	engine, err := orchestration.New(orchestration.NewService(gdb, nil), nil, orchestration.NewConfiguredHandlers(handlers),
		orchestration.Config{PollInterval: 50 * time.Millisecond}, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	if err := engine.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = engine.Stop(context.Background()) })

	var stepIDs []int64
	if err := gdb.Raw(`SELECT workflow_step_id FROM tasker_workflow_steps WHERE task_id = ? ORDER BY 1`, task.TaskID).Scan(&stepIDs).Error; err != nil || len(stepIDs) == 0 {
		t.Fatalf("steps of task %d: %v %v", task.TaskID, stepIDs, err)
	}
	taskID := fmt.Sprint(task.TaskID)
	ofTask := hasAttr(tracing.TaskIDKey, taskID)
	// process_data fails once: 7 attempts, each recorded.
	waitFor(t, "the record span of every attempt", func() bool {
		return len(spansWhere(func(s tracetest.SpanStub) bool { return s.Name == "orchestration.record" && ofTask(s) })) == len(stepIDs)+1
	})
	byID := map[trace.SpanID]tracetest.SpanStub{}
	for _, s := range exporter.GetSpans() {
		byID[s.SpanContext.SpanID()] = s
	}
	runs := spansWhere(func(s tracetest.SpanStub) bool { return s.Name == "orchestration.run" && ofTask(s) })
	if len(runs) != len(stepIDs)+1 {
		t.Fatalf("%d run spans, want %d", len(runs), len(stepIDs)+1)
	}
	failed := 0
	for _, run := range runs {
		step, _ := attr(run, tracing.StepIDKey)
		attempt, _ := attr(run, tracing.AttemptKey)
		if !slices.Contains(stepIDs, step.AsInt64()) || attempt.AsInt64() < 1 {
			t.Errorf("run span with step %v attempt %v", step.Emit(), attempt.Emit())
		}
		if run.Status.Code == codes.Error {
			failed++
		}
		claim, ok := byID[run.Parent.SpanID()]
		if !ok || claim.Name != "orchestration.claim" || claim.SpanContext.TraceID() != run.SpanContext.TraceID() {
			t.Errorf("run of step %d: parent %q, want its claim span", step.AsInt64(), claim.Name)
		} else if ids, _ := attr(claim, "tasker.step_ids"); !slices.Contains(ids.AsInt64Slice(), step.AsInt64()) {
			t.Errorf("claim span lists steps %v, not %d", ids.AsInt64Slice(), step.AsInt64())
		}
		records := spansWhere(func(s tracetest.SpanStub) bool {
			return s.Name == "orchestration.record" && s.Parent.SpanID() == run.SpanContext.SpanID()
		})
		if len(records) != 1 {
			t.Errorf("run of step %d attempt %d has %d record spans, want 1", step.AsInt64(), attempt.AsInt64(), len(records))
			continue
		}
		if got, _ := attr(records[0], tracing.StepIDKey); got.AsInt64() != step.AsInt64() {
			t.Errorf("record span of step %d names step %d", step.AsInt64(), got.AsInt64())
		}
	}
	if failed != 1 {
		t.Errorf("%d failed run spans, want 1 (process_data fails once)", failed)
	}
	// The recording's statements are children of a record span.
	sqlUnderRecord := spansWhere(func(s tracetest.SpanStub) bool {
		p, ok := byID[s.Parent.SpanID()]
		_, isSQL := attr(s, "db.query.text")
		return isSQL && ok && p.Name == "orchestration.record" && ofTask(p)
	})
	if len(sqlUnderRecord) == 0 {
		t.Error("no SQL span under the record spans")
	}
}

// A websocket upgrade goes through the traced server: the connection is acknowledged, and its
// HTTP span, ended when the connection closes, carries the request id.
func TestWebsocketThroughTracedServer(t *testing.T) {
	enable(t)
	t.Parallel()
	addr, _ := serveAPI(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	const id = "trace-ws-1"
	conn, _, err := websocket.Dial(ctx, "ws://"+addr+"/query", &websocket.DialOptions{
		Subprotocols: []string{"graphql-transport-ws"},
		HTTPHeader:   http.Header{"X-Request-Id": []string{id}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.Write(ctx, websocket.MessageText, []byte(`{"type":"connection_init"}`)); err != nil {
		t.Fatal(err)
	}
	_, msg, err := conn.Read(ctx)
	if err != nil || !strings.Contains(string(msg), `"connection_ack"`) {
		t.Fatalf("after connection_init: %s %v", msg, err)
	}
	_ = conn.Close(websocket.StatusNormalClosure, "")
	waitFor(t, "the upgrade's HTTP span", func() bool {
		return len(spansWhere(func(s tracetest.SpanStub) bool { return s.Name == "GET /query" && hasAttr(tracing.RequestIDKey, id)(s) })) == 1
	})
}
