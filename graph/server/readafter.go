package server

import (
	"context"
	"net/http"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/errcode"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/taskerhq/tasker/internal/replica"
)

// ReadAfterHeader carries the readAfter token of an earlier response (extensions.readAfter):
// the request's reads go to a replica only once it has replayed that write, else to the
// primary, so a client that wrote reads its own write.
const ReadAfterHeader = "X-Tasker-Read-After"

// route installs the response's replica.Route: queries may read from a replica (when the
// server has replicas) that has replayed the request's X-Tasker-Read-After position;
// mutations and subscription events use the primary. A malformed header is refused with
// BAD_REQUEST before anything runs.
func (p perResponse) route(ctx context.Context) (context.Context, *replica.Route, *graphql.Response) {
	var after replica.LSN
	readOnly := false
	if graphql.HasOperationContext(ctx) {
		oc := graphql.GetOperationContext(ctx)
		if v := http.Header(oc.Headers).Get(ReadAfterHeader); v != "" {
			lsn, err := replica.ParseLSN(v)
			if err != nil {
				e := gqlerror.Errorf("header %s: %v, as returned in extensions.readAfter", ReadAfterHeader, err)
				errcode.Set(e, codeBadRequest)
				return ctx, nil, &graphql.Response{Errors: gqlerror.List{e}}
			}
			after = lsn
		}
		readOnly = p.router != nil && oc.Operation != nil && oc.Operation.Operation == ast.Query
	}
	ctx, route := replica.WithRoute(ctx, readOnly, after)
	return ctx, route, nil
}

// served adds to stats which server answered, and to the response the readAfter token when
// it wrote (with replicas only: without them every read sees every write).
func (p perResponse) served(ctx context.Context, route *replica.Route, resp *graphql.Response, stats map[string]any) {
	by, lag := route.Served()
	if stats != nil {
		stats["servedBy"] = by
		stats["replicaLagMs"] = nil
		if by == "replica" {
			stats["replicaLagMs"] = lag
		}
	}
	if p.router == nil || !route.Wrote() {
		return
	}
	lsn, err := p.router.WriteLSN(context.WithoutCancel(ctx))
	if err != nil {
		if p.log != nil {
			p.log.Error("graphql: reading the write position for readAfter", "err", err)
		}
		return
	}
	if resp.Extensions == nil {
		resp.Extensions = map[string]any{}
	}
	resp.Extensions["readAfter"] = lsn.String()
}
