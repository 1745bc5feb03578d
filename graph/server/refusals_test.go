package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/coder/websocket/wsjson"
	"gorm.io/gorm"

	"github.com/taskerhq/tasker/internal/auth"
	"github.com/taskerhq/tasker/internal/database"
	"github.com/taskerhq/tasker/internal/testkit/dbtest"
	"github.com/taskerhq/tasker/internal/testkit/wait"
)

// securityRow is one row of SECURITY.md's table of refusals.
type securityRow struct {
	input, status, code string
	elsewhere           string // the test that proves a row needing its own server
}

// securityRows reads the table under "## Bad input and what it gets".
func securityRows(t *testing.T) []securityRow {
	t.Helper()
	doc, err := os.ReadFile(filepath.Join("..", "..", "SECURITY.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(doc), "## Bad input and what it gets")
	if !ok {
		t.Fatal("SECURITY.md has no section \"Bad input and what it gets\"")
	}
	section, _, _ = strings.Cut(section, "\n## ")
	elsewhere := regexp.MustCompile(`\*\((Test\w+)\)\*`)
	var rows []securityRow
	for _, line := range strings.Split(section, "\n") {
		if !strings.HasPrefix(line, "| ") || strings.HasPrefix(line, "| input ") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "| "), "|")
		if len(cells) < 3 {
			t.Fatalf("SECURITY.md row %q has fewer than 3 cells", line)
		}
		r := securityRow{input: strings.TrimSpace(cells[0])}
		if m := elsewhere.FindStringSubmatch(r.input); m != nil {
			r.elsewhere = m[1]
		}
		status := strings.ReplaceAll(strings.TrimSpace(cells[1]), "`", "")
		status, _, _ = strings.Cut(status, " (")
		r.status = strings.TrimSuffix(status, ", then complete")
		code := strings.ReplaceAll(strings.TrimSpace(cells[2]), "`", "")
		code = strings.TrimPrefix(code, "reason ")
		code, _, _ = strings.Cut(code, ":")
		r.code = strings.TrimSpace(code)
		rows = append(rows, r)
	}
	if len(rows) < 30 {
		t.Fatalf("read %d rows from SECURITY.md's table, want the whole table", len(rows))
	}
	return rows
}

// outcome is what one probe got: an HTTP status ("401"), a websocket close ("close 4401") or
// a websocket message ("next message with errors"), and the error code.
type outcome struct{ status, code string }

type probeEnv struct {
	*secureEnv
	broken *secureEnv // its guard's token store is unreachable
	stepID string     // a pending step
	taskID string
}

// httpOutcome sends a request and reads its status and first error code.
func (p *probeEnv) httpOutcome(t *testing.T, method, path, contentType, token string, body []byte) outcome {
	t.Helper()
	req, err := http.NewRequest(method, p.srv.URL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if token != "" {
		req.Header.Set("Authorization", token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r secResponse
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatalf("%s %s: status %d, body is not a GraphQL response: %v", method, path, resp.StatusCode, err)
	}
	return outcome{fmt.Sprint(resp.StatusCode), r.code()}
}

func (p *probeEnv) post(t *testing.T, role auth.Role, body string) outcome {
	t.Helper()
	return p.httpOutcome(t, http.MethodPost, "/query", "application/json", "Bearer "+p.tokens[role], []byte(body))
}

func (p *probeEnv) gqlOutcome(t *testing.T, role auth.Role, query string, vars map[string]any) outcome {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"query": query, "variables": vars})
	return p.post(t, role, string(body))
}

func (p *probeEnv) get(t *testing.T, role auth.Role, params url.Values) outcome {
	t.Helper()
	return p.httpOutcome(t, http.MethodGet, "/query?"+params.Encode(), "", "Bearer "+p.tokens[role], nil)
}

