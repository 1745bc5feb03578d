package server

import (
	"bytes"
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"strings"
	"sync"

	"github.com/99designs/gqlgen/graphql"
	"github.com/99designs/gqlgen/graphql/errcode"
	"github.com/vektah/gqlparser/v2/gqlerror"
)

// Media types of a POST response.
const (
	mediaJSON            = "application/json"
	mediaGraphQLResponse = "application/graphql-response+json"
)

// postTransport serves POST requests with a JSON body the way gqlgen's transport.POST does
// (the same Content-Type negotiation from Accept, the same status codes, the same errors), but
// writes each response without encoding its data again: gqlgen's executor already produced
// data as compact JSON, and transport.POST's json.Marshal of the response validates and
// compacts it a second time, a pass over every byte of every answer. Only the small parts of
// a response (errors, extensions) go through encoding/json.
type postTransport struct{}

var _ graphql.Transport = postTransport{}

// Supports admits what transport.POST admits: a POST (not an upgrade) of application/json.
func (postTransport) Supports(r *http.Request) bool {
	if r.Header.Get("Upgrade") != "" || r.Method != http.MethodPost {
		return false
	}
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return err == nil && mt == mediaJSON
}

var rawParamsPool = sync.Pool{New: func() any { return new(graphql.RawParams) }}

// Do runs one operation. Protocol errors (a body that does not decode, an operation that does
// not parse or validate) answer 422 under application/json and 400 under
// application/graphql-response+json, as in transport.POST.
func (postTransport) Do(w http.ResponseWriter, r *http.Request, exec graphql.GraphExecutor) {
	ctx := r.Context()
	contentType := responseContentType(r)
	w.Header().Set("Content-Type", contentType)

	params := rawParamsPool.Get().(*graphql.RawParams)
	defer func() {
		*params = graphql.RawParams{}
		rawParamsPool.Put(params)
	}()
	start := graphql.Now()
	body, err := io.ReadAll(r.Body)
	if err != nil {
		writeResponse(w, exec.DispatchError(ctx, gqlerror.List{gqlerror.Errorf("could not read request body: %+v", err)}))
		return
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(params); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		writeResponse(w, exec.DispatchError(ctx, gqlerror.List{gqlerror.Errorf(
			"json request body could not be decoded: %+v body:%s", err, body)}))
		return
	}
	params.Headers = r.Header
	params.ReadTime = graphql.TraceTiming{Start: start, End: graphql.Now()}

	rc, opErr := exec.CreateOperationContext(ctx, params)
	if opErr != nil {
		w.WriteHeader(protocolStatus(opErr, contentType))
		writeResponse(w, exec.DispatchError(graphql.WithOperationContext(ctx, rc), opErr))
		return
	}
	responses, ctx := exec.DispatchOperation(ctx, rc)
	writeResponse(w, responses(ctx))
}

// responseContentType picks the response's media type from the request's Accept header as
// transport.POST does by default: application/json when Accept is empty, names it first among
// the JSON types, or accepts anything (*/* or application/*); application/graphql-response+json
// when it names that first, or names neither.
func responseContentType(r *http.Request) string {
	accept := r.Header.Get("Accept")
	if accept == "" {
		return mediaJSON
	}
	for part := range strings.SplitSeq(accept, ",") {
		mt, _, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil {
			continue
		}
		switch mt {
		case "*/*", "application/*", mediaJSON:
			return mediaJSON
		case mediaGraphQLResponse:
			return mediaGraphQLResponse
		}
	}
	return mediaGraphQLResponse
}

// protocolStatus is the status of a response refusing the operation with errs: 200 unless
// they are protocol errors (parse or validation), which answer 422, or 400 under
// application/graphql-response+json (GraphQL over HTTP).
func protocolStatus(errs gqlerror.List, contentType string) int {
	if errcode.GetErrorKind(errs) != errcode.KindProtocol {
		return http.StatusOK
	}
	if contentType == mediaGraphQLResponse {
		return http.StatusBadRequest
	}
	return http.StatusUnprocessableEntity
}

// writeResponse writes resp as encoding/json would marshal graphql.Response (the same members
// in the same order, the same ones omitted when empty), except that resp.Data, JSON the
// executor wrote, is copied as it is rather than validated and compacted again. A nil resp is
// written as null.
func writeResponse(w io.Writer, resp *graphql.Response) {
	if resp == nil {
		_, _ = w.Write([]byte("null"))
		return
	}
	buf := bytes.NewBuffer(make([]byte, 0, len(resp.Data)+64))
	buf.WriteByte('{')
	if len(resp.Errors) > 0 {
		buf.WriteString(`"errors":`)
		marshalInto(buf, resp.Errors)
		buf.WriteByte(',')
	}
	buf.WriteString(`"data":`)
	if len(resp.Data) == 0 {
		buf.WriteString("null")
	} else {
		buf.Write(resp.Data)
	}
	if resp.Label != "" {
		buf.WriteString(`,"label":`)
		marshalInto(buf, resp.Label)
	}
	if len(resp.Path) > 0 {
		buf.WriteString(`,"path":`)
		marshalInto(buf, resp.Path)
	}
	if resp.HasNext != nil {
		buf.WriteString(`,"hasNext":`)
		marshalInto(buf, *resp.HasNext)
	}
	if len(resp.Extensions) > 0 {
		buf.WriteString(`,"extensions":`)
		marshalInto(buf, resp.Extensions)
	}
	buf.WriteByte('}')
	_, _ = w.Write(buf.Bytes())
}

// marshalInto appends v's JSON to buf. A value that cannot be encoded is a bug of the server
// (errors and extensions are built here), so it panics as transport.POST does.
func marshalInto(buf *bytes.Buffer, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		panic("graphql response: " + err.Error())
	}
	buf.Write(b)
}
