package server

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2"
	"github.com/vektah/gqlparser/v2/ast"
)

// The weighing is driven by argument names only: a field added to the schema with a first
// argument (here a steps connection, and a bare list) is weighed and capped with no listing.
func TestComplexityIsDrivenByArgumentNames(t *testing.T) {
	schema := gqlparser.MustLoadSchema(&ast.Source{Input: `
		type Query {
			steps(first: Int = 20, after: String): StepConnection!
			recent(first: Int = 5): [Step!]!
			everything: [Step!]!
		}
		type StepConnection { nodes: [Step!]! edges: [Edge!]! total: Int! }
		type Edge { node: Step! cursor: String! }
		type Step { id: ID! parents: [Step!]! }
	`})
	cost := func(query string, vars map[string]any) (int64, string) {
		t.Helper()
		doc := gqlparser.MustLoadQuery(schema, query)
		op := &graphql.OperationContext{Doc: doc, Operation: doc.Operations[0], Variables: vars}
		if err := (complexityLimit{max: 1 << 30}).MutateOperationContext(context.Background(), op); err != nil {
			return -1, err.Message
		}
		v, _ := op.Stats.GetExtension("complexity").(int64)
		return v, ""
	}
	for _, c := range []struct {
		query string
		vars  map[string]any
		want  int64
	}{
		// steps 1 + nodes (1 + 100 × id 1) = 102
		{`{ steps(first: 100) { nodes { id } } }`, nil, 102},
		// the default first (20) sizes the lists; total is not a list
		{`{ steps { nodes { id } total } }`, nil, 1 + (1 + 20) + 1},
		// edges and nodes both repeat; a nested unsized list repeats 10 times
		{`query($n: Int) { steps(first: $n) { edges { node { parents { id } } } } }`, map[string]any{"n": int64(3)}, 1 + (1 + 3*(1+(1+10)))},
		// a list field with its own first
		{`{ recent(first: 7) { id } }`, nil, 1 + 7},
		// a list without a size argument
		{`{ everything { id } }`, nil, 1 + 10},
		// fragments weigh the same as inline selections
		{`{ steps(first: 4) { ...F } } fragment F on StepConnection { nodes { id } }`, nil, 1 + (1 + 4)},
	} {
		got, msg := cost(c.query, c.vars)
		if got != c.want {
			t.Errorf("%s: cost %d (%s), want %d", c.query, got, msg, c.want)
		}
	}
	if _, msg := cost(`{ steps(first: 501) { total } }`, nil); !strings.Contains(msg, "Query.steps: first 501 is out of range: it must be 1..500") {
		t.Errorf("first 501 on a new field: %q, want it refused", msg)
	}
	// Nesting cannot overflow: the cost saturates far above any limit.
	deep := `{ steps(first: 500) { nodes { parents { parents { parents { parents { parents { parents { parents { parents { parents { parents { parents { parents { parents { parents { id } } } } } } } } } } } } } } } } }`
	if _, msg := cost(deep, nil); !strings.Contains(msg, "operation has complexity 1099511627776, which exceeds") {
		t.Errorf("deeply nested lists: %q, want a saturated cost refused", msg)
	}
}

// Operations wait for their share of the process's in-flight complexity, and are refused with
// SERVER_BUSY when it does not come in time; a released share admits the next one.
func TestInFlightComplexityBudget(t *testing.T) {
	c := newComplexityLimit(1000, 100)
	c.wait = 50 * time.Millisecond
	doc := gqlparser.MustLoadQuery(gqlparser.MustLoadSchema(&ast.Source{Input: `type Query { a: Int }`}), `{ a }`)
	run := func(cost int64) *graphql.Response {
		op := &graphql.OperationContext{Doc: doc, Operation: doc.Operations[0]}
		op.Stats.SetExtension("complexity", cost)
		ctx := graphql.WithOperationContext(context.Background(), op)
		return c.InterceptResponse(ctx, func(context.Context) *graphql.Response { return &graphql.Response{} })
	}
	if !c.inFlight.TryAcquire(80) {
		t.Fatal("could not take the budget")
	}
	if r := run(30); len(r.Errors) != 1 || r.Errors[0].Extensions["code"] != "SERVER_BUSY" {
		t.Fatalf("over the in-flight budget: %+v, want SERVER_BUSY", r.Errors)
	}
	if r := run(20); len(r.Errors) != 0 {
		t.Fatalf("within the in-flight budget: %+v", r.Errors)
	}
	c.inFlight.Release(80)
	if r := run(5000); len(r.Errors) != 0 { // more than the whole budget: waits for all of it
		t.Fatalf("an operation larger than the budget after release: %+v", r.Errors)
	}
}
