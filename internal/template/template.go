// Package template loads task templates from YAML, validates them, keeps them in a Registry and
// registers them into the template tables (namespaces, dependent systems, named steps, named
// tasks and their step defaults).
//
// A template file describes one version of one named task:
//
//	namespace: payments
//	name: charge_order
//	version: 1.2.0
//	description: charge an order and email the receipt
//	context_schema: {type: object, required: [order_id]}   # optional JSON Schema of the task context
//	steps:
//	  - name: fetch_order
//	    handler: {kind: http, config: {url: "https://orders/{{.Context.order_id}}"}}
//	  - name: charge
//	    depends_on: fetch_order          # a name or a list of names
//	    dependent_system: stripe         # default "default"
//	    retryable: true                  # default true
//	    retry_limit: 3                   # default 3
//	    timeout: 10s                     # default 30s
//	    skippable: false                 # default false
//	    inputs: {currency: EUR}          # optional, stored as the step's inputs
//	    handler: {kind: noop}
//
// Decoding is strict (an unknown field is an error). A template is refused, with an error
// naming the file and the step, when it is malformed, lacks a name or namespace, has a version
// that is not semver, repeats a step, depends on an unknown step, has a dependency cycle (the
// error names the steps on it), names an unknown handler kind or gives a handler a config it
// refuses, has an invalid context schema, a negative retry_limit or a bad timeout.
package template

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/taskerhq/tasker/internal/handler"
)

// Defaults of a step's optional fields.
const (
	DefaultDependentSystem = "default"
	DefaultRetryLimit      = 3
	DefaultTimeout         = 30 * time.Second
)

// Template is one validated version of a named task. It is immutable once loaded.
type Template struct {
	Namespace   string
	Name        string
	Version     string
	Description string
	// ContextSchema is the JSON Schema of the task context (nil: any JSON object).
	ContextSchema json.RawMessage
	// Steps in the order the file declares them.
	Steps []Step
	// File is where the template was loaded from.
	File string
	// Hash is the sha256 (hex) of the canonical definition (Configuration without the hash).
	Hash string

	schema *jsonschema.Schema
	byName map[string]int
	config json.RawMessage
}

// Step is one step of a template.
type Step struct {
	Name            string
	DependentSystem string
	Description     string
	Handler         HandlerSpec
	// DependsOn names the step's parents, in the order written.
	DependsOn  []string
	Retryable  bool
	RetryLimit int
	Timeout    time.Duration
	Skippable  bool
	// Inputs is stored as the workflow step's inputs (nil: none).
	Inputs json.RawMessage

	handler handler.Handler
}

// HandlerSpec says what a step runs.
type HandlerSpec struct {
	Kind   string         `json:"kind"`
	Config map[string]any `json:"config"`
}

// BuiltHandler returns the handler built for the step when its template was loaded. It is shared
// by every run of the step.
func (s *Step) BuiltHandler() handler.Handler { return s.handler }

// Key is "namespace/name@version".
func (t *Template) Key() string { return fmt.Sprintf("%s/%s@%s", t.Namespace, t.Name, t.Version) }

// Step returns the step called name, or nil.
func (t *Template) Step(name string) *Step {
	i, ok := t.byName[name]
	if !ok {
		return nil
	}
	return &t.Steps[i]
}

// Edge is a dependency: From (the parent) provides for To (the child).
type Edge struct {
	From string `json:"from"`
	To   string `json:"to"`
}

// Edges lists every dependency, ordered by the child's then the parent's declaration order.
func (t *Template) Edges() []Edge {
	var out []Edge
	for _, s := range t.Steps {
		for _, p := range s.DependsOn {
			out = append(out, Edge{From: p, To: s.Name})
		}
	}
	return out
}

// Configuration is the normalised template stored in tasker_named_tasks.configuration: every
// field with its defaults applied, the edges, the context schema, and the canonical hash.
func (t *Template) Configuration() json.RawMessage { return t.config }

// ContextError lists what is wrong with a task context.
type ContextError struct {
	Template string
	Problems []string
}

func (e *ContextError) Error() string {
	return fmt.Sprintf("task context does not match the schema of %s: %s", e.Template, strings.Join(e.Problems, "; "))
}

