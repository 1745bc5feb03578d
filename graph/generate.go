// Package graph is the GraphQL API: the schema (schema/*.graphqls), generated execution code
// (generated/, never edited by hand), GraphQL-only models (model/), resolvers (resolvers/)
// and per-request dataloaders (loaders/). Run `go generate ./...` after editing the schema.
package graph

//go:generate go tool gqlgen generate
