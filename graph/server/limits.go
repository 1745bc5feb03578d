package server

import (
	"context"
	"encoding/json"
	"strings"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/errcode"
	"github.com/99designs/gqlgen/graphql/handler/extension"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"
	"golang.org/x/sync/semaphore"

	"github.com/taskerhq/tasker/internal/errs"
	"github.com/taskerhq/tasker/internal/orchestration"
)

// sizeArgs are the argument names that size the list a field returns, with the largest value
// each may take. The mechanism is driven by these names only: a new field with one of these
// arguments is weighed (and capped) without being listed anywhere.
var sizeArgs = map[string]int64{
	"first": 500,  // pages: Query.tasks, and any connection
	"last":  500,  // pages read backwards
	"limit": 1000, // Dashboard.stepPerformance
	"hours": 8784, // Dashboard.throughput: a leap year of hours
}

// listArgs are the list-valued arguments that size what a field returns (one result per
// element: Mutation.createTasks's inputs), with the most elements each may hold. A field
// with one repeats its list, or its list-typed children, by the list's length.
var listArgs = map[string]int64{
	"inputs": orchestration.MaxBatch,
}

// unsizedList is the size assumed for a list field that takes no size argument (a task's
// steps, a step's transitions, the namespaces): nested lists multiply.
const unsizedList = 10

// costCeiling bounds every intermediate cost, so that nested multipliers cannot overflow.
const costCeiling = int64(1) << 40

// complexityLimit refuses operations whose cost exceeds max (COMPLEXITY_LIMIT_EXCEEDED, HTTP
// 422), and size arguments outside 1..their cap (VALIDATION naming the field and argument),
// before any resolver runs. The cost of a field is 1 plus its children's costs times how many
// times they repeat:
//
//   - a field with a size argument (sizeArgs: first, last, limit, hours) repeats its list by
//     the argument's value, or its default from the schema: the field itself when it returns
//     a list, else its list-typed children (a connection's edges and nodes, a dashboard's
//     rows);
//   - any other list repeats unsizedList times;
//   - introspection fields (__schema, __type) cost 1 each: the schema's size is fixed.
//
// The process also bounds the complexity of the queries and mutations it runs at once
// (inFlight, Config.MaxInFlightComplexity): an operation waits for its share up to
// inFlightWait, then is refused with SERVER_BUSY. So concurrent large reads cannot take more
// memory or CPU than that budget, and the rest of the server (health checks, small
// requests) keeps answering.
type complexityLimit struct {
	max      int
	inFlight *semaphore.Weighted // nil: no process budget
	capacity int64
	wait     time.Duration // how long an operation waits for its share
}

// inFlightWait is how long an operation waits for its share of the in-flight budget.
const inFlightWait = 5 * time.Second

func newComplexityLimit(max, inFlight int) complexityLimit {
	return complexityLimit{max: max, inFlight: semaphore.NewWeighted(int64(inFlight)), capacity: int64(inFlight), wait: inFlightWait}
}

var _ interface {
	graphql.HandlerExtension
	graphql.OperationContextMutator
	graphql.ResponseInterceptor
} = complexityLimit{}

// InterceptResponse runs a query or mutation once its complexity fits in the process's
// in-flight budget, and releases it when the response is built.
func (c complexityLimit) InterceptResponse(ctx context.Context, next graphql.ResponseHandler) *graphql.Response {
	if c.inFlight == nil || !graphql.HasOperationContext(ctx) {
		return next(ctx)
	}
	op := graphql.GetOperationContext(ctx)
	cost, _ := op.Stats.GetExtension("complexity").(int64)
	if op.Operation == nil || op.Operation.Operation == ast.Subscription || cost <= 0 {
		return next(ctx)
	}
	cost = min(cost, c.capacity)
	if !c.inFlight.TryAcquire(cost) {
		wctx, cancel := context.WithTimeout(ctx, c.wait)
		err := c.inFlight.Acquire(wctx, cost)
		cancel()
		if err != nil {
			return busy(cost)
		}
	}
	defer c.inFlight.Release(cost)
	return next(ctx)
}

