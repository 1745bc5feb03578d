package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"
	"gorm.io/gorm"

	"github.com/taskerhq/tasker/graph/server"
	"github.com/taskerhq/tasker/internal/auth"
	"github.com/taskerhq/tasker/internal/metrics"
	"github.com/taskerhq/tasker/internal/querystats"
	"github.com/taskerhq/tasker/internal/testkit/logbuf"
)

// secureEnv is the real handler behind the auth guard and metrics, on an httptest server.
type secureEnv struct {
	t       testing.TB
	db      *gorm.DB
	store   *auth.Store
	guard   *auth.Guard
	logs    *logbuf.Buffer
	metrics *metrics.Metrics
	srv     *httptest.Server
	tokens  map[auth.Role]string
}

// secureOption changes how newSecureEnv builds the server.
type secureOption func(*secureSetup)

type secureSetup struct {
	noRevocationWatch bool // the guard is not told of revocations (no NOTIFY)
	store             func(db *gorm.DB) *auth.Store
}

func newSecureEnv(t testing.TB, mode auth.Mode, limits auth.Limits, opts ...secureOption) *secureEnv {
	t.Helper()
	b := newBackend(t, querystats.Tracer{}, 20)
	ctx, db, hub, log := b.ctx, b.db, b.hub, b.log
	var setup secureSetup
	for _, o := range opts {
		o(&setup)
	}
	store := auth.NewStore(db)
	guardStore := store
	if setup.store != nil {
		guardStore = setup.store(db)
	}
	guard, err := auth.NewGuard(mode, guardStore, limits, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	if !setup.noRevocationWatch {
		guard.WatchRevocations(hub)
	}
	m := metrics.New(metrics.Options{DB: db, Hub: hub, Log: log})
	api := server.New(server.Config{}, server.Deps{DB: db, Hub: hub, Log: log, Templates: b.templates, Guard: guard, Metrics: m})
	mux := http.NewServeMux()
	api.Mount(mux)
	mux.Handle("GET /metrics", m.Handler())
	e := &secureEnv{t: t, db: db, store: store, guard: guard, metrics: m, srv: b.serve(mux), logs: b.logs,
		tokens: map[auth.Role]string{}}
	for _, r := range auth.Roles {
		_, secret, err := store.Create(ctx, r, string(r)+"-token")
		if err != nil {
			t.Fatal(err)
		}
		e.tokens[r] = secret
	}
	return e
}

type secError struct {
	Message    string         `json:"message"`
	Extensions map[string]any `json:"extensions"`
}

type secResponse struct {
	status int
	header http.Header
	Data   map[string]json.RawMessage `json:"data"`
	Errors []secError                 `json:"errors"`
}

func (r secResponse) code() string {
	if len(r.Errors) == 0 {
		return ""
	}
	c, _ := r.Errors[0].Extensions["code"].(string)
	return c
}

// call POSTs body with the bearer token (none when token is "").
func (e *secureEnv) call(token string, body []byte, header ...string) secResponse {
	e.t.Helper()
	return e.callAs(e.t, token, body, header...)
}

// callAs is call reporting failures to t.
func (e *secureEnv) callAs(t testing.TB, token string, body []byte, header ...string) secResponse {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.srv.URL+"/query", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	out := secResponse{status: resp.StatusCode, header: resp.Header}
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("status %d, body %q is not a GraphQL response: %v", resp.StatusCode, raw, err)
	}
	return out
}

func (e *secureEnv) gql(token, query string, vars map[string]any) secResponse {
	e.t.Helper()
	body, _ := json.Marshal(map[string]any{"query": query, "variables": vars})
	return e.call(token, body)
}

const (
	tasksQuery     = `{ tasks(first: 5) { edges { node { id status } } } }`
	createLinear   = `mutation { createTask(input: {namespace: "examples", name: "linear_workflow"}) { id initiator } }`
	cancelTaskMut  = `mutation($id: ID!) { cancelTask(id: $id) { id status } }`
	taskTransSub   = `subscription { taskTransitions(afterTransitionId: "0") { id toState metadata } }`
	introspection  = `{ __schema { queryType { name } } }`
	deepQueryLevel = 20
)

