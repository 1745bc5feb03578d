package app

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"

	"github.com/taskerhq/tasker/internal/auth"
	"github.com/taskerhq/tasker/internal/config"
)

// With DATABASE_URL, serve requires API tokens and says so, mounts the GraphQL API at /query
// (GET and POST) and the playground at /, and exposes /metrics.
func TestServeWithDatabaseURLRequiresTokens(t *testing.T) {
	t.Parallel()
	s, _, token := startServeWithToken(t, auth.Reader)
	if !strings.Contains(s.log.String(), "authentication=required") {
		t.Fatalf("serve did not log that authentication is required:\n%s", s.log.String())
	}

	query := "http://" + s.addr + "/query?query=%7B%20namespaces%20%7B%20name%20%7D%20%7D"
	if code, body := get(t, query, ""); code != http.StatusUnauthorized || !strings.Contains(body, `"UNAUTHENTICATED"`) {
		t.Fatalf("GET /query without a token: %d %s, want 401 UNAUTHENTICATED", code, body)
	}
	if code, body := get(t, query, token); code != http.StatusOK || !strings.Contains(body, `"default"`) {
		t.Fatalf("GET /query with a token: %d %s", code, body)
	}
	resp, posted := postQuery(t, s.addr, `{ namespaces { name } }`, "Authorization", "Bearer "+token)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(string(posted), `{"data":{"namespaces":[{"name":"default"}`) {
		t.Fatalf("POST /query: %d %s", resp.StatusCode, posted)
	}
	if code, page := get(t, "http://"+s.addr+"/", ""); code != http.StatusOK || !strings.Contains(page, "GraphiQL") {
		t.Fatalf("GET /: %d, page without GraphiQL", code)
	}
	code, body := get(t, "http://"+s.addr+"/metrics", "")
	for _, family := range []string{"tasker_graphql_requests_total", "tasker_graphql_sql_statements", "tasker_http_requests_total",
		"tasker_ready_steps", "tasker_read_model_stale_seconds", "tasker_subscribers", "go_sql_open_connections"} {
		if code != http.StatusOK || !strings.Contains(body, family) {
			t.Errorf("/metrics (%d) lacks %s", code, family)
		}
	}

	s.stop(t, syscall.SIGINT)
}

// The startup rule as serve applies it: the embedded default on loopback runs open and logs a
// warning; DATABASE_URL never starts open unless TASKER_AUTH=off; an unknown value refuses.
func TestServeAuthDecision(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		cfg   config.Config
		want  auth.Mode
		warns bool
	}{
		{"embedded loopback", config.Config{Listen: "127.0.0.1:8080"}, auth.Off, true},
		{"embedded on every interface", config.Config{Listen: "0.0.0.0:8080"}, auth.Required, false},
		{"DATABASE_URL", config.Config{DatabaseURL: "postgres://db/x", Listen: "127.0.0.1:8080"}, auth.Required, false},
		{"DATABASE_URL with TASKER_AUTH=off", config.Config{DatabaseURL: "postgres://db/x", Listen: "0.0.0.0:8080", Auth: "off"}, auth.Off, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var logs strings.Builder
			d, err := decideAuth(c.cfg, slog.New(slog.NewTextHandler(&logs, nil)))
			if err != nil {
				t.Fatal(err)
			}
			if d.Mode != c.want || strings.Contains(logs.String(), "authentication is OFF") != c.warns {
				t.Fatalf("mode %v, log %q; want mode %v, warning %v", d.Mode, logs.String(), c.want, c.warns)
			}
		})
	}
	if _, err := decideAuth(config.Config{Listen: "127.0.0.1:8080", Auth: "sometimes"}, slog.New(slog.DiscardHandler)); err == nil ||
		!strings.Contains(err.Error(), "TASKER_AUTH") {
		t.Fatalf("TASKER_AUTH=sometimes: %v, want an error naming TASKER_AUTH", err)
	}
}

// In open mode there is no rate limit unless TASKER_RATE_LIMIT is set; with authentication
// required the default limit applies. Checked through the guard of a real HTTP server.
func TestOpenModeHasNoRateLimitUnlessSet(t *testing.T) {
	t.Parallel()
	refused := func(t *testing.T, mode auth.Mode, env map[string]string) int {
		t.Helper()
		cfg, err := config.Read(func(k string) string { return env[k] })
		if err != nil {
			t.Fatal(err)
		}
		limits := apiLimits(mode, cfg)
		guard, err := auth.NewGuard(auth.Off, nil, limits, nil, nil) // every request is the anonymous admin
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(guard.HTTP(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {})))
		defer srv.Close()
		n := 0
		for range 300 {
			if code, _ := get(t, srv.URL, ""); code == http.StatusTooManyRequests {
				n++
			}
		}
		return n
	}
	if n := refused(t, auth.Off, nil); n != 0 {
		t.Errorf("open mode, TASKER_RATE_LIMIT unset: %d of 300 requests refused, want none", n)
	}
	if n := refused(t, auth.Off, map[string]string{"TASKER_RATE_LIMIT": "5"}); n == 0 {
		t.Error("open mode, TASKER_RATE_LIMIT=5: no request refused, want the limit applied")
	}
	if n := refused(t, auth.Required, nil); n == 0 {
		t.Error("authentication required, TASKER_RATE_LIMIT unset: no request refused, want the default limit (50/s, burst 100)")
	}
}