// busy is the SERVER_BUSY response of an operation of this cost.
func busy(cost int64) *graphql.Response {
	err := gqlerror.Errorf("the server is busy with other large operations (complexity %d requested); retry later", cost)
	errcode.Set(err, codeServerBusy)
	return &graphql.Response{Errors: gqlerror.List{err}}
}

func (complexityLimit) ExtensionName() string                   { return "ComplexityLimit" }
func (complexityLimit) Validate(graphql.ExecutableSchema) error { return nil }

func (c complexityLimit) MutateOperationContext(_ context.Context, op *graphql.OperationContext) *gqlerror.Error {
	w := weigher{doc: op.Doc, vars: op.Variables, seen: map[string]bool{}}
	cost := w.set(op.Operation.SelectionSet, "", 0)
	if w.err != nil {
		return w.err
	}
	if cost > int64(c.max) {
		err := gqlerror.Errorf("operation has complexity %d, which exceeds the limit of %d", cost, c.max)
		errcode.Set(err, codeComplexityLimit)
		return err
	}
	op.Stats.SetExtension("complexity", cost)
	return nil
}

// weigher computes the cost of an operation; err is the first size argument out of range.
type weigher struct {
	doc  *ast.QueryDocument
	vars map[string]any
	seen map[string]bool // fragments being expanded (cycles are refused by validation)
	err  *gqlerror.Error
}

// set is the cost of a selection set. inherited is the size argument of the parent field
// when that field does not return a list itself (0 when none): it sizes the set's lists.
func (w *weigher) set(set ast.SelectionSet, parent string, inherited int64) int64 {
	var total int64
	for _, sel := range set {
		switch s := sel.(type) {
		case *ast.Field:
			total = satAdd(total, w.field(s, parent, inherited))
		case *ast.InlineFragment:
			total = satAdd(total, w.set(s.SelectionSet, parent, inherited))
		case *ast.FragmentSpread:
			if w.seen[s.Name] {
				continue
			}
			if f := w.doc.Fragments.ForName(s.Name); f != nil {
				w.seen[s.Name] = true
				total = satAdd(total, w.set(f.SelectionSet, parent, inherited))
				delete(w.seen, s.Name)
			}
		}
	}
	return total
}

func (w *weigher) field(f *ast.Field, parent string, inherited int64) int64 {
	if strings.HasPrefix(f.Name, "__") || f.Definition == nil {
		return 1
	}
	size := w.sizeOf(f)
	isList := f.Definition.Type.Elem != nil
	times, childSize := int64(1), int64(0)
	switch {
	case size > 0 && isList:
		times = size
	case size > 0:
		childSize = size
	case isList && inherited > 0:
		times = inherited
	case isList:
		times = unsizedList
	}
	return satAdd(1, satMul(times, w.set(f.SelectionSet, f.Name, childSize)))
}

// sizeOf returns the value of f's size argument (its default when not given), 0 when f has
// none; a value outside 1..cap records a VALIDATION error.
func (w *weigher) sizeOf(f *ast.Field) int64 {
	var size int64
	for _, def := range f.Definition.Arguments {
		if limit, ok := listArgs[def.Name]; ok {
			list, _ := f.ArgumentMap(w.vars)[def.Name].([]any)
			if n := int64(len(list)); n > limit && w.err == nil {
				w.err = gqlerror.Errorf("%s.%s: %s holds %d elements, at most %d allowed: send several operations",
					f.ObjectDefinition.Name, f.Name, def.Name, n, limit)
				errcode.Set(w.err, errs.Invalid.Code())
			} else {
				size = max(size, n)
			}
			continue
		}
		limit, ok := sizeArgs[def.Name]
		if !ok {
			continue
		}
		v, given := f.ArgumentMap(w.vars)[def.Name]
		if !given || v == nil {
			continue
		}
		n, ok := toInt64(v)
		if !ok || n < 1 || n > limit {
			if w.err == nil {
				w.err = gqlerror.Errorf("%s.%s: %s %v is out of range: it must be 1..%d",
					f.ObjectDefinition.Name, f.Name, def.Name, v, limit)
				errcode.Set(w.err, errs.Invalid.Code())
			}
			continue
		}
		size = max(size, n)
	}
	return size
}

