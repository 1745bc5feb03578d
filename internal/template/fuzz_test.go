package template_test

import (
	"encoding/json"
	"testing"

	"github.com/taskerhq/tasker/internal/errs"
	"github.com/taskerhq/tasker/internal/handler"
	"github.com/taskerhq/tasker/internal/template"
	"github.com/taskerhq/tasker/templates"
)

// FuzzParse feeds arbitrary bytes to Parse. Whatever the input, Parse must not panic; it
// either refuses with errors that are all *template.Error (errs.Invalid) with a message, or
// returns a template whose steps, dependencies and key are consistent and whose context
// validation does not panic either. The seed corpus is the shipped templates plus the files
// in testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	entries, err := templates.FS.ReadDir(".")
	if err != nil {
		f.Fatal(err)
	}
	for _, e := range entries {
		if data, err := templates.FS.ReadFile(e.Name()); err == nil {
			f.Add(data)
		}
	}
	handlers := handler.NewBuiltinRegistry()
	f.Fuzz(func(t *testing.T, data []byte) {
		tpl, err := template.Parse("fuzz.yaml", data, handlers)
		if err != nil {
			if tpl != nil {
				t.Fatalf("Parse returned a template and an error: %v", err)
			}
			if !errs.Is(err, errs.Invalid) || err.Error() == "" {
				t.Fatalf("Parse refused with %T %q, want errs.Invalid with a message", err, err)
			}
			return
		}
		if tpl.Key() == "" || len(tpl.Steps) == 0 {
			t.Fatalf("accepted template %q has no key or no steps", tpl.Key())
		}
		for _, e := range tpl.Edges() {
			if tpl.Step(e.From) == nil || tpl.Step(e.To) == nil {
				t.Fatalf("edge %v names a step the template lacks", e)
			}
		}
		for _, ctx := range []string{`{}`, `null`, `[]`, `{"a":1}`} {
			_ = tpl.ValidateContext(json.RawMessage(ctx))
		}
		if !json.Valid(tpl.Configuration()) {
			t.Fatalf("configuration of %s is not valid JSON", tpl.Key())
		}
	})
}
