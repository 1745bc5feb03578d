package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/99designs/gqlgen/graphql"
	"github.com/vektah/gqlparser/v2"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/taskerhq/tasker/graph/generated"
	"github.com/taskerhq/tasker/internal/errs"
)

func requestCtx(id string) context.Context {
	return context.WithValue(context.Background(), requestIDKey{}, id)
}

func TestPresenterMasksInternalErrorsAndCodesDomainErrors(t *testing.T) {
	var logs bytes.Buffer
	p := presenter{log: slog.New(slog.NewTextHandler(&logs, nil))}
	ctx := requestCtx("req-42")

	internal := p.present(ctx, fmt.Errorf("reading tasks: %w", errors.New("connection reset by peer")))
	if internal.Message != "internal error (request id req-42)" || internal.Extensions["code"] != "INTERNAL" ||
		internal.Extensions["requestId"] != "req-42" {
		t.Errorf("internal error shown as %q %v", internal.Message, internal.Extensions)
	}
	if !strings.Contains(logs.String(), "connection reset by peer") || !strings.Contains(logs.String(), "request_id=req-42") {
		t.Errorf("internal error not logged with its cause and request id: %s", logs.String())
	}

	nf := p.present(ctx, fmt.Errorf("loading: %w", errs.E(errs.NotFound, "step %d not found", 7)))
	if nf.Message != "step 7 not found" || nf.Extensions["code"] != "NOT_FOUND" {
		t.Errorf("not found shown as %q %v", nf.Message, nf.Extensions)
	}
	v := p.present(ctx, errs.E(errs.Invalid, "first must be between 1 and 500, got 0"))
	if v.Extensions["code"] != "VALIDATION" || !strings.Contains(v.Message, "got 0") {
		t.Errorf("validation shown as %q %v", v.Message, v.Extensions)
	}
	own := gqlerror.Errorf("Cannot query field \"nope\" on type \"Query\".")
	if got := p.present(ctx, own); got != own {
		t.Errorf("gqlgen's own error rewritten: %v", got)
	}
}

func TestPresenterDoesNotCallAnAbandonedRequestInternal(t *testing.T) {
	var logs bytes.Buffer
	p := presenter{log: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	ctx, cancel := context.WithCancel(requestCtx("req-9"))
	cancel()
	shown := p.present(ctx, fmt.Errorf("reading tasks: %w", context.Canceled))
	if shown.Extensions["code"] != "CANCELLED" || strings.Contains(shown.Message, "internal") {
		t.Errorf("abandoned request shown as %q %v", shown.Message, shown.Extensions)
	}
	if !strings.Contains(logs.String(), "level=DEBUG") || strings.Contains(logs.String(), "level=ERROR") ||
		!strings.Contains(logs.String(), "request_id=req-9") {
		t.Errorf("abandoned request not logged at debug level only: %s", logs.String())
	}

	// A cancellation the client did not ask for (its request is still live) is a fault.
	logs.Reset()
	live := p.present(requestCtx("req-10"), fmt.Errorf("batch: %w", context.Canceled))
	if live.Extensions["code"] != "INTERNAL" || !strings.Contains(logs.String(), "level=ERROR") {
		t.Errorf("cancellation inside a live request shown as %q %v, logged %s", live.Message, live.Extensions, logs.String())
	}
}

func TestRecoverTurnsPanicsIntoMaskedErrors(t *testing.T) {
	var logs bytes.Buffer
	p := presenter{log: slog.New(slog.NewTextHandler(&logs, nil))}
	ctx := requestCtx("req-7")
	err := p.recover(ctx, "index out of range")
	shown := p.present(ctx, graphql.ErrorOnPath(ctx, err))
	if shown.Extensions["code"] != "INTERNAL" || strings.Contains(shown.Message, "index") {
		t.Errorf("panic shown as %q %v", shown.Message, shown.Extensions)
	}
	if !strings.Contains(logs.String(), "index out of range") || !strings.Contains(logs.String(), "stack=") {
		t.Errorf("panic not logged with its stack: %s", logs.String())
	}
}

func TestRequestIDIsEchoedOrCreated(t *testing.T) {
	var seen string
	h := withRequestID(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { seen = RequestID(r.Context()) }))
	for _, c := range []struct{ sent, want string }{{"abc-123", "abc-123"}, {"bad id with spaces", ""}, {"", ""}} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, "/query", nil)
		req.Header.Set("X-Request-Id", c.sent)
		h.ServeHTTP(rec, req)
		got := rec.Header().Get("X-Request-Id")
		if got != seen || got == "" || (c.want != "" && got != c.want) {
			t.Errorf("sent %q: header %q, context %q", c.sent, got, seen)
		}
	}
}

func TestPlaygroundExamplesAreValid(t *testing.T) {
	schema := generated.NewExecutableSchema(generated.Config{}).Schema()
	for _, e := range Examples {
		if _, errs := gqlparser.LoadQuery(schema, e.Query); len(errs) > 0 {
			t.Errorf("example %q: %v", e.Title, errs)
		}
	}
}
