// Package textcheck finds text that PostgreSQL cannot store or that decoding would silently
// change: NUL characters (refused by text and jsonb columns), invalid UTF-8 and lone UTF-16
// surrogate escapes such as "\ud800" (which encoding/json and the GraphQL lexer both turn into
// U+FFFD, so two different inputs would become the same value).
//
// Its checks are pure functions over the raw bytes a client sent, so a caller can refuse bad
// input before anything is decoded, stored or compared.
package textcheck

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Problem is a string that must be refused: where it is and what is wrong with it.
type Problem struct {
	// Path names the string: "variables.input.context.note", or the key itself when a key
	// is wrong. Empty for a bare value.
	Path string
	// Reason says what is wrong: "contains a NUL character", "is not valid UTF-8" or
	// "contains a lone UTF-16 surrogate (\ud800)".
	Reason string
}

func (p *Problem) Error() string {
	if p.Path == "" {
		return "the value " + p.Reason
	}
	return p.Path + " " + p.Reason
}

// Reasons of a Problem.
const (
	reasonNUL     = "contains a NUL character"
	reasonUTF8    = "is not valid UTF-8"
	reasonLoneFmt = "contains a lone UTF-16 surrogate (\\u%s)"
)

// String returns what is wrong with a decoded string (a NUL character or invalid UTF-8), or
// "" when nothing is.
func String(s string) string {
	if strings.IndexByte(s, 0) >= 0 {
		return reasonNUL
	}
	if !utf8.ValidString(s) {
		return reasonUTF8
	}
	return ""
}

// Literal returns what is wrong with the source text of one quoted string literal, JSON or
// GraphQL, escapes included: raw NUL bytes or \u0000 escapes, invalid UTF-8, or a \uD800–\uDFFF
// escape that is not a high surrogate directly followed by a low one. "" when nothing is.
func Literal(lit string) string {
	if !utf8.ValidString(lit) {
		return reasonUTF8
	}
	if strings.IndexByte(lit, 0) >= 0 {
		return reasonNUL
	}
	for i := 0; i < len(lit); i++ {
		if lit[i] != '\\' || i+1 >= len(lit) {
			continue
		}
		if lit[i+1] != 'u' {
			i++ // skip the escaped character, which may be a backslash
			continue
		}
		r, ok := hex4(lit, i+2)
		if !ok {
			i++
			continue
		}
		switch {
		case r == 0:
			return reasonNUL
		case r >= 0xD800 && r <= 0xDBFF:
			if lo, ok := hex4(lit, i+8); ok && lit[i+6] == '\\' && lit[i+7] == 'u' && lo >= 0xDC00 && lo <= 0xDFFF {
				i += 11
				continue
			}
			return fmt.Sprintf(reasonLoneFmt, lit[i+2:i+6])
		case r >= 0xDC00 && r <= 0xDFFF:
			return fmt.Sprintf(reasonLoneFmt, lit[i+2:i+6])
		}
		i += 5
	}
	return ""
}

// hex4 decodes the four hex digits of s at i.
func hex4(s string, i int) (rune, bool) {
	if i < 0 || i+4 > len(s) {
		return 0, false
	}
	n, err := strconv.ParseUint(s[i:i+4], 16, 32)
	if err != nil {
		return 0, false
	}
	return rune(n), true
}

// JSON returns the first string (key or value) of a JSON document whose source text Literal
// refuses, with its path below root ("variables.input.tags[2]"), or nil when there is none.
// Bytes that are not UTF-8 outside any string are reported too; other syntax errors are left
// to the decoder, which refuses them anyway.
//
// A document without a backslash or a NUL byte, in valid UTF-8, has nothing Literal refuses
// (no escape at all), and is passed without being tokenised: most documents, read in about
// a tenth of the time.
func JSON(root string, data []byte) *Problem {
	if plain(data) {
		return nil
	}
	return scanJSON(root, data)
}

// plain reports whether data has no backslash and no NUL byte and is valid UTF-8.
func plain(data []byte) bool {
	return bytes.IndexByte(data, '\\') < 0 && bytes.IndexByte(data, 0) < 0 && utf8.Valid(data)
}

// scanJSON is JSON without the shortcut for plain documents: it tokenises data.
func scanJSON(root string, data []byte) *Problem {
	type frame struct {
		object    bool
		key       string // object: the key of the current member
		expectKey bool   // object: the next string is a key
		index     int    // array: the index of the current element
	}
	var stack []frame
	path := func(extra string) string {
		var b strings.Builder
		b.WriteString(root)
		for _, f := range stack {
			if f.object {
				if !f.expectKey {
					appendKey(&b, f.key)
				}
			} else {
				fmt.Fprintf(&b, "[%d]", f.index)
			}
		}
		if extra != "" {
			appendKey(&b, extra)
		}
		return b.String()
	}
	// done moves the innermost container past one complete value.
	done := func() {
		if len(stack) == 0 {
			return
		}
		top := &stack[len(stack)-1]
		if top.object {
			top.expectKey = true
		} else {
			top.index++
		}
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	for {
		before := dec.InputOffset()
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			if !utf8.Valid(data) {
				return &Problem{Path: root, Reason: reasonUTF8}
			}
			return nil // not JSON: the decoder refuses it
		}
		after := dec.InputOffset()
		switch t := tok.(type) {
		case json.Delim:
			switch t {
			case '{':
				stack = append(stack, frame{object: true, expectKey: true})
			case '[':
				stack = append(stack, frame{})
			default:
				stack = stack[:len(stack)-1]
				done()
			}
		case string:
			raw := string(data[before:after])
			if q := strings.IndexByte(raw, '"'); q >= 0 {
				raw = raw[q:]
			}
			isKey := len(stack) > 0 && stack[len(stack)-1].object && stack[len(stack)-1].expectKey
			if reason := Literal(raw); reason != "" {
				if isKey {
					return &Problem{Path: path(printable(t)), Reason: "(a key) " + reason}
				}
				return &Problem{Path: path(""), Reason: reason}
			}
			if isKey {
				top := &stack[len(stack)-1]
				top.key, top.expectKey = t, false
			} else {
				done()
			}
		default:
			done()
		}
	}
}

func appendKey(b *strings.Builder, key string) {
	if b.Len() > 0 {
		b.WriteByte('.')
	}
	b.WriteString(key)
}

// Value returns the first string (key or value) of a decoded JSON value (maps, slices,
// strings, and scalars) that String refuses, with its path below root, or nil.
func Value(root string, v any) *Problem {
	switch t := v.(type) {
	case string:
		if reason := String(t); reason != "" {
			return &Problem{Path: root, Reason: reason}
		}
	case map[string]any:
		for k, e := range t {
			p := joinPath(root, k)
			if reason := String(k); reason != "" {
				return &Problem{Path: p, Reason: "(a key) " + reason}
			}
			if pr := Value(p, e); pr != nil {
				return pr
			}
		}
	case []any:
		for i, e := range t {
			if pr := Value(fmt.Sprintf("%s[%d]", root, i), e); pr != nil {
				return pr
			}
		}
	}
	return nil
}

func joinPath(root, key string) string {
	if root == "" {
		return key
	}
	return root + "." + key
}

// printable is s fit for an error message: NUL characters and invalid bytes spelled out.
func printable(s string) string {
	return strings.ToValidUTF8(strings.ReplaceAll(s, "\x00", `\u0000`), `\ufffd`)
}
