package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/errcode"
	"github.com/vektah/gqlparser/v2/ast"
	"github.com/vektah/gqlparser/v2/gqlerror"
	"github.com/vektah/gqlparser/v2/parser"

	"github.com/taskerhq/tasker/internal/auth"
	"github.com/taskerhq/tasker/internal/textcheck"
)

// Codes of refused HTTP requests, answered before gqlgen sees them.
const (
	codeBadRequest       = "BAD_REQUEST"
	codeMethodNotAllowed = "METHOD_NOT_ALLOWED"
	codeUnsupportedMedia = "UNSUPPORTED_MEDIA_TYPE"
)

// inputText carries the first problem textcheck found in the raw text of a request (HTTP)
// or of the latest message (websocket), for the operation that request or message starts:
// the operation is refused with VALIDATION naming the string (see inputCheck). Websocket
// messages are read and their operations started one at a time, so one slot per connection
// suffices.
type inputText struct {
	websocket bool // the request is a websocket upgrade
	mu        sync.Mutex
	problem   *textcheck.Problem
}

func (t *inputText) set(p *textcheck.Problem) {
	t.mu.Lock()
	t.problem = p
	t.mu.Unlock()
}

func (t *inputText) get() *textcheck.Problem {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.problem
}

type inputTextKey struct{}

