package httpserver_test

import (
	"context"
	"database/sql"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver
	"gorm.io/driver/postgres"
	"gorm.io/gorm"

	"github.com/taskerhq/tasker/internal/httpserver"
	"github.com/taskerhq/tasker/internal/testkit/dbtest"
)

func serve(t *testing.T, db *gorm.DB) string {
	t.Helper()
	srv, err := httpserver.New("127.0.0.1:0", db, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, 5*time.Second) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return "http://" + srv.Addr()
}

func status(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// /readyz answers 200 while the database answers and 503 while it is unreachable; /healthz
// answers 200 either way.
func TestReadinessFollowsTheDatabase(t *testing.T) {
	t.Parallel()
	up := serve(t, dbtest.New(t))
	if code, body := status(t, up+"/readyz"); code != http.StatusOK || !strings.Contains(body, "ready") {
		t.Fatalf("/readyz with a reachable database: %d %s", code, body)
	}

	// Nothing listens on port 1: every connection attempt is refused.
	unreachable, err := sql.Open("pgx", "postgres://postgres@127.0.0.1:1/postgres?sslmode=disable&connect_timeout=1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unreachable.Close() })
	gdb, err := gorm.Open(postgres.New(postgres.Config{Conn: unreachable}), &gorm.Config{DisableAutomaticPing: true})
	if err != nil {
		t.Fatal(err)
	}
	down := serve(t, gdb)
	if code, body := status(t, down+"/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "database unreachable") {
		t.Fatalf("/readyz with an unreachable database: %d %s, want 503", code, body)
	}
	if code, _ := status(t, down+"/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz with an unreachable database: %d, want 200", code)
	}
}
