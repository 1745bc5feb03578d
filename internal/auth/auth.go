// Package auth admits GraphQL requests: who is calling and how much they may ask.
//
//   - Identity: bearer API tokens (Store), created with a role and revocable. Only a SHA-256
//     hash of a token is stored; every request, and every operation on a websocket, looks its
//     token up again, so a revoked token is refused by the very next request, in every
//     process. A revocation is also published (NOTIFY), on which every process closes that
//     token's websockets with 4401 (WatchRevocations).
//   - Roles: reader < operator < admin. Policy maps each root field of the schema to the least
//     role allowed to use it; Guard checks it once per operation, before any resolver runs.
//   - Limits: request body size, requests per token per second (in-process: each server
//     process keeps its own budget), subscriptions per websocket connection and per process,
//     and a deadline on each query's and mutation's database work.
//
// Every refusal carries extensions.code (see the Code constants) and a message that names the
// limit, never internals.
package auth

import (
	"context"
	"fmt"
	"strings"
)

// Role is what a token may do. Each role includes the ones below it.
type Role string

// The roles, least to most privileged.
const (
	// Reader may query and subscribe.
	Reader Role = "reader"
	// Operator may also create, cancel, retry and resolve.
	Operator Role = "operator"
	// Admin may also manage tokens and refresh read models.
	Admin Role = "admin"
)

// Roles lists every role, least privileged first.
var Roles = []Role{Reader, Operator, Admin}

func (r Role) rank() int {
	switch r {
	case Reader:
		return 1
	case Operator:
		return 2
	case Admin:
		return 3
	}
	return 0
}

// Allows reports whether r includes need.
func (r Role) Allows(need Role) bool { return r.rank() > 0 && r.rank() >= need.rank() }

// ParseRole parses "reader", "operator" or "admin".
func ParseRole(s string) (Role, error) {
	r := Role(strings.ToLower(strings.TrimSpace(s)))
	if r.rank() == 0 {
		return "", fmt.Errorf("unknown role %q: want reader, operator or admin", s)
	}
	return r, nil
}

// Principal is the caller of a request.
type Principal struct {
	// TokenID is the api_token_id of the token used (0 when authentication is off).
	TokenID int64
	// Name is the token's name ("anonymous" when authentication is off).
	Name string
	// Role is what the caller may do (Admin when authentication is off).
	Role Role
	// Open is true when authentication is off and the caller was not identified.
	Open bool
}

// anonymous is the principal of every request when authentication is off.
var anonymous = Principal{Name: "anonymous", Role: Admin, Open: true}

// Actor is the principal as recorded in transition metadata under the key "actor".
func (p Principal) Actor() map[string]any {
	if p.Open {
		return map[string]any{"name": p.Name, "role": string(p.Role), "authentication": "off"}
	}
	return map[string]any{"token_id": p.TokenID, "name": p.Name, "role": string(p.Role)}
}

type principalKey struct{}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// FromContext returns the principal of ctx, if the request was admitted.
func FromContext(ctx context.Context) (Principal, bool) {
	p, ok := ctx.Value(principalKey{}).(Principal)
	return p, ok
}

// ActorMetadata returns meta (a new map when nil) with the caller of ctx under "actor", for the
// metadata of the transitions a mutation writes. Without a principal it records
// {"name": "unknown"}.
func ActorMetadata(ctx context.Context, meta map[string]any) map[string]any {
	out := make(map[string]any, len(meta)+1)
	for k, v := range meta {
		out[k] = v
	}
	if p, ok := FromContext(ctx); ok {
		out["actor"] = p.Actor()
	} else {
		out["actor"] = map[string]any{"name": "unknown"}
	}
	return out
}

// Code is the extensions.code of a refusal.
type Code string

// The refusal codes of this package.
const (
	Unauthenticated    Code = "UNAUTHENTICATED"
	Forbidden          Code = "FORBIDDEN"
	RateLimited        Code = "RATE_LIMITED"
	RequestTooLarge    Code = "REQUEST_TOO_LARGE"
	BadRequest         Code = "BAD_REQUEST"
	TooManySubs        Code = "TOO_MANY_SUBSCRIPTIONS"
	StatementTimeout   Code = "STATEMENT_TIMEOUT"
	ServiceUnavailable Code = "SERVICE_UNAVAILABLE"
)