// wsOutcome opens a connection as token, sends each payload as a subscribe message, and
// returns what ends the exchange: the close code, or the first error message's code.
func (p *probeEnv) wsOutcome(t *testing.T, env *secureEnv, token string, messages ...json.RawMessage) outcome {
	t.Helper()
	init := map[string]any{}
	if token != "" {
		init["Authorization"] = "Bearer " + token
	}
	conn, ctx := env.wsDial(t, init)
	defer conn.CloseNow()
	for i, m := range messages {
		if err := wsjson.Write(ctx, conn, map[string]any{"id": fmt.Sprint(i), "type": "subscribe", "payload": m}); err != nil {
			break // the server may already have closed the connection
		}
	}
	for {
		m, err := wsNext(t, ctx, conn)
		if err != nil {
			var ce websocket.CloseError
			if errors.As(err, &ce) {
				code, _, _ := strings.Cut(ce.Reason, ":")
				if ce.Code == websocket.StatusMessageTooBig {
					code = ""
				}
				return outcome{fmt.Sprintf("close %d", ce.Code), code}
			}
			t.Fatalf("websocket ended with %v", err)
		}
		if m.Type != "next" && m.Type != "error" {
			continue
		}
		var errs []secError
		if m.Type == "next" {
			var r secResponse
			_ = json.Unmarshal(m.Payload, &r)
			errs = r.Errors
		} else {
			_ = json.Unmarshal(m.Payload, &errs)
		}
		if len(errs) == 0 {
			continue
		}
		c, _ := errs[0].Extensions["code"].(string)
		if m.Type == "error" {
			return outcome{"error message", c}
		}
		return outcome{m.Type + " message with errors", c}
	}
}

func payload(query string, vars map[string]any) json.RawMessage {
	b, _ := json.Marshal(map[string]any{"query": query, "variables": vars})
	return b
}

// newProbeEnv is a server with default limits, a task with a pending step, and a second
// server whose token store is unreachable.
func newProbeEnv(t *testing.T) *probeEnv {
	e := newSecureEnv(t, auth.Required, auth.Limits{})
	broken := newSecureEnv(t, auth.Required, auth.Limits{}, func(s *secureSetup) {
		s.store = func(*gorm.DB) *auth.Store {
			db := dbtest.New(t)
			_ = database.SQL(db).Close()
			return auth.NewStore(db)
		}
	})
	p := &probeEnv{secureEnv: e, broken: broken}
	p.taskID = e.createTask(e.tokens[auth.Operator])
	r := e.gql(e.tokens[auth.Reader], `query($id: ID!) { task(id: $id) { steps { id status } } }`, map[string]any{"id": p.taskID})
	var task struct{ Steps []struct{ ID, Status string } }
	if err := json.Unmarshal(r.Data["task"], &task); err != nil || len(task.Steps) == 0 {
		t.Fatalf("task steps: %s %v", r.Data["task"], err)
	}
	for _, s := range task.Steps {
		if s.Status == "PENDING" {
			p.stepID = s.ID
		}
	}
	return p
}

// freshToken is a new token of role, with its own rate budget.
func (p *probeEnv) freshToken(t *testing.T, role auth.Role) string {
	t.Helper()
	_, secret, err := p.store.Create(context.Background(), role, "probe")
	if err != nil {
		t.Fatal(err)
	}
	return secret
}