func (e *secureEnv) createTask(token string) string {
	e.t.Helper()
	r := e.gql(token, createLinear, nil)
	if len(r.Errors) > 0 {
		e.t.Fatalf("createTask: %+v", r.Errors)
	}
	var out struct{ ID, Initiator string }
	if err := json.Unmarshal(r.Data["createTask"], &out); err != nil || out.ID == "" {
		e.t.Fatalf("createTask returned %s: %v", r.Data["createTask"], err)
	}
	return out.ID
}

func TestRolesOverHTTP(t *testing.T) {
	t.Parallel()
	e := newSecureEnv(t, auth.Required, auth.Limits{})

	// Without a token, or with a bad one: 401 UNAUTHENTICATED, before anything runs.
	for name, tok := range map[string]string{"none": "", "malformed": "not-a-token", "unknown": auth.TokenPrefix + "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"} {
		r := e.gql(tok, tasksQuery, nil)
		if r.status != http.StatusUnauthorized || r.code() != string(auth.Unauthenticated) || r.Data != nil {
			t.Errorf("%s token: status %d code %q data %v, want 401 UNAUTHENTICATED", name, r.status, r.code(), r.Data)
		}
	}
	r := e.call("", []byte(`{"query":"{ tasks { totalCount } }"}`), "X-Request-Id", "req-401")
	if r.header.Get("X-Request-Id") != "req-401" || r.Errors[0].Extensions["requestId"] != "req-401" {
		t.Errorf("refusal does not echo the request id: header %q, extensions %v", r.header.Get("X-Request-Id"), r.Errors[0].Extensions)
	}

	// Every role may query and introspect.
	for _, role := range auth.Roles {
		for _, q := range []string{tasksQuery, introspection} {
			if r := e.gql(e.tokens[role], q, nil); r.status != http.StatusOK || len(r.Errors) > 0 {
				t.Errorf("%s %q: status %d errors %+v", role, q, r.status, r.Errors)
			}
		}
	}

	// A reader may not mutate; nothing is written.
	r = e.gql(e.tokens[auth.Reader], createLinear, nil)
	if r.code() != string(auth.Forbidden) || !strings.Contains(r.Errors[0].Message, "Mutation.createTask needs the operator role") {
		t.Fatalf("reader createTask: %+v, want FORBIDDEN naming the field and role", r.Errors)
	}
	var tasks int64
	e.db.Raw(`SELECT count(*) FROM tasker_tasks`).Scan(&tasks)
	if tasks != 0 {
		t.Fatalf("a refused mutation wrote %d tasks", tasks)
	}
	// Hiding the mutation in a fragment does not get it past the check.
	r = e.gql(e.tokens[auth.Reader], `mutation { ...M } fragment M on Mutation { createTask(input: {name: "linear_workflow", namespace: "examples"}) { id } }`, nil)
	if r.code() != string(auth.Forbidden) {
		t.Fatalf("reader createTask in a fragment: %+v, want FORBIDDEN", r.Errors)
	}

	// Operators and admins may; each change records who made it.
	for _, role := range []auth.Role{auth.Operator, auth.Admin} {
		id := e.createTask(e.tokens[role])
		r := e.gql(e.tokens[role], cancelTaskMut, map[string]any{"id": id})
		if len(r.Errors) > 0 {
			t.Fatalf("%s cancelTask: %+v", role, r.Errors)
		}
		var actor struct {
			Name, Role string
			TokenID    int64 `json:"token_id"`
		}
		var meta string
		e.db.Raw(`SELECT (metadata->'actor')::text FROM tasker_task_transitions WHERE task_id = ? AND most_recent`, id).Scan(&meta)
		if err := json.Unmarshal([]byte(meta), &actor); err != nil || actor.Name != string(role)+"-token" || actor.Role != string(role) || actor.TokenID == 0 {
			t.Fatalf("%s cancelTask recorded actor %s (%v)", role, meta, err)
		}
		var initiator string
		e.db.Raw(`SELECT initiator FROM tasker_tasks WHERE task_id = ?`, id).Scan(&initiator)
		if initiator != "token:"+string(role)+"-token" {
			t.Fatalf("%s createTask initiator %q, want the token's name", role, initiator)
		}
	}

	// Refreshing read models is for admins only (an operator is refused before anything runs).
	r = e.gql(e.tokens[auth.Operator], `mutation { refreshReadModel(name: "nope") { __typename } }`, nil)
	if r.code() != string(auth.Forbidden) || !strings.Contains(r.Errors[0].Message, "needs the admin role") {
		t.Fatalf("operator refreshReadModel: %+v, want FORBIDDEN needing admin", r.Errors)
	}
	if r := e.gql(e.tokens[auth.Admin], `mutation { refreshReadModel(name: "nope") { __typename } }`, nil); r.code() == string(auth.Forbidden) {
		t.Fatalf("admin refreshReadModel refused: %+v", r.Errors)
	}

	// A revoked token is refused by the next request.
	if _, err := e.store.Revoke(context.Background(), e.tokens[auth.Operator]); err != nil {
		t.Fatal(err)
	}
	if r := e.gql(e.tokens[auth.Operator], tasksQuery, nil); r.status != http.StatusUnauthorized || r.code() != string(auth.Unauthenticated) {
		t.Fatalf("revoked token: status %d code %q, want 401 UNAUTHENTICATED", r.status, r.code())
	}
}

