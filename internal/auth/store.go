package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"gorm.io/gorm"

	"github.com/taskerhq/tasker/internal/errs"
	"github.com/taskerhq/tasker/internal/store"
	"github.com/taskerhq/tasker/internal/textcheck"
)

// TokenPrefix starts every API token, so that a leaked one is recognisable.
const TokenPrefix = "tkr_"

// prefixLen is how many leading characters of a token are stored in clear to name it.
const prefixLen = len(TokenPrefix) + 8

// minRevokePrefix is the shortest prefix accepted by Revoke: short enough to type, long
// enough not to match tokens by accident.
const minRevokePrefix = len(TokenPrefix) + 4

// ErrInvalidToken is returned by Authenticate for a token that is unknown, malformed or
// revoked. It is not a domain error kind: the guard answers it with UNAUTHENTICATED.
var ErrInvalidToken = errors.New("invalid or revoked API token")

// Token describes a stored API token (never the token itself).
type Token struct {
	ID        int64
	Name      string
	Role      Role
	Prefix    string
	CreatedAt time.Time
	RevokedAt *time.Time
}

// Store keeps API tokens in tasker_api_tokens. It holds no cache: every Authenticate reads
// the table, so a revocation applies to the next request in every process.
type Store struct{ st *store.Store }

// NewStore returns a token store over db.
func NewStore(db *gorm.DB) *Store { return &Store{st: store.New(db)} }

func hashToken(secret string) []byte {
	sum := sha256.Sum256([]byte(secret))
	return sum[:]
}

// Create stores a new token of role and returns it with its secret, which is shown only here.
// The secret is TokenPrefix followed by 256 random bits in unpadded base64url. A role, or a
// name, that is refused is an errs.Invalid error.
func (s *Store) Create(ctx context.Context, role Role, name string) (Token, string, error) {
	if role.rank() == 0 {
		return Token{}, "", errs.E(errs.Invalid, "creating API token: unknown role %q", role)
	}
	if len(name) > 128 {
		return Token{}, "", errs.E(errs.Invalid, "creating API token: name is %d bytes, the limit is 128", len(name))
	}
	if reason := textcheck.String(name); reason != "" {
		return Token{}, "", errs.E(errs.Invalid, "creating API token: the name %s", reason)
	}
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return Token{}, "", fmt.Errorf("creating API token: reading random bytes: %w", err)
	}
	secret := TokenPrefix + base64.RawURLEncoding.EncodeToString(b[:])
	t := Token{Name: name, Role: role, Prefix: secret[:prefixLen]}
	var err error
	t.ID, t.CreatedAt, err = s.st.CreateAPIToken(ctx, name, string(role), t.Prefix, hashToken(secret))
	if err != nil {
		return Token{}, "", fmt.Errorf("creating API token: %w", err)
	}
	return t, secret, nil
}

// Authenticate returns the principal of an active token, ErrInvalidToken for any other
// token, or an error when the store could not be read.
func (s *Store) Authenticate(ctx context.Context, secret string) (Principal, error) {
	if !strings.HasPrefix(secret, TokenPrefix) || len(secret) > 128 {
		return Principal{}, ErrInvalidToken
	}
	id, name, role, found, err := s.st.ActiveAPITokenByHash(ctx, hashToken(secret))
	if err != nil {
		return Principal{}, fmt.Errorf("looking up API token: %w", err)
	}
	if !found {
		return Principal{}, ErrInvalidToken
	}
	return Principal{TokenID: id, Name: name, Role: Role(role)}, nil
}

// Active reports whether the token with this id exists and is not revoked: what a long-lived
// connection asks before each operation and when told of a revocation.
func (s *Store) Active(ctx context.Context, id int64) (bool, error) {
	active, err := s.st.APITokenActive(ctx, id)
	if err != nil {
		return false, fmt.Errorf("checking API token %d: %w", id, err)
	}
	return active, nil
}

// Revoke revokes the one active token named by ref: its id (digits), the token itself, or a
// prefix of it at least 8 characters long. A prefix matching several active tokens is refused
// and revokes nothing. No active token matching is an errs.NotFound error; a reference that
// cannot name a token, or names several, is errs.Invalid.
func (s *Store) Revoke(ctx context.Context, ref string) (Token, error) {
	ref = strings.TrimSpace(ref)
	var ids []int64
	var err error
	switch {
	case ref == "":
		return Token{}, errs.E(errs.Invalid, "revoking API token: give its id or a prefix of the token")
	case textcheck.String(ref) != "":
		return Token{}, errs.E(errs.Invalid, "revoking API token: the reference %s", textcheck.String(ref))
	case isDigits(ref):
		id, perr := strconv.ParseInt(ref, 10, 64)
		if perr != nil {
			return Token{}, errs.E(errs.Invalid, "revoking API token: id %q is out of range", ref)
		}
		ids, err = s.st.ActiveAPITokenIDsByID(ctx, id)
	case len(ref) > prefixLen:
		ids, err = s.st.ActiveAPITokenIDsByHash(ctx, hashToken(ref))
	case len(ref) < minRevokePrefix || !strings.HasPrefix(ref, TokenPrefix):
		return Token{}, errs.E(errs.Invalid, "revoking API token: %q is neither an id nor a token prefix of at least %d characters starting %q",
			ref, minRevokePrefix, TokenPrefix)
	default:
		ids, err = s.st.ActiveAPITokenIDsByPrefix(ctx, ref)
	}
	if err != nil {
		return Token{}, fmt.Errorf("revoking API token: %w", err)
	}
	switch len(ids) {
	case 0:
		return Token{}, notFound(ref)
	case 1:
	default:
		return Token{}, errs.E(errs.Invalid, "revoking API token: prefix %q matches %d active tokens; give more of it or the id", ref, len(ids))
	}
	row, found, err := s.st.RevokeAPIToken(ctx, ids[0])
	if err != nil {
		return Token{}, fmt.Errorf("revoking API token: %w", err)
	}
	if !found {
		return Token{}, notFound(ref)
	}
	return token(row), nil
}

// notFound is the error of a revocation that matched no active token.
func notFound(ref string) error {
	return errs.E(errs.NotFound, "revoking API token %q: no such active API token", ref)
}

func token(r store.APIToken) Token {
	return Token{ID: r.ID, Name: r.Name, Role: Role(r.Role), Prefix: r.Prefix, CreatedAt: r.CreatedAt, RevokedAt: r.RevokedAt}
}

// List returns every token, active and revoked, oldest first.
func (s *Store) List(ctx context.Context) ([]Token, error) {
	rows, err := s.st.APITokens(ctx)
	if err != nil {
		return nil, fmt.Errorf("listing API tokens: %w", err)
	}
	var out []Token
	for _, r := range rows {
		out = append(out, token(r))
	}
	return out, nil
}

func isDigits(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return s != ""
}
