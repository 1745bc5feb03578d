package template

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/Masterminds/semver/v3"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"gopkg.in/yaml.v3"

	"github.com/taskerhq/tasker/internal/errs"
	"github.com/taskerhq/tasker/internal/handler"
)

// Error is one reason a template is refused. It names the file and, when the problem is in a
// step, the step. Every Error is an errs.Invalid error: errs.Is(err, errs.Invalid) holds, and
// errs.Describe gives its whole text.
type Error struct {
	File string
	Step string
	Msg  string
}

func (e *Error) Error() string {
	if e.Step != "" {
		return fmt.Sprintf("%s: step %q: %s", e.File, e.Step, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.File, e.Msg)
}

// Unwrap returns the domain error the Error is: kind errs.Invalid, the same message.
func (e *Error) Unwrap() error { return &errs.Error{Kind: errs.Invalid, Message: e.Error()} }

type rawTemplate struct {
	Namespace     string      `yaml:"namespace"`
	Name          string      `yaml:"name"`
	Version       string      `yaml:"version"`
	Description   string      `yaml:"description"`
	ContextSchema any         `yaml:"context_schema"`
	Steps         []yaml.Node `yaml:"steps"`
}

type rawStep struct {
	Name            string     `yaml:"name"`
	DependentSystem string     `yaml:"dependent_system"`
	Description     string     `yaml:"description"`
	Handler         *rawHander `yaml:"handler"`
	DependsOn       stringList `yaml:"depends_on"`
	Retryable       *bool      `yaml:"retryable"`
	RetryLimit      *int       `yaml:"retry_limit"`
	Timeout         string     `yaml:"timeout"`
	Skippable       bool       `yaml:"skippable"`
	Inputs          any        `yaml:"inputs"`
}

type rawHander struct {
	Kind   string         `yaml:"kind"`
	Config map[string]any `yaml:"config"`
}

// stringList reads a YAML string or a list of strings.
type stringList []string

func (l *stringList) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		var s string
		if err := n.Decode(&s); err != nil {
			return err
		}
		*l = stringList{s}
		return nil
	case yaml.SequenceNode:
		var s []string
		if err := n.Decode(&s); err != nil {
			return err
		}
		*l = s
		return nil
	default:
		return fmt.Errorf("line %d: depends_on must be a step name or a list of step names", n.Line)
	}
}

var (
	identRE    = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)
	yamlLineRE = regexp.MustCompile(`line \d+: `)
	yamlTypeRE = regexp.MustCompile(` not found in type template\.raw\w+`)
)

// cleanYAMLError rewrites yaml.v3's "field x not found in type template.rawStep" as "field x is
// unknown".
func cleanYAMLError(err error) string { return yamlTypeRE.ReplaceAllString(err.Error(), " is unknown") }

// strictDecode decodes YAML bytes into dst, refusing unknown fields and trailing documents.
func strictDecode(data []byte, dst any) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(dst); err != nil {
		if errors.Is(err, io.EOF) {
			return errors.New("empty document")
		}
		return err
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return errors.New("more than one YAML document: a file holds exactly one template")
	}
	return nil
}

// decodeNode strictly decodes one node; the positions in its errors are relative to the node,
// so they are replaced by the node's own line.
func decodeNode(n *yaml.Node, dst any) error {
	b, err := yaml.Marshal(n)
	if err != nil {
		return err
	}
	if err := strictDecode(b, dst); err != nil {
		return fmt.Errorf("line %d: %s", n.Line, yamlLineRE.ReplaceAllString(cleanYAMLError(err), ""))
	}
	return nil
}

// stepNameOf reads the name field of a step mapping without decoding the rest.
func stepNameOf(n *yaml.Node, index int) string {
	if n.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == "name" && n.Content[i+1].Kind == yaml.ScalarNode && n.Content[i+1].Value != "" {
				return n.Content[i+1].Value
			}
		}
	}
	return fmt.Sprintf("#%d", index+1)
}

