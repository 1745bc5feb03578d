// Package graph is the GraphQL API: the schema (schema/*.graphqls), generated execution code
// (generated/, never edited by hand), GraphQL-only models (model/), resolvers (resolvers/),
// per-request dataloaders (loaders/), subscription streams (feed/) and the HTTP server with its
// transports, limits and error presenter (server/). Errors reach clients coded by errs.Describe.
// Run `go generate ./...` after editing the schema or gqlgen.yml.
package graph

//go:generate go run ./codegen
