package textcheck

import "testing"

// TestJSONShortcutAgreesWithTheScan: a plain document (no backslash, no NUL byte, valid UTF-8)
// is passed without being tokenised, and the full scan finds nothing in it either; any other
// document gets what the full scan finds.
func TestJSONShortcutAgreesWithTheScan(t *testing.T) {
	t.Parallel()
	for _, doc := range []string{`{}`, `{"n": 1}`, `{"name": "Zoë", "tags": ["a", {"b": [1, 2.5, null, true]}]}`,
		`["日本", "emoji 😀"]`, `"bare"`, `{"a": "b"`, `not json`} {
		if !plain([]byte(doc)) {
			t.Errorf("%s: not plain", doc)
		}
		if got, full := JSON("v", []byte(doc)), scanJSON("v", []byte(doc)); got != nil || full != nil {
			t.Errorf("%s: JSON %v, full scan %v; want nothing found", doc, got, full)
		}
	}
	for _, doc := range []string{`{"a": "\u0000"}`, `{"a": "\ud800"}`, `{"\udc00": 1}`, `{"a": "ok \n \u00e9"}`} {
		if plain([]byte(doc)) {
			t.Errorf("%s: plain, but it has escapes", doc)
		}
		got, full := JSON("v", []byte(doc)), scanJSON("v", []byte(doc))
		if (got == nil) != (full == nil) || (got != nil && *got != *full) {
			t.Errorf("%s: JSON %v, full scan %v; want the same", doc, got, full)
		}
	}
	// A raw NUL byte is not JSON (the decoder refuses it); invalid UTF-8 is reported.
	for _, doc := range [][]byte{{'"', 0, '"'}, {'"', 0xff, '"'}} {
		if plain(doc) {
			t.Errorf("%q: plain", doc)
		}
		got, full := JSON("v", doc), scanJSON("v", doc)
		if (got == nil) != (full == nil) || (got != nil && *got != *full) {
			t.Errorf("%q: JSON %v, full scan %v; want the same", doc, got, full)
		}
	}
	if JSON("v", []byte{'"', 0xff, '"'}) == nil {
		t.Errorf("invalid UTF-8: nothing found")
	}
}
