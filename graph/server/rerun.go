package server

import (
	"context"

	"github.com/99designs/gqlgen/graphql"

	"github.com/taskerhq/tasker/internal/replica"
)

// replicaFailed reports whether the response of a query must be thrown away and the query run
// again on the primary: an error it collected may come from a replica that went away after a
// read's first row (replica.Route.ReplicaFailed), which the router cannot retry itself (see
// internal/replica). Not when the request is cancelled or out of time: the caller gave up.
// Not for a response with deferred fragments still to come, which belong to this execution;
// that is logged, as the presenter logged the error as one that runs again.
func (p perResponse) replicaFailed(ctx context.Context, route *replica.Route, resp *graphql.Response) bool {
	if p.router == nil || resp == nil || ctx.Err() != nil {
		return false
	}
	for _, e := range resp.Errors {
		if !route.ReplicaFailed(e) {
			continue
		}
		if resp.HasNext != nil {
			if p.log != nil {
				p.log.ErrorContext(ctx, "graphql: a replica failed under a query with deferred fragments, which does not run again",
					"request_id", RequestID(ctx), "error", e)
			}
			return false
		}
		return true
	}
	return false
}

// again executes the operation of ctx once more, as gqlgen's executor runs it the first time,
// and returns its response. Its errors are collected apart (a fresh response context): the
// first execution's are not this answer's.
func (p perResponse) again(ctx context.Context) *graphql.Response {
	ctx = graphql.WithFreshResponseContext(ctx)
	resp := p.es.Exec(ctx)(ctx)
	if resp == nil {
		return nil
	}
	resp.Errors = append(resp.Errors, graphql.GetErrors(ctx)...)
	resp.Extensions = graphql.GetExtensions(ctx)
	return resp
}
