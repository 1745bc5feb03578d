// Package httpserver runs the service's HTTP endpoints: liveness (/healthz), readiness
// (/readyz, which fails while the database is unreachable) and whatever API handlers are
// mounted. It starts and stops with a context and shuts down within a deadline. With tracing on
// (internal/tracing), every request gets its id and a server span before any handler runs.
package httpserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"gorm.io/gorm"

	"github.com/taskerhq/tasker/internal/tracing"
)

// Server is the HTTP front of the process.
type Server struct {
	Mux      *http.ServeMux
	db       *gorm.DB
	log      *slog.Logger
	listener net.Listener
	srv      *http.Server
}

// New builds a server listening on addr with health endpoints backed by db.
func New(addr string, db *gorm.DB, log *slog.Logger) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", addr, err)
	}
	s := &Server{Mux: http.NewServeMux(), db: db, log: log, listener: ln}
	s.Mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ok"}` + "\n"))
	})
	s.Mux.HandleFunc("GET /readyz", s.ready)
	s.srv = &http.Server{Handler: tracing.HTTP(s.Mux), ReadHeaderTimeout: 10 * time.Second}
	return s, nil
}

// Addr is the address the server listens on (useful with port 0).
func (s *Server) Addr() string { return s.listener.Addr().String() }

func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	w.Header().Set("Content-Type", "application/json")
	if err := ping(ctx, s.db); err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(`{"status":"unavailable","reason":"database unreachable"}` + "\n"))
		return
	}
	_, _ = w.Write([]byte(`{"status":"ready"}` + "\n"))
}

// Serve serves until ctx ends, then shuts down gracefully within timeout.
func (s *Server) Serve(ctx context.Context, timeout time.Duration) error {
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.listener) }()
	s.log.Info("http: listening", "addr", s.Addr())
	select {
	case err := <-errc:
		return fmt.Errorf("http server: %w", err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	err := s.srv.Shutdown(shutdownCtx)
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("http shutdown: %w", err)
	}
	s.log.Info("http: stopped", "took", time.Since(start))
	return nil
}

// ping checks that the database answers, through the pool under the handle.
func ping(ctx context.Context, db *gorm.DB) error {
	pool, err := db.DB()
	if err != nil {
		return err
	}
	return pool.PingContext(ctx)
}