// Parse reads one template from data. file names it in errors. Handler kinds and their configs
// are checked against handlers. A refusal joins one *Error per problem found.
func Parse(file string, data []byte, handlers *handler.Registry) (*Template, error) {
	var problems []error
	fail := func(step, format string, args ...any) {
		problems = append(problems, &Error{File: file, Step: step, Msg: fmt.Sprintf(format, args...)})
	}
	var raw rawTemplate
	if err := strictDecode(data, &raw); err != nil {
		fail("", "malformed template: %s", cleanYAMLError(err))
		return nil, errors.Join(problems...)
	}
	t := &Template{Namespace: raw.Namespace, Name: raw.Name, Version: raw.Version,
		Description: raw.Description, File: file, byName: map[string]int{}}

	checkIdent := func(field, v string, max int) {
		switch {
		case v == "":
			fail("", "%s is required", field)
		case len(v) > max:
			fail("", "%s %q is longer than %d characters", field, v, max)
		case !identRE.MatchString(v):
			fail("", "%s %q may only contain letters, digits, '_', '.' and '-'", field, v)
		}
	}
	checkIdent("namespace", t.Namespace, 64)
	checkIdent("name", t.Name, 64)
	if t.Version == "" {
		fail("", "version is required (semver, e.g. 1.0.0)")
	} else if _, err := semver.StrictNewVersion(t.Version); err != nil || len(t.Version) > 32 {
		fail("", "version %q is not a semantic version MAJOR.MINOR.PATCH (e.g. 1.0.0)", t.Version)
	}
	if len(t.Description) > 255 {
		fail("", "description is longer than 255 characters")
	}
	if raw.ContextSchema != nil {
		schemaJSON, sch, err := compileSchema(raw.ContextSchema)
		if err != nil {
			fail("", "invalid context_schema: %v", err)
		} else {
			t.ContextSchema, t.schema = schemaJSON, sch
		}
	}
	if len(raw.Steps) == 0 {
		fail("", "a template needs at least one step")
	}

	for i := range raw.Steps {
		node := &raw.Steps[i]
		label := stepNameOf(node, i)
		var rs rawStep
		if err := decodeNode(node, &rs); err != nil {
			fail(label, "malformed step: %v", err)
			continue
		}
		s := Step{Name: rs.Name, DependentSystem: rs.DependentSystem, Description: rs.Description,
			DependsOn: []string(rs.DependsOn), Retryable: true, RetryLimit: DefaultRetryLimit,
			Timeout: DefaultTimeout, Skippable: rs.Skippable}
		switch {
		case s.Name == "":
			fail(label, "name is required")
			continue
		case len(s.Name) > 128:
			fail(label, "name is longer than 128 characters")
		case !identRE.MatchString(s.Name):
			fail(label, "name may only contain letters, digits, '_', '.' and '-'")
		}
		if _, dup := t.byName[s.Name]; dup {
			fail(s.Name, "duplicate step: the name is already used by step #%d", t.byName[s.Name]+1)
			continue
		}
		if s.DependentSystem == "" {
			s.DependentSystem = DefaultDependentSystem
		} else if len(s.DependentSystem) > 64 || strings.TrimSpace(s.DependentSystem) == "" {
			fail(s.Name, "dependent_system %q must be 1 to 64 characters", s.DependentSystem)
		}
		if len(s.Description) > 255 {
			fail(s.Name, "description is longer than 255 characters")
		}
		if rs.Retryable != nil {
			s.Retryable = *rs.Retryable
		}
		if rs.RetryLimit != nil {
			if *rs.RetryLimit < 0 {
				fail(s.Name, "retry_limit must be >= 0, got %d", *rs.RetryLimit)
			}
			s.RetryLimit = *rs.RetryLimit
		}
		if rs.Timeout != "" {
			d, err := time.ParseDuration(rs.Timeout)
			switch {
			case err != nil:
				fail(s.Name, "bad timeout %q: want a duration such as 30s or 500ms", rs.Timeout)
			case d <= 0:
				fail(s.Name, "bad timeout %q: must be positive", rs.Timeout)
			default:
				s.Timeout = d
			}
		}
		if rs.Inputs != nil {
			b, err := json.Marshal(rs.Inputs)
			if err != nil {
				fail(s.Name, "inputs cannot be written as JSON: %v", err)
			}
			s.Inputs = b
		}
		if rs.Handler == nil || rs.Handler.Kind == "" {
			fail(s.Name, "handler.kind is required (one of %s)", strings.Join(handlers.Kinds(), ", "))
		} else {
			s.Handler = HandlerSpec{Kind: rs.Handler.Kind, Config: rs.Handler.Config}
			if _, err := json.Marshal(rs.Handler.Config); err != nil {
				fail(s.Name, "handler config cannot be written as JSON: %v", err)
			} else if h, err := handlers.New(rs.Handler.Kind, rs.Handler.Config); err != nil {
				if errors.Is(err, handler.ErrUnknownKind) {
					fail(s.Name, "unknown handler kind %q (known: %s)", rs.Handler.Kind, strings.Join(handlers.Kinds(), ", "))
				} else {
					fail(s.Name, "bad handler config: %v", err)
				}
			} else {
				s.handler = h
			}
		}
		seen := map[string]bool{}
		for _, p := range s.DependsOn {
			if seen[p] {
				fail(s.Name, "depends_on lists %q twice", p)
			}
			seen[p] = true
			if p == s.Name {
				fail(s.Name, "depends on itself (a dependency cycle: %s → %s)", s.Name, s.Name)
			}
		}
		t.byName[s.Name] = len(t.Steps)
		t.Steps = append(t.Steps, s)
	}

	unknown := false
	for _, s := range t.Steps {
		for _, p := range s.DependsOn {
			if _, ok := t.byName[p]; !ok {
				unknown = true
				fail(s.Name, "depends_on names unknown step %q", p)
			}
		}
	}
	if !unknown {
		if cycle := findCycle(t); cycle != nil {
			fail(cycle[0], "dependency cycle: %s", strings.Join(cycle, " → "))
		}
	}
	if len(problems) > 0 {
		return nil, errors.Join(problems...)
	}
	if err := t.finish(); err != nil {
		return nil, err
	}
	return t, nil
}

