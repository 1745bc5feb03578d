package server_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/taskerhq/tasker/graph/server"
)

// postWithReadAfter posts a query with the X-Tasker-Read-After header and returns the raw
// response body decoded.
func postWithReadAfter(t *testing.T, e *env, query, readAfter string) map[string]any {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"query": query})
	req, err := http.NewRequest(http.MethodPost, e.srv.URL+"/query", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(server.ReadAfterHeader, readAfter)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestReadAfterHeaderIsChecked: a malformed X-Tasker-Read-After is refused with BAD_REQUEST
// before anything runs (a mutation writes nothing); a well-formed one is accepted, and without
// replicas the primary answers and no token is returned.
func TestReadAfterHeaderIsChecked(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	const create = `mutation { createTask(input: {namespace: "examples", name: "linear_workflow"}) { id } }`
	for _, bad := range []string{"nope", "0/", "1/2/3", "G/0"} {
		for _, q := range []string{`{ namespaces { name } }`, create} {
			out := postWithReadAfter(t, e, q, bad)
			errs, _ := out["errors"].([]any)
			if len(errs) != 1 || out["data"] != nil {
				t.Fatalf("header %q: %v", bad, out)
			}
			if code := errs[0].(map[string]any)["extensions"].(map[string]any)["code"]; code != "BAD_REQUEST" {
				t.Fatalf("header %q: code %v, want BAD_REQUEST", bad, code)
			}
		}
	}
	var tasks int64
	if err := e.db.Raw("SELECT count(*) FROM tasker_tasks").Scan(&tasks).Error; err != nil || tasks != 0 {
		t.Fatalf("refused mutations created %d tasks (%v)", tasks, err)
	}
	out := postWithReadAfter(t, e, create, "0/16B3748")
	ext := out["extensions"].(map[string]any)
	stats := ext["queryStats"].(map[string]any)
	if out["errors"] != nil || stats["servedBy"] != "primary" || ext["readAfter"] != nil {
		t.Fatalf("a well-formed token without replicas: %v", out)
	}
	if v, present := stats["replicaLagMs"]; !present || v != nil {
		t.Fatalf("replicaLagMs = %v (present %v), want null when the primary answers", v, present)
	}
}
