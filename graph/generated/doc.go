// Package generated is gqlgen's output for the schema in graph/schema: the executable schema,
// field resolution and marshalling. Never edit generated.go by hand; change the schema or
// gqlgen.yml and run `make generate` (CI fails when it is stale).
package generated
