package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

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
// revoked.
var ErrInvalidToken = errors.New("invalid or revoked API token")

// ErrNotFound is wrapped by Revoke when no active token matches.
var ErrNotFound = errors.New("no such active API token")

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
type Store struct{ db *sql.DB }

// NewStore returns a store over db.
func NewStore(db *sql.DB) *Store { return &Store{db: db} }

func hashToken(secret string) []byte {
	sum := sha256.Sum256([]byte(secret))
	return sum[:]
}

// Create stores a new token of role and returns it with its secret, which is shown only here.
// The secret is TokenPrefix followed by 256 random bits in unpadded base64url.
func (s *Store) Create(ctx context.Context, role Role, name string) (Token, string, error) {
	if role.rank() == 0 {
		return Token{}, "", fmt.Errorf("creating API token: unknown role %q", role)
	}
	if len(name) > 128 {
		return Token{}, "", fmt.Errorf("creating API token: name is %d bytes, the limit is 128", len(name))
	}
	if reason := textcheck.String(name); reason != "" {
		return Token{}, "", fmt.Errorf("creating API token: the name %s", reason)
	}
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return Token{}, "", fmt.Errorf("creating API token: reading random bytes: %w", err)
	}
	secret := TokenPrefix + base64.RawURLEncoding.EncodeToString(b[:])
	t := Token{Name: name, Role: role, Prefix: secret[:prefixLen]}
	err := s.db.QueryRowContext(ctx, `INSERT INTO tasker_api_tokens (name, role, prefix, token_hash)
		VALUES ($1, $2, $3, $4) RETURNING api_token_id, created_at`,
		name, string(role), t.Prefix, hashToken(secret)).Scan(&t.ID, &t.CreatedAt)
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
	var p Principal
	var role string
	err := s.db.QueryRowContext(ctx, `SELECT api_token_id, name, role FROM tasker_api_tokens
		WHERE token_hash = $1 AND revoked_at IS NULL`, hashToken(secret)).Scan(&p.TokenID, &p.Name, &role)
	if errors.Is(err, sql.ErrNoRows) {
		return Principal{}, ErrInvalidToken
	}
	if err != nil {
		return Principal{}, fmt.Errorf("looking up API token: %w", err)
	}
	p.Role = Role(role)
	return p, nil
}

// Active reports whether the token with this id exists and is not revoked: what a long-lived
// connection asks before each operation and when told of a revocation.
func (s *Store) Active(ctx context.Context, id int64) (bool, error) {
	var active bool
	err := s.db.QueryRowContext(ctx, `SELECT revoked_at IS NULL FROM tasker_api_tokens WHERE api_token_id = $1`, id).Scan(&active)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("checking API token %d: %w", id, err)
	}
	return active, nil
}

// Revoke revokes the one active token named by ref: its id (digits), the token itself, or a
// prefix of it at least 8 characters long. A prefix matching several active tokens is refused
// and revokes nothing.
func (s *Store) Revoke(ctx context.Context, ref string) (Token, error) {
	ref = strings.TrimSpace(ref)
	var rows *sql.Rows
	var err error
	switch {
	case ref == "":
		return Token{}, errors.New("revoking API token: give its id or a prefix of the token")
	case textcheck.String(ref) != "":
		return Token{}, fmt.Errorf("revoking API token: the reference %s", textcheck.String(ref))
	case isDigits(ref):
		id, perr := strconv.ParseInt(ref, 10, 64)
		if perr != nil {
			return Token{}, fmt.Errorf("revoking API token: id %q is out of range", ref)
		}
		rows, err = s.db.QueryContext(ctx, `SELECT api_token_id FROM tasker_api_tokens
			WHERE api_token_id = $1 AND revoked_at IS NULL`, id)
	case len(ref) > prefixLen:
		rows, err = s.db.QueryContext(ctx, `SELECT api_token_id FROM tasker_api_tokens
			WHERE token_hash = $1 AND revoked_at IS NULL`, hashToken(ref))
	case len(ref) < minRevokePrefix || !strings.HasPrefix(ref, TokenPrefix):
		return Token{}, fmt.Errorf("revoking API token: %q is neither an id nor a token prefix of at least %d characters starting %q",
			ref, minRevokePrefix, TokenPrefix)
	default:
		rows, err = s.db.QueryContext(ctx, `SELECT api_token_id FROM tasker_api_tokens
			WHERE prefix LIKE $1 || '%' AND revoked_at IS NULL`, ref)
	}
	if err != nil {
		return Token{}, fmt.Errorf("revoking API token: %w", err)
	}
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return Token{}, fmt.Errorf("revoking API token: %w", err)
		}
		ids = append(ids, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return Token{}, fmt.Errorf("revoking API token: %w", err)
	}
	switch len(ids) {
	case 0:
		return Token{}, fmt.Errorf("revoking API token %q: %w", ref, ErrNotFound)
	case 1:
	default:
		return Token{}, fmt.Errorf("revoking API token: prefix %q matches %d active tokens; give more of it or the id", ref, len(ids))
	}
	var t Token
	var role string
	err = s.db.QueryRowContext(ctx, `UPDATE tasker_api_tokens SET revoked_at = now()
		WHERE api_token_id = $1 AND revoked_at IS NULL
		RETURNING api_token_id, name, role, prefix, created_at, revoked_at`, ids[0]).
		Scan(&t.ID, &t.Name, &role, &t.Prefix, &t.CreatedAt, &t.RevokedAt)
	if errors.Is(err, sql.ErrNoRows) {
		return Token{}, fmt.Errorf("revoking API token %q: %w", ref, ErrNotFound)
	}
	if err != nil {
		return Token{}, fmt.Errorf("revoking API token: %w", err)
	}
	t.Role = Role(role)
	return t, nil
}

// List returns every token, active and revoked, oldest first.
func (s *Store) List(ctx context.Context) ([]Token, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT api_token_id, name, role, prefix, created_at, revoked_at
		FROM tasker_api_tokens ORDER BY api_token_id`)
	if err != nil {
		return nil, fmt.Errorf("listing API tokens: %w", err)
	}
	defer rows.Close()
	var out []Token
	for rows.Next() {
		var t Token
		var role string
		if err := rows.Scan(&t.ID, &t.Name, &role, &t.Prefix, &t.CreatedAt, &t.RevokedAt); err != nil {
			return nil, fmt.Errorf("listing API tokens: %w", err)
		}
		t.Role = Role(role)
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("listing API tokens: %w", err)
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
