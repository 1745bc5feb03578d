package server_test

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/taskerhq/tasker/internal/auth"
)

// FuzzGraphQLInputs sends arbitrary client input to the real handler over a real database: a
// task context and tags (any bytes, passed as JSON when they parse and as a string otherwise),
// a task filter (namespace, name, version, status list, time bounds), an id and a cursor.
// Whatever the input, the server must answer with a GraphQL response, never 5xx, and never an
// INTERNAL error: bad input is the client's error and must be reported as such. The seed
// corpus is in testdata/fuzz/FuzzGraphQLInputs.
func FuzzGraphQLInputs(f *testing.F) {
	f.Add([]byte(`{"batch_size": 3}`), "examples", "linear_workflow", "", "PENDING", "2024-01-01T00:00:00Z", "1", "")
	f.Add([]byte(`{"batch_size": "x"}`), "", "nope", "1.0.0", "NOT_A_STATE", "yesterday", "-1", "bad-cursor")
	f.Add([]byte(`[1,2,3]`), "default", "", "not-semver", "", "", "99999999999999999999", "eyJ4Ijp9")
	f.Add([]byte(`not json`), "\x00", "\u2028", "", "COMPLETE", "0000-00-00T00:00:00Z", "abc", "MTIz")
	f.Add([]byte(`{"batch_size": 1, "note": "\u0000", "\ud800": "\udc00x"}`), "exa\x00mples", "linear_workflow", "", "", "", "k\xff", "")
	f.Add([]byte("{\"a\": \"\xff\"}"), "examples", "linear_workflow", "", "", "", "\U0001F600", "")
	f.Add([]byte(`{"a":{"b":{"c":{"d":[[[[[[[[[[]]]]]]]]]]}}}}`), "examples", "diamond_workflow", "@", "", "9999-12-31T23:59:59Z", "0", "")

	e := newSecureEnv(f, auth.Required, auth.Limits{RatePerSecond: 1e9, Burst: 1 << 30})
	token := e.tokens[auth.Operator]
	f.Fuzz(func(t *testing.T, taskContext []byte, namespace, name, version, status, after, id, cursor string) {
		var ctxValue any = string(taskContext)
		if json.Valid(taskContext) {
			ctxValue = json.RawMessage(taskContext)
		}
		filter := map[string]any{"namespace": namespace, "namedTask": name, "version": version,
			"status": []string{status}, "createdAfter": after, "createdBefore": after}
		requests := []struct {
			query string
			vars  map[string]any
		}{
			{`mutation($in: CreateTaskInput!) { createTask(input: $in) { id status } }`, map[string]any{"in": map[string]any{
				"namespace": namespace, "name": name, "version": version, "context": ctxValue, "tags": ctxValue,
				"idempotencyKey": id}}},
			{`query($f: TaskFilter, $after: String) { tasks(filter: $f, first: 3, after: $after) { edges { node { id status } } } }`,
				map[string]any{"f": filter, "after": cursor}},
			{`query($id: ID!) { task(id: $id) { id steps { id } } step(id: $id) { id } }`, map[string]any{"id": id}},
			{`mutation($id: ID!, $r: String) { cancelStep(id: $id) { id } resolveStepManually(id: $id, reason: $r) { id } }`,
				map[string]any{"id": id, "r": name}},
		}
		for _, rq := range requests {
			body, err := json.Marshal(map[string]any{"query": rq.query, "variables": rq.vars})
			if err != nil {
				return // not representable as a request
			}
			r := e.callAs(t, token, body)
			if r.status >= http.StatusInternalServerError {
				t.Fatalf("%s with %v: status %d %+v", rq.query, rq.vars, r.status, r.Errors)
			}
			for _, ge := range r.Errors {
				if ge.Extensions["code"] == "INTERNAL" {
					t.Fatalf("%s with %v: internal error %q", rq.query, rq.vars, ge.Message)
				}
			}
		}
	})
}