// findCycle returns the steps of one dependency cycle, in edge direction and closed (the first
// step repeated at the end), or nil when the steps form a DAG. Self-loops are reported by Parse
// and skipped here.
func findCycle(t *Template) []string {
	const (
		white = iota
		grey
		black
	)
	color := make([]int, len(t.Steps))
	var stack []string
	var found []string
	var visit func(i int) bool
	visit = func(i int) bool {
		color[i] = grey
		stack = append(stack, t.Steps[i].Name)
		for _, p := range t.Steps[i].DependsOn {
			j := t.byName[p]
			if j == i {
				continue
			}
			switch color[j] {
			case grey:
				// stack holds child → parent order; the cycle is from p down to i.
				start := slices.Index(stack, p)
				path := slices.Clone(stack[start:])
				slices.Reverse(path)
				found = append(path, path[0])
				return true
			case white:
				if visit(j) {
					return true
				}
			}
		}
		stack = stack[:len(stack)-1]
		color[i] = black
		return false
	}
	for i := range t.Steps {
		if color[i] == white && visit(i) {
			return found
		}
	}
	return nil
}

// compileSchema turns a decoded YAML value into canonical JSON and a compiled JSON Schema.
// References to other documents are refused: a context schema is self-contained.
func compileSchema(v any) (json.RawMessage, *jsonschema.Schema, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, nil, fmt.Errorf("cannot be written as JSON: %w", err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		return nil, nil, err
	}
	c := jsonschema.NewCompiler()
	c.UseLoader(jsonschema.SchemeURLLoader{})
	const loc = "urn:tasker:context-schema"
	if err := c.AddResource(loc, doc); err != nil {
		return nil, nil, err
	}
	sch, err := c.Compile(loc)
	if err != nil {
		return nil, nil, err
	}
	return b, sch, nil
}