// checkRequests admits the requests gqlgen's transports can serve and refuses the others with
// a coded GraphQL error, so that no request reaches gqlgen's uncoded errors (or its echo of an
// undecodable body):
//
//   - a method other than GET, POST and OPTIONS: 405 METHOD_NOT_ALLOWED;
//   - a POST whose Content-Type is not application/json: 415 UNSUPPORTED_MEDIA_TYPE;
//   - a POST body that is not one JSON object {"query": string, "operationName": string,
//     "variables": object, "extensions": object} (a batch array, a bare string or number,
//     "query": 5): 400 BAD_REQUEST naming what is wrong;
//   - a subscription over plain HTTP: 422 BAD_REQUEST (it would hold the request open until
//     its first event; see subscriptionTransport);
//   - GET parameters that do not decode (variables or extensions not a JSON object): 400
//     BAD_REQUEST; a GET of a mutation or subscription: 405 METHOD_NOT_ALLOWED (Allow: POST).
//
// It also scans the raw request text with textcheck and records the first NUL character,
// invalid UTF-8 or lone surrogate for inputCheck, which refuses the operation with VALIDATION.
// Websocket upgrades get a slot that each message fills (see checkedWebsocket).
func checkRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		text := &inputText{websocket: strings.EqualFold(r.Header.Get("Upgrade"), "websocket")}
		r = r.WithContext(contextWithInputText(r.Context(), text))
		switch {
		case text.websocket, r.Method == http.MethodOptions:
		case r.Method == http.MethodGet:
			if !checkGET(w, r, text) {
				return
			}
		case r.Method == http.MethodPost:
			mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
			if mt != "application/json" {
				refuseHTTP(w, http.StatusUnsupportedMediaType, codeUnsupportedMedia,
					fmt.Sprintf("Content-Type %q is not supported: send application/json", r.Header.Get("Content-Type")))
				return
			}
			body, err := io.ReadAll(r.Body)
			if err != nil {
				refuseHTTP(w, http.StatusBadRequest, codeBadRequest, "reading the request body failed")
				return
			}
			if msg := postBodyShape(body); msg != "" {
				refuseHTTP(w, http.StatusBadRequest, codeBadRequest, msg)
				return
			}
			text.set(textcheck.JSON("", body))
			r.Body = io.NopCloser(bytes.NewReader(body))
		default:
			w.Header().Set("Allow", "GET, POST, OPTIONS")
			refuseHTTP(w, http.StatusMethodNotAllowed, codeMethodNotAllowed,
				fmt.Sprintf("method %s is not supported: use POST (or GET for queries)", r.Method))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// postBodyShape returns what is wrong with a POST body, or "" when it is one GraphQL request.
func postBodyShape(body []byte) string {
	if !json.Valid(body) {
		return "request body is not valid JSON"
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil || fields == nil {
		return `request body must be one JSON object {"query": …, "variables": {…}}; batches (arrays) and bare values are not supported`
	}
	for _, f := range []struct{ name, want string }{
		{"query", "string"}, {"operationName", "string"}, {"variables", "object"}, {"extensions", "object"},
	} {
		raw, ok := fields[f.name]
		if !ok || string(raw) == "null" {
			continue
		}
		if kind := jsonKind(raw); kind != f.want {
			return fmt.Sprintf("request body field %q must be a JSON %s, not %s", f.name, f.want, kind)
		}
	}
	return ""
}

// jsonKind names the kind of a valid JSON value.
func jsonKind(raw json.RawMessage) string {
	switch raw = bytes.TrimSpace(raw); {
	case len(raw) == 0:
		return "nothing"
	case raw[0] == '"':
		return "string"
	case raw[0] == '{':
		return "object"
	case raw[0] == '[':
		return "array"
	case raw[0] == 't' || raw[0] == 'f':
		return "boolean"
	case raw[0] == 'n':
		return "null"
	}
	return "number"
}

// checkGET refuses GET parameters gqlgen would refuse without a code, and GETs of anything but
// a query; it records textcheck's findings in text. It reports whether the request goes on.
func checkGET(w http.ResponseWriter, r *http.Request, text *inputText) bool {
	params, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		refuseHTTP(w, http.StatusBadRequest, codeBadRequest, "the URL query string does not decode")
		return false
	}
	for _, name := range []string{"variables", "extensions"} {
		v := params.Get(name)
		if v == "" {
			continue
		}
		if !json.Valid([]byte(v)) || jsonKind(json.RawMessage(v)) != "object" {
			refuseHTTP(w, http.StatusBadRequest, codeBadRequest, fmt.Sprintf("the %s parameter must be a JSON object", name))
			return false
		}
		if p := textcheck.JSON(name, []byte(v)); p != nil && text.get() == nil {
			text.set(p)
		}
	}
	for _, name := range []string{"query", "operationName"} {
		if reason := textcheck.String(params.Get(name)); reason != "" && text.get() == nil {
			text.set(&textcheck.Problem{Path: name, Reason: reason})
		}
	}
	// Only queries may be sent by GET (a GET must not change anything). A query that does not
	// parse is left to gqlgen, which answers 422 GRAPHQL_PARSE_FAILED.
	if q := params.Get("query"); q != "" {
		if doc, err := parser.ParseQuery(&ast.Source{Input: q}); err == nil {
			if op := doc.Operations.ForName(params.Get("operationName")); op != nil && op.Operation != ast.Query {
				w.Header().Set("Allow", "POST")
				refuseHTTP(w, http.StatusMethodNotAllowed, codeMethodNotAllowed,
					fmt.Sprintf("a %s cannot be sent by GET: use POST", op.Operation))
				return false
			}
		}
	}
	return true
}

// refuseHTTP writes a GraphQL error response with extensions.code and the request id.
func refuseHTTP(w http.ResponseWriter, status int, code, msg string) {
	auth.WriteRefusal(w, status, auth.Code(code), msg)
}

// subscriptionTransport refuses subscriptions that do not come over a websocket: over POST a
// subscription would hold the request until its first event, which may never come.
type subscriptionTransport struct{}

var _ interface {
	graphql.HandlerExtension
	graphql.OperationContextMutator
} = subscriptionTransport{}

func (subscriptionTransport) ExtensionName() string                   { return "SubscriptionTransport" }
func (subscriptionTransport) Validate(graphql.ExecutableSchema) error { return nil }

func (subscriptionTransport) MutateOperationContext(ctx context.Context, op *graphql.OperationContext) *gqlerror.Error {
	t, _ := ctx.Value(inputTextKey{}).(*inputText)
	if t == nil || t.websocket || op.Operation == nil || op.Operation.Operation != ast.Subscription {
		return nil
	}
	err := gqlerror.Errorf("subscriptions are served over websockets only (graphql-transport-ws or graphql-ws at this URL)")
	errcode.Set(err, codeBadRequest)
	return err
}
