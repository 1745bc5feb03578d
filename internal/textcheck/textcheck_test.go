package textcheck_test

import (
	"testing"

	"github.com/taskerhq/tasker/internal/textcheck"
)

func TestJSON(t *testing.T) {
	t.Parallel()
	cases := []struct {
		doc, path, reason string
	}{
		{`{"a": "ok", "b": ["x", {"c": "\u00e9\ud83d\ude00"}]}`, "", ""},
		{`{"a": "back\\u0000slash"}`, "", ""}, // an escaped backslash, then text
		{`{"a": "x\u0000y"}`, "v.a", "contains a NUL character"},
		{`{"a": [1, "ok", "\ud800"]}`, "v.a[2]", `contains a lone UTF-16 surrogate (\ud800)`},
		{`{"a": {"k": "\udc00x"}}`, "v.a.k", `contains a lone UTF-16 surrogate (\udc00)`},
		{`{"a": "\ud800\u0041"}`, "v.a", `contains a lone UTF-16 surrogate (\ud800)`},
		{`{"a": "tail\ud83d"}`, "v.a", `contains a lone UTF-16 surrogate (\ud83d)`},
		{"{\"a\": \"\xff\"}", "v.a", "is not valid UTF-8"},
		{`{"k\u0000": 1}`, `v.k\u0000`, "(a key) contains a NUL character"},
		{`[{"a": 1}, {"b": "\u0000"}]`, "v[1].b", "contains a NUL character"},
		{`{"a": 1, "b": {"c": 2}, "d": "\u0000"}`, "v.d", "contains a NUL character"},
		{`"\u0000"`, "v", "contains a NUL character"},
		{`{"a": `, "", ""}, // not JSON: left to the decoder
	}
	for _, c := range cases {
		p := textcheck.JSON("v", []byte(c.doc))
		switch {
		case c.reason == "" && p != nil:
			t.Errorf("JSON(%s) = %v, want nothing", c.doc, p)
		case c.reason != "" && (p == nil || p.Path != c.path || p.Reason != c.reason):
			t.Errorf("JSON(%s) = %+v, want path %q reason %q", c.doc, p, c.path, c.reason)
		}
	}
}

func TestValueAndString(t *testing.T) {
	t.Parallel()
	v := map[string]any{"a": []any{"ok", map[string]any{"b": "x\x00"}}}
	if p := textcheck.Value("input", v); p == nil || p.Path != "input.a[1].b" || p.Reason != "contains a NUL character" {
		t.Errorf("Value = %+v", p)
	}
	if p := textcheck.Value("input", map[string]any{"a": "\xff"}); p == nil || p.Reason != "is not valid UTF-8" {
		t.Errorf("Value of invalid UTF-8 = %+v", p)
	}
	if p := textcheck.Value("x", map[string]any{"a": 1.5, "b": "fine ✓"}); p != nil {
		t.Errorf("Value of good input = %+v", p)
	}
	if textcheck.Literal(`"\u{1F600}"`) != "" || textcheck.Literal(`"\\ud800"`) != "" {
		t.Error("Literal refused good escapes")
	}
}
