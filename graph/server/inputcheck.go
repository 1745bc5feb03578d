package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/errcode"
	"github.com/99designs/gqlgen/graphql/handler/transport"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"

	"github.com/taskerhq/tasker/internal/errs"
	"github.com/taskerhq/tasker/internal/textcheck"
)

func contextWithInputText(ctx context.Context, t *inputText) context.Context {
	return context.WithValue(ctx, inputTextKey{}, t)
}

// inputCheck refuses, with VALIDATION naming the string, every operation whose input holds a
// NUL character, invalid UTF-8 or a lone UTF-16 surrogate escape, before any resolver (and so
// before any SQL) runs. It looks at every string the client sent: the raw request or
// websocket message (recorded by checkRequests and checkedWebsocket, which see the escapes
// that decoding erases), every string literal of the operation, and every variable. It is
// generic, so a new argument or field is covered without being listed.
type inputCheck struct{}

var _ interface {
	graphql.HandlerExtension
	graphql.OperationParameterMutator
	graphql.OperationContextMutator
} = inputCheck{}

func (inputCheck) ExtensionName() string                   { return "InputText" }
func (inputCheck) Validate(graphql.ExecutableSchema) error { return nil }

func refuseText(p *textcheck.Problem) *gqlerror.Error {
	err := gqlerror.Errorf("invalid input: %s", p.Error())
	errcode.Set(err, errs.Invalid.Code())
	return err
}

// MutateOperationParameters refuses what the raw text showed.
func (inputCheck) MutateOperationParameters(ctx context.Context, _ *graphql.RawParams) *gqlerror.Error {
	if t, _ := ctx.Value(inputTextKey{}).(*inputText); t != nil {
		if p := t.get(); p != nil {
			return refuseText(p)
		}
	}
	return nil
}

// MutateOperationContext refuses string literals and variables (decoded) that hold a NUL
// character or invalid UTF-8, and literals whose source has a lone surrogate escape.
func (inputCheck) MutateOperationContext(_ context.Context, op *graphql.OperationContext) *gqlerror.Error {
	for name, v := range op.Variables {
		if p := textcheck.Value("$"+name, v); p != nil {
			return refuseText(p)
		}
	}
	if op.Operation == nil {
		return nil
	}
	// Escapes are visible only in the source; positions count runes.
	var src []rune
	if strings.Contains(op.RawQuery, `\u`) {
		src = []rune(op.RawQuery)
	}
	for _, def := range op.Operation.VariableDefinitions {
		if p := literalProblem(src, "$"+def.Variable+" (default)", def.DefaultValue); p != nil {
			return refuseText(p)
		}
	}
	if p := selectionProblem(src, op.Operation.SelectionSet, map[string]bool{}, op.Doc); p != nil {
		return refuseText(p)
	}
	return nil
}

// selectionProblem checks the arguments of every field of set, following fragments.
func selectionProblem(src []rune, set ast.SelectionSet, seen map[string]bool, doc *ast.QueryDocument) *textcheck.Problem {
	for _, sel := range set {
		switch s := sel.(type) {
		case *ast.Field:
			for _, arg := range s.Arguments {
				if p := literalProblem(src, s.Name+"("+arg.Name+")", arg.Value); p != nil {
					return p
				}
			}
			if p := selectionProblem(src, s.SelectionSet, seen, doc); p != nil {
				return p
			}
		case *ast.InlineFragment:
			if p := selectionProblem(src, s.SelectionSet, seen, doc); p != nil {
				return p
			}
		case *ast.FragmentSpread:
			if seen[s.Name] || doc == nil {
				continue
			}
			seen[s.Name] = true
			if f := doc.Fragments.ForName(s.Name); f != nil {
				if p := selectionProblem(src, f.SelectionSet, seen, doc); p != nil {
					return p
				}
			}
		}
	}
	return nil
}

