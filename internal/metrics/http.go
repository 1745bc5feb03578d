package metrics

import (
	"bufio"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/taskerhq/tasker/internal/requestid"
)

type requestIDKey struct{}

// RequestID returns the request id of ctx ("" outside an instrumented request).
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

// Middleware instruments next as handler name: it gives the request an id (the client's
// X-Request-Id when it is 1–64 characters of [A-Za-z0-9._-], else a random one), echoes it in
// the X-Request-Id response header and sets it on the request so that inner handlers reuse it,
// counts the request by status, times it, and logs it with the id at Info (Debug for health
// and metrics probes).
func (m *Metrics) Middleware(name string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		began := time.Now()
		id := requestid.Ensure(w, r)
		sw := &statusWriter{ResponseWriter: w}
		ctx := context.WithValue(r.Context(), requestIDKey{}, id)
		next.ServeHTTP(sw, r.WithContext(ctx))
		if sw.status == 0 {
			sw.status = http.StatusOK
		}
		took := time.Since(began)
		m.httpRequests.WithLabelValues(name, strconv.Itoa(sw.status)).Inc()
		m.httpDuration.WithLabelValues(name).Observe(took.Seconds())
		level := slog.LevelInfo
		if name == "health" || name == "metrics" {
			level = slog.LevelDebug
		}
		m.log.Log(ctx, level, "http: request", "request_id", id, "handler", name, "method", r.Method,
			"path", r.URL.Path, "status", sw.status, "bytes", sw.bytes, "took", took)
	})
}

// statusWriter records the status and size of a response. It passes Flush and Hijack through
// (streaming and websocket upgrades need them).
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	h, ok := w.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("response writer does not support hijacking")
	}
	if w.status == 0 {
		w.status = http.StatusSwitchingProtocols
	}
	return h.Hijack()
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