// probes sends each row's input; the key is the row's input cell.
var probes = map[string]func(t *testing.T, p *probeEnv) []outcome{
	"no `Authorization` header": func(t *testing.T, p *probeEnv) []outcome {
		return []outcome{p.httpOutcome(t, http.MethodPost, "/query", "application/json", "", []byte(`{"query":"{ namespaces { name } }"}`))}
	},
	"`Authorization: Basic …`, a malformed, unknown or revoked token": func(t *testing.T, p *probeEnv) []outcome {
		revoked := p.freshToken(t, auth.Reader)
		if _, err := p.store.Revoke(context.Background(), revoked); err != nil {
			t.Fatal(err)
		}
		var out []outcome
		for _, h := range []string{"Basic dXNlcjpwYXNz", "Bearer nope", "Bearer " + auth.TokenPrefix + "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "Bearer " + revoked} {
			out = append(out, p.httpOutcome(t, http.MethodPost, "/query", "application/json", h, []byte(`{"query":"{ namespaces { name } }"}`)))
		}
		return out
	},
	"token store unreachable while checking a token": func(t *testing.T, p *probeEnv) []outcome {
		return []outcome{(&probeEnv{secureEnv: p.broken}).post(t, auth.Reader, `{"query":"{ namespaces { name } }"}`)}
	},
	"reader runs a mutation (also inside a fragment)": func(t *testing.T, p *probeEnv) []outcome {
		return []outcome{
			p.gqlOutcome(t, auth.Reader, cancelTaskMut, map[string]any{"id": p.taskID}),
			p.gqlOutcome(t, auth.Reader, `mutation { ...M } fragment M on Mutation { createTask(input: {name: "linear_workflow", namespace: "examples"}) { id } }`, nil),
		}
	},
	"operator runs `refreshReadModel`": func(t *testing.T, p *probeEnv) []outcome {
		return []outcome{p.gqlOutcome(t, auth.Operator, `mutation { refreshReadModel(name: "tasker_step_performance") { name } }`, nil)}
	},
	"body over the limit": func(t *testing.T, p *probeEnv) []outcome {
		return []outcome{p.post(t, auth.Reader, `{"query":"{ namespaces { name } }","variables":{"pad":"`+strings.Repeat("x", 1<<20)+`"}}`)}
	},
	"JSON POST body that is not JSON": func(t *testing.T, p *probeEnv) []outcome {
		return []outcome{p.post(t, auth.Reader, `{"query": "{ namespaces { name } }"`)}
	},
	"JSON POST body that is not one request object: `[]`, a batch `[{…}, {…}]`, `\"str\"`, `123`": func(t *testing.T, p *probeEnv) []outcome {
		var out []outcome
		for _, body := range []string{`[]`, `[{"query":"{ namespaces { name } }"},{"query":"mutation { cancelTask(id: \"1\") { id } }"}]`, `"str"`, `123`, `null`, `true`} {
			out = append(out, p.post(t, auth.Reader, body))
		}
		return out
	},
	"a request field of the wrong type: `{\"query\": 5}`, `\"variables\": []`": func(t *testing.T, p *probeEnv) []outcome {
		var out []outcome
		for _, body := range []string{`{"query": 5}`, `{"query": "{ namespaces { name } }", "variables": []}`, `{"query": "{ namespaces { name } }", "operationName": 1}`, `{"query": "{ namespaces { name } }", "extensions": "x"}`} {
			out = append(out, p.post(t, auth.Reader, body))
		}
		return out
	},
	"POST with a `Content-Type` other than `application/json`": func(t *testing.T, p *probeEnv) []outcome {
		return []outcome{
			p.httpOutcome(t, http.MethodPost, "/query", "text/plain", "Bearer "+p.tokens[auth.Reader], []byte(`{"query":"{ namespaces { name } }"}`)),
			p.httpOutcome(t, http.MethodPost, "/query", "", "Bearer "+p.tokens[auth.Reader], []byte(`{"query":"{ namespaces { name } }"}`)),
		}
	},
	"a method other than GET, POST and OPTIONS (`PUT`, `DELETE`)": func(t *testing.T, p *probeEnv) []outcome {
		return []outcome{
			p.httpOutcome(t, http.MethodPut, "/query", "application/json", "Bearer "+p.tokens[auth.Reader], []byte(`{"query":"{ namespaces { name } }"}`)),
			p.httpOutcome(t, http.MethodDelete, "/query", "", "Bearer "+p.tokens[auth.Reader], nil),
		}
	},
	"a mutation sent by GET": func(t *testing.T, p *probeEnv) []outcome {
		return []outcome{p.get(t, auth.Operator, url.Values{"query": {`mutation { cancelTask(id: "` + p.taskID + `") { id } }`}})}
	},
	"GET `variables` or `extensions` that are not a JSON object": func(t *testing.T, p *probeEnv) []outcome {
		q := `query($n: String) { namedTasks(namespace: $n) { name } }`
		return []outcome{
			p.get(t, auth.Reader, url.Values{"query": {q}, "variables": {`{"n": `}}),
			p.get(t, auth.Reader, url.Values{"query": {q}, "variables": {`[1]`}}),
			p.get(t, auth.Reader, url.Values{"query": {q}, "extensions": {`x`}}),
		}
	},
	"a subscription sent over HTTP rather than a websocket": func(t *testing.T, p *probeEnv) []outcome {
		return []outcome{p.gqlOutcome(t, auth.Reader, taskTransSub, nil)}
	},
	"over the token's rate": func(t *testing.T, p *probeEnv) []outcome {
		tok := p.freshToken(t, auth.Reader)
		for range 400 {
			o := p.httpOutcome(t, http.MethodPost, "/query", "application/json", "Bearer "+tok, []byte(`{"query":"{ __typename }"}`))
			if o.status != "200" {
				return []outcome{o}
			}
		}
		return []outcome{{"never limited", ""}}
	},
	"query nested too deep": func(t *testing.T, p *probeEnv) []outcome {
		deep := "id"
		for range 10 {
			deep = "steps { task { " + deep + " } }"
		}
		return []outcome{p.gqlOutcome(t, auth.Reader, "{ tasks { nodes { "+deep+" } } }", nil)}
	},
	"query too complex (50 aliased `dashboard { throughput(hours: 8784) { rows { … } } }`, 30 aliased `tasks(first: 500)`)": func(t *testing.T, p *probeEnv) []outcome {
		var years, pages strings.Builder
		for i := range 50 {
			fmt.Fprintf(&years, " a%d: %s", i, yearOfHours)
		}
		for i := range 30 {
			fmt.Fprintf(&pages, " t%d: tasks(first: 500) { edges { node { id status steps { id } } } }", i)
		}
		return []outcome{
			p.gqlOutcome(t, auth.Reader, "{"+years.String()+" }", nil),
			p.gqlOutcome(t, auth.Reader, "{"+pages.String()+" }", nil),
		}
	},
	"a size argument out of its range (`first: 0`, `first: 1000000000000`, `limit: 1001`, `hours: 8785`)": func(t *testing.T, p *probeEnv) []outcome {
		var out []outcome
		for _, q := range []string{`{ tasks(first: 0) { nodes { id } } }`, `{ tasks(first: 1000000000000) { nodes { id } } }`,
			`{ dashboard { stepPerformance(limit: 1001) { stale } } }`, `{ dashboard { throughput(hours: 8785) { stale } } }`} {
			out = append(out, p.gqlOutcome(t, auth.Reader, q, nil))
		}
		return out
	},
	"an `Int` variable that is not a whole number (`{\"first\": 1e12}`, `1.5`)": func(t *testing.T, p *probeEnv) []outcome {
		q := `query($n: Int) { tasks(first: $n) { nodes { id } } }`
		return []outcome{
			p.post(t, auth.Reader, `{"query": "`+q+`", "variables": {"n": 1e12}}`),
			p.post(t, auth.Reader, `{"query": "`+q+`", "variables": {"n": 1.5}}`),
		}
	},
	"GraphQL syntax error": func(t *testing.T, p *probeEnv) []outcome {
		return []outcome{p.gqlOutcome(t, auth.Reader, `{ tasks { `, nil)}
	},
	"unknown field, argument, enum value (`status: [NOPE]`)": func(t *testing.T, p *probeEnv) []outcome {
		return []outcome{
			p.gqlOutcome(t, auth.Reader, `{ nope }`, nil),
			p.gqlOutcome(t, auth.Reader, `{ tasks(nope: 1) { nodes { id } } }`, nil),
			p.gqlOutcome(t, auth.Reader, `{ tasks(filter: {status: [NOPE]}) { nodes { id } } }`, nil),
		}
	},
	"a persisted query whose hash does not match its text": func(t *testing.T, p *probeEnv) []outcome {
		return []outcome{p.post(t, auth.Reader, `{"query": "{ namespaces { name } }", "extensions": {"persistedQuery": {"version": 1, "sha256Hash": "`+strings.Repeat("ab", 32)+`"}}}`)}
	},
	"a persisted query hash the server does not know, without the query": func(t *testing.T, p *probeEnv) []outcome {
		return []outcome{p.post(t, auth.Reader, `{"extensions": {"persistedQuery": {"version": 1, "sha256Hash": "`+strings.Repeat("cd", 32)+`"}}}`)}
	},
	"id not a non-negative integer (`\"abc\"`, `\"-1\"`, `\"99999999999999999999\"`)": func(t *testing.T, p *probeEnv) []outcome {
		var out []outcome
		for _, id := range []string{"abc", "-1", "99999999999999999999"} {
			out = append(out, p.gqlOutcome(t, auth.Reader, `query($id: ID!) { task(id: $id) { id } }`, map[string]any{"id": id}))
		}
		return out
	},
	"unknown task or step id": func(t *testing.T, p *probeEnv) []outcome {
		return []outcome{
			p.gqlOutcome(t, auth.Reader, `{ task(id: "424242") { id } }`, nil),
			p.gqlOutcome(t, auth.Reader, `{ step(id: "424242") { id } }`, nil),
		}
	},
	"task context not an object, or against the template's schema": func(t *testing.T, p *probeEnv) []outcome {
		q := `mutation($in: CreateTaskInput!) { createTask(input: $in) { id } }`
		return []outcome{
			p.gqlOutcome(t, auth.Operator, q, map[string]any{"in": map[string]any{"namespace": "examples", "name": "linear_workflow", "context": []any{1}}}),
			p.gqlOutcome(t, auth.Operator, q, map[string]any{"in": map[string]any{"namespace": "examples", "name": "linear_workflow", "context": map[string]any{"batch_size": "x"}}}),
		}
	},
	"unknown template": func(t *testing.T, p *probeEnv) []outcome {
		return []outcome{p.gqlOutcome(t, auth.Operator, `mutation { createTask(input: {name: "nope"}) { id } }`, nil)}
	},
	"a move the state machine forbids (retry a pending step)": func(t *testing.T, p *probeEnv) []outcome {
		return []outcome{p.gqlOutcome(t, auth.Operator, `mutation($id: ID!) { retryStep(id: $id) { id } }`, map[string]any{"id": p.stepID})}
	},
	"`createTasks` with more than 1,000 inputs": func(t *testing.T, p *probeEnv) []outcome {
		inputs := make([]any, 1001)
		for i := range inputs {
			inputs[i] = map[string]any{"namespace": "examples", "name": "linear_workflow"}
		}
		return []outcome{p.gqlOutcome(t, auth.Operator, `mutation($in: [CreateTaskInput!]!) { createTasks(inputs: $in) { ok } }`,
			map[string]any{"in": inputs})}
	},
	"`resolveStepManually` without a reason": func(t *testing.T, p *probeEnv) []outcome {
		return []outcome{p.gqlOutcome(t, auth.Operator, `mutation($id: ID!) { resolveStepManually(id: $id) { id } }`, map[string]any{"id": p.stepID})}
	},
	"a NUL character in any string: argument, variable, JSON value or key (context, tags, initiator, reason, namespace filters)": func(t *testing.T, p *probeEnv) []outcome {
		create := `mutation($in: CreateTaskInput!) { createTask(input: $in) { id } }`
		in := func(k string, v any) map[string]any {
			m := map[string]any{"namespace": "examples", "name": "linear_workflow", k: v}
			return map[string]any{"in": m}
		}
		out := []outcome{
			p.gqlOutcome(t, auth.Operator, create, in("context", map[string]any{"batch_size": 1, "note": "a\x00b"})),
			p.gqlOutcome(t, auth.Operator, create, in("context", map[string]any{"k\x00": 1})),
			p.gqlOutcome(t, auth.Operator, create, in("tags", []any{"ok", "x\x00"})),
			p.gqlOutcome(t, auth.Operator, create, in("initiator", "me\x00")),
			p.gqlOutcome(t, auth.Operator, create, in("idempotencyKey", "\x00")),
			p.gqlOutcome(t, auth.Operator, `mutation($id: ID!) { resolveStepManually(id: $id, reason: "why\u0000") { id } }`, map[string]any{"id": p.stepID}),
			p.gqlOutcome(t, auth.Reader, `{ namedTasks(namespace: "ex\u0000") { name } }`, nil),
			p.gqlOutcome(t, auth.Reader, `query($n: String) { tasks(filter: {namespace: $n}) { nodes { id } } }`, map[string]any{"n": "\x00"}),
			p.get(t, auth.Reader, url.Values{"query": {`query($n: String) { namedTasks(namespace: $n) { name } }`}, "variables": {`{"n": "\u0000"}`}}),
		}
		if n := p.taskCount(); n != 1 {
			t.Errorf("refused input created tasks: %d tasks, want the 1 of the fixture", n)
		}
		return out
	},
	"a lone UTF-16 surrogate (`\"\\ud800\"`) or invalid UTF-8 in any string": func(t *testing.T, p *probeEnv) []outcome {
		create := `mutation($in: CreateTaskInput!) { createTask(input: $in) { id } }`
		body := func(key string) string {
			return `{"query": "` + create + `", "variables": {"in": {"namespace": "examples", "name": "linear_workflow", "idempotencyKey": "` + key + `"}}}`
		}
		out := []outcome{
			p.post(t, auth.Operator, body(`k\ud800`)),
			p.post(t, auth.Operator, body(`k\udfff`)),
			p.post(t, auth.Operator, body("k\xff")),
			p.gqlOutcome(t, auth.Operator, `mutation { createTask(input: {namespace: "examples", name: "linear_workflow", idempotencyKey: "k\ud800"}) { id } }`, nil),
		}
		if n := p.taskCount(); n != 1 {
			t.Errorf("refused input created tasks: %d tasks, want the 1 of the fixture", n)
		}
		// A surrogate pair is one character, and is accepted.
		if o := p.post(t, auth.Operator, body(`k\ud83d\ude00`)); o.code != "" {
			t.Errorf("a surrogate pair was refused: %+v", o)
		}
		return out
	},
	"websocket `connection_init` without a token, or with a bad one": func(t *testing.T, p *probeEnv) []outcome {
		return []outcome{p.wsOutcome(t, p.secureEnv, ""), p.wsOutcome(t, p.secureEnv, auth.TokenPrefix+"nope")}
	},
	"websocket: token store unreachable at `connection_init`": func(t *testing.T, p *probeEnv) []outcome {
		return []outcome{p.wsOutcome(t, p.broken, p.broken.tokens[auth.Reader])}
	},
	"websocket: the connection's token is revoked, in any process": func(t *testing.T, p *probeEnv) []outcome {
		tok := p.freshToken(t, auth.Operator)
		conn, ctx := p.wsAck(t, tok)
		defer conn.CloseNow()
		wsSend(t, ctx, conn, "1", taskTransSub)
		wait.Until(t, 10*time.Second, "condition", func() bool { return p.guard.Subscriptions() > 0 })
		if _, err := p.store.Revoke(context.Background(), tok); err != nil {
			t.Fatal(err)
		}
		for {
			if _, err := wsNext(t, ctx, conn); err != nil {
				var ce websocket.CloseError
				if !errors.As(err, &ce) {
					t.Fatalf("websocket ended with %v", err)
				}
				code, _, _ := strings.Cut(ce.Reason, ":")
				return []outcome{{fmt.Sprintf("close %d", ce.Code), code}}
			}
		}
	},
	"websocket: reader sends a mutation": func(t *testing.T, p *probeEnv) []outcome {
		return []outcome{p.wsOutcome(t, p.secureEnv, p.tokens[auth.Reader], payload(cancelTaskMut, map[string]any{"id": p.taskID}))}
	},
	"websocket: a `subscribe` message whose payload is not a request object (`[]`, `\"x\"`)": func(t *testing.T, p *probeEnv) []outcome {
		return []outcome{
			p.wsOutcome(t, p.secureEnv, p.tokens[auth.Reader], json.RawMessage(`[]`)),
			p.wsOutcome(t, p.secureEnv, p.tokens[auth.Reader], json.RawMessage(`"x"`)),
		}
	},
	"websocket: a NUL character or lone surrogate in a message": func(t *testing.T, p *probeEnv) []outcome {
		q := `query($ns: String) { namedTasks(namespace: $ns) { name } }`
		return []outcome{
			p.wsOutcome(t, p.secureEnv, p.tokens[auth.Reader], payload(q, map[string]any{"ns": "a\x00"})),
			p.wsOutcome(t, p.secureEnv, p.tokens[auth.Reader], json.RawMessage(`{"query": "`+q+`", "variables": {"ns": "\ud800"}}`)),
		}
	},
	"websocket: one subscription over the per-connection limit": func(t *testing.T, p *probeEnv) []outcome {
		msgs := make([]json.RawMessage, p.guard.Limits().MaxSubscriptions+1)
		for i := range msgs {
			msgs[i] = payload(taskTransSub, nil)
		}
		return []outcome{p.wsOutcome(t, p.secureEnv, p.tokens[auth.Reader], msgs...)}
	},
	"websocket: operations over the token's rate": func(t *testing.T, p *probeEnv) []outcome {
		msgs := make([]json.RawMessage, 2*p.guard.Limits().Burst+10)
		for i := range msgs {
			msgs[i] = payload(`{ __typename }`, nil)
		}
		return []outcome{p.wsOutcome(t, p.secureEnv, p.freshToken(t, auth.Reader), msgs...)}
	},
	"websocket: message over the size limit": func(t *testing.T, p *probeEnv) []outcome {
		big := payload(`{ __typename }`, map[string]any{"pad": strings.Repeat("x", int(p.guard.Limits().MaxWebsocketMessageBytes))})
		return []outcome{p.wsOutcome(t, p.secureEnv, p.tokens[auth.Reader], big)}
	},
}

