package auth_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/taskerhq/tasker/internal/auth"
	"github.com/taskerhq/tasker/internal/errs"
	"github.com/taskerhq/tasker/internal/testkit/dbtest"
)

func newStore(t *testing.T) *auth.Store {
	t.Helper()
	return auth.NewStore(dbtest.New(t))
}

func TestStoreCreateAuthenticateRevoke(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	tok, secret, err := s.Create(ctx, auth.Operator, "ci")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(secret, auth.TokenPrefix) || len(secret) < 40 || !strings.HasPrefix(secret, tok.Prefix) {
		t.Fatalf("secret %q (prefix %q) is not a prefixed high-entropy token", secret, tok.Prefix)
	}
	p, err := s.Authenticate(ctx, secret)
	if err != nil {
		t.Fatal(err)
	}
	if p.TokenID != tok.ID || p.Name != "ci" || p.Role != auth.Operator {
		t.Fatalf("principal %+v, want id %d name ci role operator", p, tok.ID)
	}
	for _, bad := range []string{"", "tkr_", secret + "x", secret[:len(secret)-1], "Bearer " + secret, strings.ToUpper(secret)} {
		if _, err := s.Authenticate(ctx, bad); !errors.Is(err, auth.ErrInvalidToken) {
			t.Errorf("Authenticate(%q) = %v, want ErrInvalidToken", bad, err)
		}
	}
	revoked, err := s.Revoke(ctx, tok.Prefix)
	if err != nil {
		t.Fatal(err)
	}
	if revoked.ID != tok.ID || revoked.RevokedAt == nil {
		t.Fatalf("revoked %+v, want token %d with revoked_at", revoked, tok.ID)
	}
	if _, err := s.Authenticate(ctx, secret); !errors.Is(err, auth.ErrInvalidToken) {
		t.Fatalf("revoked token authenticated: %v", err)
	}
	if _, err := s.Revoke(ctx, tok.Prefix); !errs.Is(err, errs.NotFound) {
		t.Fatalf("revoking twice: %v, want ErrNotFound", err)
	}
	list, err := s.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].RevokedAt == nil || list[0].Role != auth.Operator {
		t.Fatalf("list %+v, want the one revoked token", list)
	}
}

func TestStoreRevokeByIDTokenAndRefusals(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStore(t)
	a, secretA, err := s.Create(ctx, auth.Reader, "a")
	if err != nil {
		t.Fatal(err)
	}
	b, secretB, err := s.Create(ctx, auth.Admin, "b")
	if err != nil {
		t.Fatal(err)
	}
	for _, ref := range []string{"", "tkr", "abc", "tkr_", "99999999999999999999999"} {
		if _, err := s.Revoke(ctx, ref); err == nil {
			t.Errorf("Revoke(%q) succeeded", ref)
		}
	}
	// A prefix of "tkr_" plus 4 characters is long enough; this one matches no token.
	if _, err := s.Revoke(ctx, "tkr_!!!!"); !errs.Is(err, errs.NotFound) {
		t.Errorf("Revoke of an unknown prefix succeeded")
	}
	if _, err := s.Revoke(ctx, "12345"); !errs.Is(err, errs.NotFound) {
		t.Errorf("Revoke of an unknown id: %v, want ErrNotFound", err)
	}
	if got, err := s.Revoke(ctx, secretB); err != nil || got.ID != b.ID {
		t.Fatalf("Revoke by full token = %+v, %v; want token %d", got, err, b.ID)
	}
	if got, err := s.Revoke(ctx, " "+strconv.FormatInt(a.ID, 10)+" "); err != nil || got.ID != a.ID {
		t.Fatalf("Revoke by id = %+v, %v; want token %d", got, err, a.ID)
	}
	for _, secret := range []string{secretA, secretB} {
		if _, err := s.Authenticate(ctx, secret); !errors.Is(err, auth.ErrInvalidToken) {
			t.Errorf("revoked token still authenticates: %v", err)
		}
	}
	if _, _, err := s.Create(ctx, auth.Role("root"), ""); err == nil {
		t.Error("Create with an unknown role succeeded")
	}
	if _, _, err := s.Create(ctx, auth.Reader, strings.Repeat("n", 129)); err == nil {
		t.Error("Create with a 129-byte name succeeded")
	}
	// Text PostgreSQL cannot store is refused with a message, not a database error.
	for _, name := range []string{"a\x00b", "bad\xff"} {
		if _, _, err := s.Create(ctx, auth.Reader, name); err == nil || strings.Contains(err.Error(), "SQLSTATE") {
			t.Errorf("Create with name %q: %v, want a refusal naming the problem", name, err)
		}
	}
	if _, err := s.Revoke(ctx, "tkr_\xff\xfe\xfd\xfc"); err == nil || strings.Contains(err.Error(), "SQLSTATE") {
		t.Errorf("Revoke of invalid UTF-8: %v, want a refusal naming the problem", err)
	}
}

func TestDecideMode(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		setup   auth.Setup
		want    auth.Mode
		warning bool
		err     bool
	}{
		{"embedded loopback runs open with a warning", auth.Setup{Embedded: true, Listen: "127.0.0.1:8080"}, auth.Off, true, false},
		{"embedded localhost runs open", auth.Setup{Embedded: true, Listen: "localhost:8080"}, auth.Off, true, false},
		{"embedded ipv6 loopback runs open", auth.Setup{Embedded: true, Listen: "[::1]:8080"}, auth.Off, true, false},
		{"embedded on every interface requires tokens", auth.Setup{Embedded: true, Listen: ":8080"}, auth.Required, false, false},
		{"embedded on a public address requires tokens", auth.Setup{Embedded: true, Listen: "0.0.0.0:8080"}, auth.Required, false, false},
		{"DATABASE_URL never starts open by default", auth.Setup{Listen: "127.0.0.1:8080"}, auth.Required, false, false},
		{"DATABASE_URL with TASKER_AUTH=off runs open with a warning", auth.Setup{Listen: "0.0.0.0:8080", Env: "off"}, auth.Off, true, false},
		{"TASKER_AUTH=on closes the embedded default", auth.Setup{Embedded: true, Listen: "127.0.0.1:8080", Env: "on"}, auth.Required, false, false},
		{"an unknown TASKER_AUTH is refused", auth.Setup{Env: "maybe"}, auth.Required, false, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d, err := auth.DecideMode(c.setup)
			if c.err {
				if err == nil || !strings.Contains(err.Error(), "TASKER_AUTH") {
					t.Fatalf("err = %v, want an error naming TASKER_AUTH", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d.Mode != c.want || (d.Warning != "") != c.warning {
				t.Fatalf("decision %+v, want mode %v warning %v", d, c.want, c.warning)
			}
		})
	}
}

func TestPolicyDefaults(t *testing.T) {
	t.Parallel()
	p := auth.DefaultPolicy()
	for _, c := range []struct {
		typ, field string
		want       auth.Role
	}{
		{"Query", "tasks", auth.Reader},
		{"Subscription", "stepChanged", auth.Reader},
		{"Mutation", "createTask", auth.Operator},
		{"Mutation", "createTasks", auth.Operator},
		{"Mutation", "retryStep", auth.Operator},
		{"Mutation", "somethingNew", auth.Admin},
	} {
		if got := p.Required(c.typ, c.field); got != c.want {
			t.Errorf("%s.%s needs %s, want %s", c.typ, c.field, got, c.want)
		}
	}
	if !auth.Admin.Allows(auth.Operator) || auth.Reader.Allows(auth.Operator) || auth.Role("x").Allows(auth.Reader) {
		t.Error("role order is wrong")
	}
}