// ValidateContext checks a task context: it must be a JSON object and, when the template has a
// context schema, valid against it. A refusal is a *ContextError listing every problem.
func (t *Template) ValidateContext(raw json.RawMessage) error {
	inst, err := jsonschema.UnmarshalJSON(strings.NewReader(string(raw)))
	if err != nil {
		return &ContextError{Template: t.Key(), Problems: []string{"not valid JSON: " + err.Error()}}
	}
	if _, ok := inst.(map[string]any); !ok {
		return &ContextError{Template: t.Key(), Problems: []string{"must be a JSON object"}}
	}
	if t.schema == nil {
		return nil
	}
	err = t.schema.Validate(inst)
	if err == nil {
		return nil
	}
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return &ContextError{Template: t.Key(), Problems: []string{err.Error()}}
	}
	var problems []string
	var walk func(u *jsonschema.OutputUnit)
	walk = func(u *jsonschema.OutputUnit) {
		if u.Error != nil && len(u.Errors) == 0 {
			loc := u.InstanceLocation
			if loc == "" {
				loc = "/"
			}
			problems = append(problems, fmt.Sprintf("at %s: %s", loc, u.Error.String()))
		}
		for i := range u.Errors {
			walk(&u.Errors[i])
		}
	}
	walk(ve.BasicOutput())
	if len(problems) == 0 {
		problems = []string{ve.Error()}
	}
	return &ContextError{Template: t.Key(), Problems: problems}
}

// normalised is the JSON form of a template stored as configuration (and hashed).
type normalised struct {
	Format        int              `json:"format"`
	Namespace     string           `json:"namespace"`
	Name          string           `json:"name"`
	Version       string           `json:"version"`
	Description   string           `json:"description"`
	ContextSchema json.RawMessage  `json:"context_schema"`
	Steps         []normalisedStep `json:"steps"`
	Edges         []Edge           `json:"edges"`
	Hash          string           `json:"hash,omitempty"`
}

type normalisedStep struct {
	Name            string          `json:"name"`
	DependentSystem string          `json:"dependent_system"`
	Description     string          `json:"description"`
	Handler         HandlerSpec     `json:"handler"`
	DependsOn       []string        `json:"depends_on"`
	Retryable       bool            `json:"retryable"`
	RetryLimit      int             `json:"retry_limit"`
	Timeout         string          `json:"timeout"`
	TimeoutMillis   int64           `json:"timeout_ms"`
	Skippable       bool            `json:"skippable"`
	Inputs          json.RawMessage `json:"inputs"`
}

// finish computes the configuration and the hash. encoding/json writes map keys sorted, so
// the same definition always gives the same bytes.
func (t *Template) finish() error {
	n := normalised{Format: 1, Namespace: t.Namespace, Name: t.Name, Version: t.Version,
		Description: t.Description, ContextSchema: t.ContextSchema, Edges: t.Edges()}
	if n.Edges == nil {
		n.Edges = []Edge{}
	}
	for _, s := range t.Steps {
		deps := s.DependsOn
		if deps == nil {
			deps = []string{}
		}
		cfg := s.Handler.Config
		if cfg == nil {
			cfg = map[string]any{}
		}
		n.Steps = append(n.Steps, normalisedStep{Name: s.Name, DependentSystem: s.DependentSystem,
			Description: s.Description, Handler: HandlerSpec{Kind: s.Handler.Kind, Config: cfg},
			DependsOn: deps, Retryable: s.Retryable, RetryLimit: s.RetryLimit, Timeout: s.Timeout.String(),
			TimeoutMillis: s.Timeout.Milliseconds(), Skippable: s.Skippable, Inputs: s.Inputs})
	}
	canonical, err := json.Marshal(n)
	if err != nil {
		return fmt.Errorf("encoding template %s: %w", t.Key(), err)
	}
	sum := sha256.Sum256(canonical)
	t.Hash = hex.EncodeToString(sum[:])
	n.Hash = t.Hash
	if t.config, err = json.Marshal(n); err != nil {
		return fmt.Errorf("encoding template %s: %w", t.Key(), err)
	}
	return nil
}