func TestOpenModeAdmitsEveryoneAsAnonymous(t *testing.T) {
	t.Parallel()
	e := newSecureEnv(t, auth.Off, auth.Limits{})
	id := e.createTask("")
	if r := e.gql("", cancelTaskMut, map[string]any{"id": id}); len(r.Errors) > 0 {
		t.Fatalf("open cancelTask: %+v", r.Errors)
	}
	var meta string
	e.db.Raw(`SELECT metadata->'actor'->>'authentication' FROM tasker_task_transitions WHERE task_id = ? AND most_recent`, id).Scan(&meta)
	if meta != "off" {
		t.Fatalf("open mode recorded actor %s, want authentication off", meta)
	}
}

func TestRequestLimits(t *testing.T) {
	t.Parallel()
	e := newSecureEnv(t, auth.Required, auth.Limits{MaxBodyBytes: 8192, RatePerSecond: 1000, Burst: 1000})
	tok := e.tokens[auth.Reader]

	big, _ := json.Marshal(map[string]any{"query": "{ tasks { totalCount } }", "variables": map[string]any{"pad": strings.Repeat("x", 16384)}})
	r := e.call(tok, big)
	if r.status != http.StatusRequestEntityTooLarge || r.code() != string(auth.RequestTooLarge) {
		t.Fatalf("large body: status %d code %q, want 413 REQUEST_TOO_LARGE", r.status, r.code())
	}

	if r := e.call(tok, []byte(`{"query": "{ tasks { totalCount } }"`)); r.status != http.StatusBadRequest || r.code() != string(auth.BadRequest) ||
		strings.Contains(r.Errors[0].Message, "totalCount") {
		t.Fatalf("malformed JSON: status %d code %q message %q, want 400 BAD_REQUEST without the body echoed", r.status, r.code(), r.Errors[0].Message)
	}

	deep := "id"
	for i := 0; i < 10; i++ {
		deep = "steps { task { " + deep + " } }"
	}
	deep = "{ tasks { edges { node { " + deep + " } } } }"
	if r := e.gql(tok, deep, nil); r.code() != "DEPTH_LIMIT_EXCEEDED" {
		t.Fatalf("deep query: %+v, want DEPTH_LIMIT_EXCEEDED", r.Errors)
	}
	wide := "{"
	for i := 0; i < 30; i++ {
		wide += fmt.Sprintf(" t%d: tasks(first: 500) { edges { node { id status steps { id } } } }", i)
	}
	wide += " }"
	if r := e.gql(tok, wide, nil); r.code() != "COMPLEXITY_LIMIT_EXCEEDED" {
		t.Fatalf("complex query: %+v, want COMPLEXITY_LIMIT_EXCEEDED", r.Errors)
	}
}

