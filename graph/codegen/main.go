// Command codegen generates the GraphQL API's code (graph/generated, graph/model and the
// resolver stubs) from gqlgen.yml and the schema, as `gqlgen generate` does, with one change
// to gqlgen's generated executor: the fields of the objects named in sequential resolve one
// after another in the goroutine that marshals their object, rather than each in a goroutine
// of its own. Run it through `go generate ./...` (graph/generate.go).
//
// gqlgen starts a goroutine for every resolver field of every object beyond the first, and one
// for every element of a list of objects. For a Step, whose resolver fields (readiness, dag,
// transitions, task, parents, children) are dataloader reads that the prefetching of
// graph/loaders answers from memory for the lists of Query.task, Query.tasks, Query.steps and
// Query.step, those goroutines cost more than the fields: their start and the growth of their
// stacks were a fifth of a task detail's CPU time. The elements of a list of steps are still
// marshalled concurrently, so a field that is not primed still batches its keys across the
// list; only the fields of one step wait for one another.
package main

import (
	"fmt"
	"os"

	"github.com/99designs/gqlgen/api"
	"github.com/99designs/gqlgen/codegen"
	"github.com/99designs/gqlgen/codegen/config"
)

// sequential names the objects whose fields resolve one after another.
var sequential = []string{"Step"}

func main() {
	cfg, err := config.LoadConfigFromDefaultLocations()
	if err != nil {
		fmt.Fprintln(os.Stderr, "codegen: loading gqlgen.yml:", err)
		os.Exit(1)
	}
	if err := api.Generate(cfg, api.AddPlugin(sequentialFields{})); err != nil {
		fmt.Fprintln(os.Stderr, "codegen:", err)
		os.Exit(1)
	}
}

// sequentialFields is a gqlgen plugin that turns off concurrent field resolution for the
// objects named in sequential, and fails when one of them is not in the schema.
type sequentialFields struct{}

func (sequentialFields) Name() string { return "sequentialfields" }

func (sequentialFields) GenerateCode(data *codegen.Data) error {
	for _, name := range sequential {
		found := false
		for _, o := range data.Objects {
			if o.Name == name {
				o.DisableConcurrency, found = true, true
			}
		}
		if !found {
			return fmt.Errorf("object %s is not in the schema", name)
		}
	}
	return nil
}