func toInt64(v any) (int64, bool) {
	switch n := v.(type) {
	case int:
		return int64(n), true
	case int64:
		return n, true
	case int32:
		return int64(n), true
	case float64:
		return int64(n), n == float64(int64(n))
	case json.Number:
		i, err := n.Int64()
		return i, err == nil
	}
	return 0, false
}

func satAdd(a, b int64) int64 { return min(a+b, costCeiling) }

func satMul(a, b int64) int64 {
	if a != 0 && b > costCeiling/a {
		return costCeiling
	}
	return min(a*b, costCeiling)
}

// Codes of the limits; both are refused like a validation failure: HTTP 422, and an error
// message on a websocket.
const (
	codeDepthLimit      = "DEPTH_LIMIT_EXCEEDED"
	codeComplexityLimit = "COMPLEXITY_LIMIT_EXCEEDED"
	codePersistedQuery  = "PERSISTED_QUERY_INVALID"
	// codeResponseTooLarge answers a response over Config.MaxResponseBytes (HTTP 200: the
	// operation ran).
	codeResponseTooLarge = "RESPONSE_TOO_LARGE"
	// codeServerBusy answers an operation that waited too long for its share of the
	// in-flight complexity budget (HTTP 200: a GraphQL response).
	codeServerBusy = "SERVER_BUSY"
)

func init() {
	for _, c := range []string{codeDepthLimit, codeComplexityLimit, codePersistedQuery, codeBadRequest} {
		errcode.RegisterErrorType(c, errcode.KindProtocol)
	}
}

// codedAPQ is gqlgen's automatic persisted queries with a code on every refusal: a hash that
// does not match the query, bad extension data or an unknown version is
// PERSISTED_QUERY_INVALID; an unknown hash keeps PERSISTED_QUERY_NOT_FOUND (which clients
// answer by sending the query). Both answer HTTP 422.
type codedAPQ struct {
	extension.AutomaticPersistedQuery
}

func (a codedAPQ) MutateOperationParameters(ctx context.Context, raw *graphql.RawParams) *gqlerror.Error {
	err := a.AutomaticPersistedQuery.MutateOperationParameters(ctx, raw)
	if err != nil && err.Extensions["code"] == nil {
		errcode.Set(err, codePersistedQuery)
	}
	return err
}

// depthLimit refuses operations whose fields nest deeper than max (introspection fields,
// named __*, are not counted). It runs during validation, before any resolver.
type depthLimit struct{ max int }

var _ interface {
	graphql.HandlerExtension
	graphql.OperationContextMutator
} = depthLimit{}

func (depthLimit) ExtensionName() string                   { return "DepthLimit" }
func (depthLimit) Validate(graphql.ExecutableSchema) error { return nil }

func (d depthLimit) MutateOperationContext(_ context.Context, op *graphql.OperationContext) *gqlerror.Error {
	depth := selectionDepth(op.Doc, op.Operation.SelectionSet, map[string]bool{})
	if depth > d.max {
		err := gqlerror.Errorf("operation has depth %d, which exceeds the limit of %d", depth, d.max)
		errcode.Set(err, codeDepthLimit)
		return err
	}
	return nil
}

// selectionDepth is the number of nested field levels of set, following fragments. visiting
// guards against fragment cycles (which validation already refuses).
func selectionDepth(doc *ast.QueryDocument, set ast.SelectionSet, visiting map[string]bool) int {
	deepest := 0
	for _, sel := range set {
		var d int
		switch s := sel.(type) {
		case *ast.Field:
			if strings.HasPrefix(s.Name, "__") {
				continue
			}
			d = 1 + selectionDepth(doc, s.SelectionSet, visiting)
		case *ast.InlineFragment:
			d = selectionDepth(doc, s.SelectionSet, visiting)
		case *ast.FragmentSpread:
			if visiting[s.Name] {
				continue
			}
			frag := doc.Fragments.ForName(s.Name)
			if frag == nil {
				continue
			}
			visiting[s.Name] = true
			d = selectionDepth(doc, frag.SelectionSet, visiting)
			delete(visiting, s.Name)
		}
		deepest = max(deepest, d)
	}
	return deepest
}
