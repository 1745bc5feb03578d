package tracing

import (
	"net/http"
	"strings"

	"github.com/taskerhq/tasker/internal/requestid"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
)

// HTTP returns next traced, or next itself while tracing is off. Each request first gets its
// id (see the package comment): the request's X-Request-Id header is set to it, so that the
// middlewares inside reuse it, it is echoed in the X-Request-Id response header, and it is on
// the request's context for the span processor. Then a server span named after the method and
// the route is started, continuing a trace the client propagated with a traceparent header.
// When next is a *http.ServeMux the route is its matching pattern; a path no pattern matches is
// not put in the name.
func HTTP(next http.Handler) http.Handler {
	if !Enabled() {
		return next
	}
	traced := otelhttp.NewHandler(next, "http", otelhttp.WithSpanNameFormatter(routeNamer(next)))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := requestid.Ensure(w, r)
		traced.ServeHTTP(w, r.WithContext(WithRequestID(r.Context(), id)))
	})
}

// routeNamer names a request's span "METHOD route".
func routeNamer(next http.Handler) func(string, *http.Request) string {
	mux, _ := next.(*http.ServeMux)
	return func(_ string, r *http.Request) string {
		if mux == nil {
			return r.Method
		}
		_, pattern := mux.Handler(r)
		if pattern == "" {
			return r.Method
		}
		if _, path, ok := strings.Cut(pattern, " "); ok { // "GET /healthz"
			pattern = path
		}
		return r.Method + " " + pattern
	}
}
