package template_test

import (
	"fmt"

	"github.com/taskerhq/tasker/internal/handler"
	"github.com/taskerhq/tasker/internal/template"
)

// A template names its steps, their handlers and what each depends on. Parse validates it
// and gives the edges the engine creates for every task of it.
func ExampleParse() {
	yaml := `
namespace: billing
name: monthly_invoice
version: 1.2.0
steps:
  - name: fetch_usage
    handler: {kind: noop}
  - name: fetch_prices
    handler: {kind: noop}
  - name: build_invoice
    depends_on: [fetch_usage, fetch_prices]
    retry_limit: 5
    handler: {kind: noop}
`
	tpl, err := template.Parse("invoice.yaml", []byte(yaml), handler.NewBuiltinRegistry())
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(tpl.Key())
	for _, e := range tpl.Edges() {
		fmt.Println(e.From, "->", e.To)
	}
	fmt.Println("build_invoice retry limit:", tpl.Step("build_invoice").RetryLimit)
	// Output:
	// billing/monthly_invoice@1.2.0
	// fetch_usage -> build_invoice
	// fetch_prices -> build_invoice
	// build_invoice retry limit: 5
}

// A cycle is refused, naming the file and the steps on it.
func ExampleParse_cycle() {
	yaml := `
namespace: billing
name: broken
version: 1.0.0
steps:
  - {name: a, depends_on: c, handler: {kind: noop}}
  - {name: b, depends_on: a, handler: {kind: noop}}
  - {name: c, depends_on: b, handler: {kind: noop}}
`
	_, err := template.Parse("broken.yaml", []byte(yaml), handler.NewBuiltinRegistry())
	fmt.Println(err)
	// Output:
	// broken.yaml: step "b": dependency cycle: b → c → a → b
}
