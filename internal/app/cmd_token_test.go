package app

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/taskerhq/tasker/internal/auth"
	"github.com/taskerhq/tasker/internal/config"
	"github.com/taskerhq/tasker/internal/testkit/dbtest"
)

func tokenCmd(t *testing.T, url string, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	err := runToken(context.Background(), config.Config{DatabaseURL: url, ShutdownTimeout: 10 * time.Second}, args, &out,
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	return out.String(), err
}

func TestTokenCommand(t *testing.T) {
	t.Parallel()
	url := dbtest.NewURL(t)
	out, err := tokenCmd(t, url, "create", "--role", "operator", "--name", "deploy-bot")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	secret := lines[len(lines)-1]
	if !strings.HasPrefix(secret, auth.TokenPrefix) || strings.Contains(secret, " ") {
		t.Fatalf("last line %q is not the token alone", secret)
	}
	store := auth.NewStore(dbtest.Open(t, url))
	p, err := store.Authenticate(context.Background(), secret)
	if err != nil || p.Role != auth.Operator || p.Name != "deploy-bot" {
		t.Fatalf("created token authenticates as %+v, %v", p, err)
	}

	out, err = tokenCmd(t, url, "list")
	if err != nil || !strings.Contains(out, "deploy-bot") || !strings.Contains(out, "operator") || strings.Contains(out, secret) {
		t.Fatalf("list printed %q (%v): want the token's name and role, never the token", out, err)
	}
	if out, err = tokenCmd(t, url, "revoke", secret[:12]); err != nil || !strings.Contains(out, "revoked API token") {
		t.Fatalf("revoke printed %q, %v", out, err)
	}
	if _, err := store.Authenticate(context.Background(), secret); err == nil {
		t.Fatal("a revoked token still authenticates")
	}

	for _, bad := range [][]string{
		{},
		{"create"},
		{"create", "--role", "root"},
		{"revoke"},
		{"revoke", "a", "b"},
		{"list", "extra"},
		{"rotate"},
	} {
		if _, err := tokenCmd(t, url, bad...); err == nil {
			t.Errorf("token %q succeeded", bad)
		}
	}
}
