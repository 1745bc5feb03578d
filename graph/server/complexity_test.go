package server_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/taskerhq/tasker/graph/server"
)

const yearOfHours = `dashboard { throughput(hours: 8784) { rows { hour tasksCreated tasksCompleted tasksFailed stepsCompleted stepsFailed } } }`

// Every argument that sizes a list weighs in the complexity: fifty aliases of a year of hourly
// throughput (52 MB of JSON once) are refused before any SQL; one is served.
func TestListSizesWeighInTheComplexity(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var aliases strings.Builder
	aliases.WriteString("{")
	for i := range 50 {
		fmt.Fprintf(&aliases, " a%d: %s", i, yearOfHours)
	}
	aliases.WriteString(" }")
	for name, q := range map[string]string{
		"fifty years of hours": aliases.String(),
		"two years of hours":   "{ a: " + yearOfHours + " b: " + yearOfHours + " }",
		"twelve step tables":   twelveStepTables(),
		"nested unsized lists": `{ tasks(first: 500) { nodes { steps { children { parents { transitions { id } } } } } } }`,
	} {
		r := e.do(q, nil)
		if len(r.Errors) != 1 || r.Errors[0].Extensions["code"] != "COMPLEXITY_LIMIT_EXCEEDED" || r.status != http.StatusUnprocessableEntity {
			t.Errorf("%s: status %d errors %+v, want 422 COMPLEXITY_LIMIT_EXCEEDED", name, r.status, r.Errors)
			continue
		}
		if r.Extensions.QueryStats == nil || r.Extensions.QueryStats.SQLStatements != 0 {
			t.Errorf("%s: ran SQL before refusing: %+v", name, r.Extensions.QueryStats)
		}
	}
	var one struct {
		Dashboard struct {
			Throughput struct{ Rows []struct{ Hour string } }
		}
	}
	e.data("{ "+yearOfHours+" }", nil, &one)
	if len(one.Dashboard.Throughput.Rows) != 8784 {
		t.Fatalf("a year of hours: %d rows, want 8784", len(one.Dashboard.Throughput.Rows))
	}
}

// A size argument beyond its cap is refused with VALIDATION before any SQL, whether a literal
// or a variable; a number that is not an Int says so.
func TestSizeArgumentsAreCapped(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, c := range []struct {
		query string
		vars  map[string]any
		want  string
	}{
		{`{ tasks(first: 1000000000000) { nodes { id } } }`, nil, "Query.tasks: first 1000000000000 is out of range: it must be 1..500"},
		{`query($n: Int) { tasks(first: $n) { nodes { id } } }`, map[string]any{"n": 501}, "first 501 is out of range"},
		{`{ dashboard { throughput(hours: 8785) { stale } } }`, nil, "hours 8785 is out of range: it must be 1..8784"},
		{`{ dashboard { stepPerformance(limit: -1) { stale } } }`, nil, "limit -1 is out of range"},
	} {
		r := e.do(c.query, c.vars)
		if len(r.Errors) != 1 || r.Errors[0].Extensions["code"] != "VALIDATION" || !strings.Contains(r.Errors[0].Message, c.want) {
			t.Errorf("%s %v: %+v, want VALIDATION containing %q", c.query, c.vars, r.Errors, c.want)
		}
		if r.Extensions.QueryStats == nil || r.Extensions.QueryStats.SQLStatements != 0 {
			t.Errorf("%s: ran SQL before refusing", c.query)
		}
	}
	// A JSON number that is not an integer, as a variable: a coded error that says so.
	resp, err := http.Post(e.srv.URL+"/query", "application/json",
		strings.NewReader(`{"query": "query($n: Int) { tasks(first: $n) { nodes { id } } }", "variables": {"n": 1e12}}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r := decode(t, resp)
	if len(r.Errors) != 1 || r.Errors[0].Extensions["code"] != "GRAPHQL_VALIDATION_FAILED" ||
		!strings.Contains(r.Errors[0].Message, "variable $n is not an Int") || strings.Contains(r.Errors[0].Message, "value 0") {
		t.Errorf("first: 1e12 as a variable: %+v, want GRAPHQL_VALIDATION_FAILED saying it is not an Int", r.Errors)
	}
}

// A response over the size limit is replaced by a coded error.
func TestResponseSizeLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *server.Config) { c.MaxResponseBytes = 4096 })
	r := e.do("{ "+yearOfHours+" }", nil)
	if len(r.Errors) != 1 || r.Errors[0].Extensions["code"] != "RESPONSE_TOO_LARGE" || (len(r.Data) > 0 && string(r.Data) != "null") {
		t.Fatalf("large response: data %d bytes, errors %+v, want RESPONSE_TOO_LARGE and no data", len(r.Data), r.Errors)
	}
	var small struct{ Namespaces []struct{ Name string } }
	e.data(`{ namespaces { name } }`, nil, &small)
}

func twelveStepTables() string {
	var b strings.Builder
	b.WriteString("{")
	for i := range 12 {
		fmt.Fprintf(&b, " s%d: dashboard { stepPerformance(limit: 1000) { rows { stepName executions successes failures retries errorRate avgDurationMs p50DurationMs p95DurationMs } } }", i)
	}
	return b.String() + " }"
}