func TestRateLimitPerToken(t *testing.T) {
	t.Parallel()
	e := newSecureEnv(t, auth.Required, auth.Limits{RatePerSecond: 0.01, Burst: 3})
	for i := 0; i < 3; i++ {
		if r := e.gql(e.tokens[auth.Reader], tasksQuery, nil); r.status != http.StatusOK {
			t.Fatalf("request %d within the burst: status %d %+v", i+1, r.status, r.Errors)
		}
	}
	r := e.gql(e.tokens[auth.Reader], tasksQuery, nil)
	if r.status != http.StatusTooManyRequests || r.code() != string(auth.RateLimited) || r.header.Get("Retry-After") == "" {
		t.Fatalf("over the burst: status %d code %q Retry-After %q, want 429 RATE_LIMITED", r.status, r.code(), r.header.Get("Retry-After"))
	}
	// Another token has its own budget.
	if r := e.gql(e.tokens[auth.Operator], tasksQuery, nil); r.status != http.StatusOK {
		t.Fatalf("another token: status %d, want 200", r.status)
	}
}

func TestStatementTimeoutIsACodedError(t *testing.T) {
	t.Parallel()
	e := newSecureEnv(t, auth.Required, auth.Limits{StatementTimeout: time.Nanosecond})
	r := e.gql(e.tokens[auth.Reader], tasksQuery, nil)
	if r.code() != string(auth.StatementTimeout) || !strings.Contains(r.Errors[0].Message, "time limit") {
		t.Fatalf("timed-out query: %+v, want STATEMENT_TIMEOUT", r.Errors)
	}
	if strings.Contains(r.Errors[0].Message, "context") || strings.Contains(r.Errors[0].Message, "SQL") {
		t.Fatalf("timeout message leaks internals: %q", r.Errors[0].Message)
	}
}

// wsDial opens a graphql-transport-ws connection and sends connection_init with payload.
func (e *secureEnv) wsDial(t *testing.T, payload map[string]any) (*websocket.Conn, context.Context) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	url := "ws" + strings.TrimPrefix(e.srv.URL, "http") + "/query"
	conn, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{Subprotocols: []string{"graphql-transport-ws"}})
	if err != nil {
		t.Fatalf("dialing %s: %v", url, err)
	}
	t.Cleanup(func() { _ = conn.CloseNow() })
	raw, _ := json.Marshal(payload)
	if err := wsjson.Write(ctx, conn, map[string]any{"type": "connection_init", "payload": json.RawMessage(raw)}); err != nil {
		t.Fatal(err)
	}
	return conn, ctx
}

type wsMsg struct {
	ID      string          `json:"id"`
	Type    string          `json:"type"`
	Payload json.RawMessage `json:"payload"`
}

func wsNext(t *testing.T, ctx context.Context, conn *websocket.Conn) (wsMsg, error) {
	t.Helper()
	for {
		var m wsMsg
		if err := wsjson.Read(ctx, conn, &m); err != nil {
			return m, err
		}
		if m.Type != "ping" && m.Type != "pong" && m.Type != "ka" {
			return m, nil
		}
	}
}

