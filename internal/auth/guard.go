package auth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/errcode"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/taskerhq/tasker/internal/events"
)

// Policy is the least role allowed to use each root field, keyed "Type.field" (e.g.
// "Mutation.createTask"). A root field it does not list needs Reader under Query and
// Subscription, and Admin under Mutation: a new mutation is admin-only until it is listed.
type Policy map[string]Role

// DefaultPolicy lets operators run the workflow mutations; every other mutation (token
// management, read-model refreshes) needs admin.
func DefaultPolicy() Policy {
	return Policy{
		"Mutation.createTask":          Operator,
		"Mutation.createTasks":         Operator,
		"Mutation.cancelTask":          Operator,
		"Mutation.retryTask":           Operator,
		"Mutation.cancelStep":          Operator,
		"Mutation.retryStep":           Operator,
		"Mutation.resolveStep":         Operator,
		"Mutation.resolveStepManually": Operator,
	}
}

// Required returns the least role allowed to use field of root type typ.
func (p Policy) Required(typ, field string) Role {
	if r, ok := p[typ+"."+field]; ok {
		return r
	}
	if typ == "Mutation" {
		return Admin
	}
	return Reader
}

// Guard admits requests: HTTP middleware (body size, bearer token, rate), a websocket
// connection_init function, and a gqlgen extension (role, rate of websocket operations,
// subscriptions per connection, statement timeout). Create it with NewGuard.
type Guard struct {
	mode   Mode
	store  *Store
	limits Limits
	policy Policy
	log    *slog.Logger
	rates  *limiters
	now    func() time.Time
	hub    *events.Hub  // set by WatchRevocations
	subs   atomic.Int64 // active websocket subscriptions of this process
}

// NewGuard returns a guard. store may be nil only when mode is Off. policy nil means
// DefaultPolicy.
func NewGuard(mode Mode, store *Store, limits Limits, policy Policy, log *slog.Logger) (*Guard, error) {
	if mode == Required && store == nil {
		return nil, errors.New("creating auth guard: authentication is required but there is no token store")
	}
	if policy == nil {
		policy = DefaultPolicy()
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	limits = limits.WithDefaults()
	return &Guard{
		mode: mode, store: store, limits: limits, policy: policy, log: log,
		rates: newLimiters(limits.RatePerSecond, limits.Burst), now: time.Now,
	}, nil
}

// Subscriptions returns the number of websocket subscriptions this process runs.
func (g *Guard) Subscriptions() int { return int(g.subs.Load()) }

// Mode returns the guard's mode.
func (g *Guard) Mode() Mode { return g.mode }

// Limits returns the limits in force.
func (g *Guard) Limits() Limits { return g.limits }

type chargedKey struct{}

// HTTP admits HTTP requests to next:
//
//   - a body larger than MaxBodyBytes: 413, REQUEST_TOO_LARGE (nothing else is read);
//   - a JSON POST body that is not JSON: 400, BAD_REQUEST (the body is not echoed);
//   - no Authorization header (except on a websocket upgrade, which authenticates in
//     connection_init) or an invalid token: 401, UNAUTHENTICATED;
//   - the token store unreachable: 503, SERVICE_UNAVAILABLE;
//   - over the token's rate: 429, RATE_LIMITED, with Retry-After.
//
// An admitted request carries its Principal in its context. Error bodies are GraphQL
// responses; extensions.requestId is the X-Request-Id already set on the response, if any.
func (g *Guard) HTTP(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		upgrade := isWebsocketUpgrade(r)
		if !upgrade && r.Body != nil && r.Body != http.NoBody {
			if r.ContentLength > g.limits.MaxBodyBytes {
				g.refuse(w, http.StatusRequestEntityTooLarge, RequestTooLarge,
					fmt.Sprintf("request body is %d bytes, the limit is %d", r.ContentLength, g.limits.MaxBodyBytes))
				return
			}
			body, err := io.ReadAll(io.LimitReader(r.Body, g.limits.MaxBodyBytes+1))
			_ = r.Body.Close()
			if err != nil {
				g.refuse(w, http.StatusBadRequest, BadRequest, "reading the request body failed")
				return
			}
			if int64(len(body)) > g.limits.MaxBodyBytes {
				g.refuse(w, http.StatusRequestEntityTooLarge, RequestTooLarge,
					fmt.Sprintf("request body exceeds the limit of %d bytes", g.limits.MaxBodyBytes))
				return
			}
			if r.Method == http.MethodPost && isJSON(r.Header.Get("Content-Type")) && !json.Valid(body) {
				g.refuse(w, http.StatusBadRequest, BadRequest, "request body is not valid JSON")
				return
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
			r.ContentLength = int64(len(body))
		}

		ctx := r.Context()
		if upgrade {
			ctx = context.WithValue(ctx, wsSlotKey{}, &wsSlot{})
		}
		header := r.Header.Get("Authorization")
		switch {
		case g.mode == Off:
			ctx = WithPrincipal(ctx, anonymous)
		case header == "" && upgrade:
			// Authenticated by WebsocketInit.
		case header == "":
			w.Header().Set("WWW-Authenticate", `Bearer realm="tasker"`)
			g.refuse(w, http.StatusUnauthorized, Unauthenticated,
				"authentication required: send the header Authorization: Bearer <API token>")
			return
		default:
			p, err := g.authenticate(ctx, header)
			if err != nil {
				g.refuseAuth(w, err)
				return
			}
			ctx = WithPrincipal(ctx, p)
		}
		if p, ok := FromContext(ctx); ok && !upgrade {
			if ok, wait := g.rates.allow(p.TokenID, g.now()); !ok {
				w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(wait.Seconds()))))
				g.refuse(w, http.StatusTooManyRequests, RateLimited, rateMessage(g.limits, wait))
				return
			}
			ctx = context.WithValue(ctx, chargedKey{}, true)
		}
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