// TestSecurityTableMatchesTheServer sends the input of every row of SECURITY.md's table of
// refusals to the real server and checks the status and code the row documents; a row
// without a probe, or a probe without a row, fails.
func TestSecurityTableMatchesTheServer(t *testing.T) {
	t.Parallel()
	rows := securityRows(t)
	p := newProbeEnv(t)
	sources := packageSources(t)
	seen := map[string]bool{}
	for _, row := range rows {
		seen[row.input] = true
		if row.elsewhere != "" {
			if !strings.Contains(sources, "func "+row.elsewhere+"(") {
				t.Errorf("row %q names %s, which does not exist", row.input, row.elsewhere)
			}
			continue
		}
		probe, ok := probes[row.input]
		if !ok {
			t.Errorf("SECURITY.md row %q has no probe", row.input)
			continue
		}
		for i, got := range probe(t, p) {
			if got.status != row.status || got.code != row.code {
				t.Errorf("%s (#%d): got %s %q, SECURITY.md says %s %q", row.input, i+1, got.status, got.code, row.status, row.code)
			}
		}
	}
	for input := range probes {
		if !seen[input] {
			t.Errorf("probe %q has no row in SECURITY.md", input)
		}
	}
	// Refusals are not failures: nothing panicked, nothing was an internal error.
	for _, bad := range []string{"panic", "internal error", "SQLSTATE"} {
		if strings.Contains(p.logs.String(), bad) {
			t.Errorf("the server logged %q while refusing:\n%s", bad, p.logs.String())
		}
	}
}

func packageSources(t *testing.T) string {
	t.Helper()
	files, err := filepath.Glob("*_test.go")
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		b.Write(src)
	}
	return b.String()
}