func TestWebsocketAuthentication(t *testing.T) {
	t.Parallel()
	e := newSecureEnv(t, auth.Required, auth.Limits{MaxSubscriptions: 2, MaxWebsocketMessageBytes: 4096})

	for name, payload := range map[string]map[string]any{
		"no token":  {},
		"bad token": {"Authorization": "Bearer " + auth.TokenPrefix + "nope"},
	} {
		conn, ctx := e.wsDial(t, payload)
		_, err := wsNext(t, ctx, conn)
		if status := websocket.CloseStatus(err); status != auth.CloseUnauthenticated {
			t.Errorf("%s: connection ended with %v (status %d), want close %d", name, err, status, auth.CloseUnauthenticated)
		}
		var ce websocket.CloseError
		if errors.As(err, &ce) && !strings.HasPrefix(ce.Reason, string(auth.Unauthenticated)) {
			t.Errorf("%s: close reason %q, want it to start with UNAUTHENTICATED", name, ce.Reason)
		}
	}

	// A reader subscribes and sees the transitions an operator makes.
	id := e.createTask(e.tokens[auth.Operator])
	conn, ctx := e.wsDial(t, map[string]any{"Authorization": "Bearer " + e.tokens[auth.Reader]})
	if m, err := wsNext(t, ctx, conn); err != nil || m.Type != "connection_ack" {
		t.Fatalf("reader connection_init: %+v %v, want connection_ack", m, err)
	}
	subscribe := func(id, query string) {
		payload, _ := json.Marshal(map[string]any{"query": query})
		if err := wsjson.Write(ctx, conn, map[string]any{"id": id, "type": "subscribe", "payload": json.RawMessage(payload)}); err != nil {
			t.Fatal(err)
		}
	}
	subscribe("1", taskTransSub)
	if r := e.gql(e.tokens[auth.Operator], cancelTaskMut, map[string]any{"id": id}); len(r.Errors) > 0 {
		t.Fatal(r.Errors)
	}
	m, err := wsNext(t, ctx, conn)
	if err != nil || m.Type != "next" || m.ID != "1" || !strings.Contains(string(m.Payload), "CANCELLED") {
		t.Fatalf("reader subscription: %+v %v, want the cancelled transition", m, err)
	}

	// A mutation over the websocket is checked like any other.
	subscribe("2", createLinear)
	if m, err := wsNext(t, ctx, conn); err != nil || m.ID != "2" || !strings.Contains(string(m.Payload), string(auth.Forbidden)) {
		t.Fatalf("reader mutation over websocket: %+v %v, want FORBIDDEN", m, err)
	}
	drainUntilComplete(t, ctx, conn, "2")

	// Two subscriptions per connection: of two more started at once, one is refused; the
	// others keep running.
	subscribe("3", taskTransSub)
	subscribe("4", taskTransSub)
	for refused := false; !refused; {
		m, err := wsNext(t, ctx, conn)
		if err != nil {
			t.Fatal(err)
		}
		if (m.ID == "3" || m.ID == "4") && strings.Contains(string(m.Payload), string(auth.TooManySubs)) {
			refused = true
		}
	}

	// A message over the size limit closes the connection with 1009.
	big, _ := json.Marshal(map[string]any{"query": taskTransSub, "variables": map[string]any{"pad": strings.Repeat("x", 8192)}})
	if err := wsjson.Write(ctx, conn, map[string]any{"id": "5", "type": "subscribe", "payload": json.RawMessage(big)}); err != nil {
		t.Fatal(err)
	}
	for {
		_, err := wsNext(t, ctx, conn)
		if err == nil {
			continue
		}
		if status := websocket.CloseStatus(err); status != websocket.StatusMessageTooBig {
			t.Fatalf("oversized message: connection ended with %v (status %d), want %d", err, status, websocket.StatusMessageTooBig)
		}
		break
	}
}

func drainUntilComplete(t *testing.T, ctx context.Context, conn *websocket.Conn, id string) {
	t.Helper()
	for {
		m, err := wsNext(t, ctx, conn)
		if err != nil {
			t.Fatal(err)
		}
		if m.ID == id && (m.Type == "complete" || m.Type == "error") {
			return
		}
	}
}

func TestMetricsAfterTraffic(t *testing.T) {
	t.Parallel()
	e := newSecureEnv(t, auth.Required, auth.Limits{})
	e.gql(e.tokens[auth.Reader], tasksQuery, nil)
	e.createTask(e.tokens[auth.Operator])
	e.gql("", tasksQuery, nil)
	resp, err := http.Get(e.srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, want := range []string{
		`tasker_graphql_requests_total{field="tasks",outcome="ok",type="query"} 1`,
		`tasker_graphql_requests_total{field="createTask",outcome="ok",type="mutation"} 1`,
		`tasker_graphql_request_duration_seconds_count{field="tasks",type="query"} 1`,
		`tasker_graphql_sql_statements_count{field="tasks",type="query"} 1`,
		`tasker_http_requests_total{code="401",handler="graphql"} 1`,
		`tasker_http_requests_total{code="200",handler="graphql"} 2`,
		`tasker_ready_steps 1`,
		`tasker_subscribers`,
		`go_sql_in_use_connections{db_name="tasker"}`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