// literalProblem checks a literal value and its children: the decoded string, and for quoted
// strings the source text between the quotes (where a lone surrogate escape is still visible).
func literalProblem(src []rune, path string, v *ast.Value) *textcheck.Problem {
	if v == nil {
		return nil
	}
	switch v.Kind {
	case ast.StringValue, ast.BlockValue:
		if reason := textcheck.String(v.Raw); reason != "" {
			return &textcheck.Problem{Path: path, Reason: reason}
		}
		if pos := v.Position; v.Kind == ast.StringValue && pos != nil && pos.Start >= 0 && pos.End <= len(src) && pos.Start < pos.End {
			if reason := textcheck.Literal(string(src[pos.Start:pos.End])); reason != "" {
				return &textcheck.Problem{Path: path, Reason: reason}
			}
		}
	case ast.ObjectValue:
		for _, c := range v.Children {
			if p := literalProblem(src, path+"."+c.Name, c.Value); p != nil {
				return p
			}
		}
	case ast.ListValue:
		for i, c := range v.Children {
			if p := literalProblem(src, fmt.Sprintf("%s[%d]", path, i), c.Value); p != nil {
				return p
			}
		}
	}
	return nil
}

// checkedWebsocket wraps a websocket implementation so that the raw text of every message is
// checked with textcheck before gqlgen decodes it; the finding goes to the connection's
// inputText slot (put in the request context by checkRequests), which inputCheck reads when
// the message's operation starts.
type checkedWebsocket struct {
	inner transport.WebsocketImplementation
}

func (c checkedWebsocket) Accept(w http.ResponseWriter, r *http.Request, opts transport.WebsocketAcceptOptions) (transport.WebsocketConn, error) {
	conn, err := c.inner.Accept(w, r, opts)
	if err != nil {
		return nil, err
	}
	text, _ := r.Context().Value(inputTextKey{}).(*inputText)
	if text == nil {
		return conn, nil
	}
	return &checkedConn{WebsocketConn: conn, text: text}, nil
}

// checkedConn is a websocket connection whose messages are checked as they are read. It keeps
// the read limit and deadline of the connection it wraps.
type checkedConn struct {
	transport.WebsocketConn
	text *inputText
}

func (c *checkedConn) NextReader() (int, io.Reader, error) {
	typ, r, err := c.WebsocketConn.NextReader()
	if err != nil || r == nil {
		return typ, r, err
	}
	raw, err := io.ReadAll(r)
	if err != nil {
		return typ, nil, err
	}
	c.text.set(textcheck.JSON("", raw)) // paths read "payload.variables.x"
	return typ, bytes.NewReader(raw), nil
}

// WriteJSON sends v, giving every error of an "error" or "connection_error" message that has
// no extensions.code the code BAD_REQUEST: gqlgen's websocket transport answers a payload it
// cannot decode ("invalid json") without one, and every refusal carries a code.
func (c *checkedConn) WriteJSON(v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	var msg struct {
		Type    string          `json:"type"`
		Payload json.RawMessage `json:"payload"`
	}
	if json.Unmarshal(raw, &msg) != nil || (msg.Type != "error" && msg.Type != "connection_error") || len(msg.Payload) == 0 {
		return c.WebsocketConn.WriteJSON(json.RawMessage(raw))
	}
	var errs []map[string]any
	single := false
	if json.Unmarshal(msg.Payload, &errs) != nil {
		var one map[string]any
		if json.Unmarshal(msg.Payload, &one) != nil {
			return c.WebsocketConn.WriteJSON(json.RawMessage(raw))
		}
		errs, single = []map[string]any{one}, true
	}
	for _, e := range errs {
		ext, _ := e["extensions"].(map[string]any)
		if ext == nil {
			ext = map[string]any{}
			e["extensions"] = ext
		}
		if _, ok := ext["code"]; !ok {
			ext["code"] = codeBadRequest
		}
	}
	var full map[string]any
	if err := json.Unmarshal(raw, &full); err != nil {
		return c.WebsocketConn.WriteJSON(json.RawMessage(raw))
	}
	if single {
		full["payload"] = errs[0]
	} else {
		full["payload"] = errs
	}
	return c.WebsocketConn.WriteJSON(full)
}

func (c *checkedConn) SetReadLimit(limit int64) {
	if l, ok := c.WebsocketConn.(transport.WebsocketReadLimiter); ok {
		l.SetReadLimit(limit)
	}
}

func (c *checkedConn) SetReadDeadline(t time.Time) error {
	if d, ok := c.WebsocketConn.(transport.WebsocketReadDeadliner); ok {
		return d.SetReadDeadline(t)
	}
	return nil
}