func rateMessage(l Limits, wait time.Duration) string {
	return fmt.Sprintf("rate limit of %g operations per second (burst %d) for this token exceeded; retry in %s",
		l.RatePerSecond, l.Burst, wait.Round(time.Millisecond))
}

// authenticate checks an Authorization value ("Bearer <token>").
func (g *Guard) authenticate(ctx context.Context, header string) (Principal, error) {
	scheme, token, ok := strings.Cut(strings.TrimSpace(header), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return Principal{}, ErrInvalidToken
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	p, err := g.store.Authenticate(ctx, strings.TrimSpace(token))
	if err != nil && !errors.Is(err, ErrInvalidToken) {
		g.log.Log(ctx, lookupLevel(ctx), "auth: token lookup failed", "error", err)
	}
	return p, err
}

// lookupLevel is the log level of a failed token lookup made under ctx: debug when the client
// cancelled the request (the lookup failed because nobody waits for it), error otherwise.
func lookupLevel(ctx context.Context) slog.Level {
	if errors.Is(ctx.Err(), context.Canceled) {
		return slog.LevelDebug
	}
	return slog.LevelError
}

func (g *Guard) refuseAuth(w http.ResponseWriter, err error) {
	if errors.Is(err, ErrInvalidToken) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="tasker", error="invalid_token"`)
		g.refuse(w, http.StatusUnauthorized, Unauthenticated, "invalid or revoked API token")
		return
	}
	g.refuse(w, http.StatusServiceUnavailable, ServiceUnavailable, "the API token could not be checked; retry later")
}

// refuse writes a GraphQL error response.
func (g *Guard) refuse(w http.ResponseWriter, status int, code Code, msg string) {
	WriteRefusal(w, status, code, msg)
}

// WriteRefusal writes a GraphQL response of one error with status, extensions.code and, when
// the response already has an X-Request-Id header, extensions.requestId.
func WriteRefusal(w http.ResponseWriter, status int, code Code, msg string) {
	ext := map[string]any{"code": string(code)}
	if id := w.Header().Get("X-Request-Id"); id != "" {
		ext["requestId"] = id
	}
	body, _ := json.Marshal(map[string]any{"errors": []any{map[string]any{"message": msg, "extensions": ext}}})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

// isJSON reports whether a Content-Type is JSON (gqlgen's POST transport reads the body as
// JSON only then).
func isJSON(contentType string) bool {
	mt, _, _ := strings.Cut(contentType, ";")
	return strings.EqualFold(strings.TrimSpace(mt), "application/json")
}

func isWebsocketUpgrade(r *http.Request) bool {
	return strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
}

var _ interface {
	graphql.HandlerExtension
	graphql.OperationContextMutator
	graphql.OperationInterceptor
	graphql.ResponseInterceptor
} = (*Guard)(nil)

// ExtensionName implements graphql.HandlerExtension.
func (*Guard) ExtensionName() string { return "AuthGuard" }

// Validate implements graphql.HandlerExtension.
func (*Guard) Validate(graphql.ExecutableSchema) error { return nil }

func coded(code Code, format string, args ...any) *gqlerror.Error {
	err := gqlerror.Errorf(format, args...)
	errcode.Set(err, string(code))
	return err
}

// MutateOperationContext admits one operation before any resolver runs: the caller must be
// authenticated (UNAUTHENTICATED), a websocket operation must be within the token's rate
// (RATE_LIMITED; HTTP requests were charged by HTTP), and the caller's role must allow every
// root field selected (FORBIDDEN, naming the first field refused and the role it needs).
func (g *Guard) MutateOperationContext(ctx context.Context, op *graphql.OperationContext) *gqlerror.Error {
	p, ok := FromContext(ctx)
	if !ok {
		if g.mode != Off {
			return coded(Unauthenticated, "authentication required: send the header Authorization: Bearer <API token>")
		}
		p = anonymous
	}
	if cs, _ := ctx.Value(connKey{}).(*connState); cs != nil && g.mode == Required {
		// A websocket connection outlives the check at connection_init: every operation
		// re-reads the token, so a revoked token stops working at its next operation.
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		active, err := g.store.Active(qctx, p.TokenID)
		cancel()
		if err != nil {
			g.log.Log(ctx, lookupLevel(ctx), "auth: token lookup failed", "error", err)
			return coded(ServiceUnavailable, "the API token could not be checked; retry later")
		}
		if !active {
			g.closeRevoked(cs)
			return coded(Unauthenticated, "invalid or revoked API token")
		}
	}
	if charged, _ := ctx.Value(chargedKey{}).(bool); !charged {
		if ok, wait := g.rates.allow(p.TokenID, g.now()); !ok {
			return coded(RateLimited, "%s", rateMessage(g.limits, wait))
		}
	}
	if op.Operation == nil {
		return nil
	}
	typ := rootTypeName(op.Operation.Operation)
	for _, f := range graphql.CollectFields(op, op.Operation.SelectionSet, []string{typ}) {
		if strings.HasPrefix(f.Name, "__") {
			continue
		}
		need := g.policy.Required(typ, f.Name)
		if !p.Role.Allows(need) {
			return coded(Forbidden, "%s.%s needs the %s role; this token has the %s role", typ, f.Name, need, p.Role)
		}
	}
	return nil
}

func rootTypeName(op ast.Operation) string {
	switch op {
	case ast.Mutation:
		return "Mutation"
	case ast.Subscription:
		return "Subscription"
	}
	return "Query"
}

// InterceptOperation caps the active subscriptions of a websocket connection and of the
// process (TOO_MANY_SUBSCRIPTIONS); a subscription stops counting when it ends. The counts
// are taken before the subscription starts, atomically, so concurrent subscribes cannot
// overshoot.
func (g *Guard) InterceptOperation(ctx context.Context, next graphql.OperationHandler) graphql.ResponseHandler {
	if !graphql.HasOperationContext(ctx) {
		return next(ctx)
	}
	op := graphql.GetOperationContext(ctx)
	cs, _ := ctx.Value(connKey{}).(*connState)
	if op == nil || op.Operation == nil || op.Operation.Operation != ast.Subscription || cs == nil {
		return next(ctx)
	}
	if n := cs.subs.Add(1); n > int64(g.limits.MaxSubscriptions) {
		cs.subs.Add(-1)
		return graphql.OneShot(&graphql.Response{Errors: gqlerror.List{coded(TooManySubs,
			"this connection already has %d active subscriptions, the limit", g.limits.MaxSubscriptions)}})
	}
	if n := g.subs.Add(1); n > int64(g.limits.MaxProcessSubscriptions) {
		g.subs.Add(-1)
		cs.subs.Add(-1)
		return graphql.OneShot(&graphql.Response{Errors: gqlerror.List{coded(TooManySubs,
			"this server already runs %d subscriptions, its limit; retry later", g.limits.MaxProcessSubscriptions)}})
	}
	context.AfterFunc(ctx, func() {
		cs.subs.Add(-1)
		g.subs.Add(-1)
	})
	return next(ctx)
}

// InterceptResponse gives a query's or mutation's database work a deadline of
// StatementTimeout: statements still running then are cancelled, and the errors they cause
// are reported as STATEMENT_TIMEOUT rather than internal errors.
//
// Responses to requests that never became an operation (a body that did not decode) have no
// operation context and pass through untouched.
func (g *Guard) InterceptResponse(ctx context.Context, next graphql.ResponseHandler) *graphql.Response {
	if !graphql.HasOperationContext(ctx) {
		return next(ctx)
	}
	op := graphql.GetOperationContext(ctx)
	if op == nil || op.Operation == nil || op.Operation.Operation == ast.Subscription {
		return next(ctx)
	}
	tctx, cancel := context.WithTimeout(ctx, g.limits.StatementTimeout)
	defer cancel()
	resp := next(tctx)
	if resp == nil || len(resp.Errors) == 0 || !errors.Is(tctx.Err(), context.DeadlineExceeded) {
		return resp
	}
	for _, e := range resp.Errors {
		if e.Extensions != nil && e.Extensions["code"] != "INTERNAL" {
			continue
		}
		e.Message = fmt.Sprintf("the request's database work exceeded its time limit of %s and was cancelled", g.limits.StatementTimeout)
		ext := map[string]any{"code": string(StatementTimeout)}
		if id, ok := e.Extensions["requestId"]; ok {
			ext["requestId"] = id
		}
		e.Extensions = ext
	}
	return resp
}
