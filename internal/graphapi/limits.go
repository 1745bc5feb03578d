package graphapi

import (
	"context"
	"strings"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/errcode"
	"github.com/99designs/gqlgen/graphql/handler/extension"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/taskerhq/tasker/graph/generated"
	"github.com/taskerhq/tasker/graph/model"
)

// setComplexity makes list fields with a size argument cost their size times their children.
func setComplexity(c *generated.ComplexityRoot) {
	c.Query.Tasks = func(child int, _ *model.TaskFilter, first *int, _ *string) int {
		n := 20
		if first != nil && *first > 0 {
			n = *first
		}
		return 1 + n*child
	}
}

// Codes of the limits; both are refused like a validation failure: HTTP 422, and an error
// message on a websocket.
const (
	codeDepthLimit      = "DEPTH_LIMIT_EXCEEDED"
	codeComplexityLimit = "COMPLEXITY_LIMIT_EXCEEDED"
	codePersistedQuery  = "PERSISTED_QUERY_INVALID"
)

func init() {
	for _, c := range []string{codeDepthLimit, codeComplexityLimit, codePersistedQuery} {
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
