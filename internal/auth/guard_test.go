package auth_test

import (
	"context"
	"testing"

	"github.com/99designs/gqlgen/graphql"

	"github.com/taskerhq/tasker/internal/auth"
)

// Responses to requests that never became an operation (a body gqlgen could not decode) reach
// the guard's interceptors without an operation context: they pass through, without a panic.
func TestGuardInterceptorsWithoutAnOperation(t *testing.T) {
	t.Parallel()
	g, err := auth.NewGuard(auth.Off, nil, auth.Limits{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := &graphql.Response{}
	got := g.InterceptResponse(context.Background(), func(context.Context) *graphql.Response { return want })
	if got != want {
		t.Fatalf("InterceptResponse = %+v, want the response passed through", got)
	}
	h := g.InterceptOperation(context.Background(), func(context.Context) graphql.ResponseHandler { return graphql.OneShot(want) })
	if r := h(context.Background()); r != want {
		t.Fatalf("InterceptOperation = %+v, want the response passed through", r)
	}
}
