package store

import (
	"context"
	"database/sql"
	"errors"
	"time"
)

// APIToken is a row of tasker_api_tokens: everything about a token except its secret, of
// which only the hash is stored.
type APIToken struct {
	ID        int64
	Name      string
	Role      string
	Prefix    string
	CreatedAt time.Time
	RevokedAt *time.Time
}

// CreateAPIToken inserts a token and returns its id and creation time.
func (s *Store) CreateAPIToken(ctx context.Context, name, role, prefix string, hash []byte) (id int64, createdAt time.Time, err error) {
	err = s.conn(ctx).Raw(`INSERT INTO tasker_api_tokens (name, role, prefix, token_hash)
		VALUES ($1, $2, $3, $4) RETURNING api_token_id, created_at`,
		name, role, prefix, hash).Row().Scan(&id, &createdAt)
	return id, createdAt, err
}

// ActiveAPITokenByHash returns the id, name and role of the active token whose secret hashes
// to hash; found is false when there is none.
func (s *Store) ActiveAPITokenByHash(ctx context.Context, hash []byte) (id int64, name, role string, found bool, err error) {
	err = s.conn(ctx).Raw(`SELECT api_token_id, name, role FROM tasker_api_tokens
		WHERE token_hash = $1 AND revoked_at IS NULL`, hash).Row().Scan(&id, &name, &role)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, "", "", false, nil
	}
	return id, name, role, err == nil, err
}

// APITokenActive reports whether the token with this id exists and is not revoked.
func (s *Store) APITokenActive(ctx context.Context, id int64) (bool, error) {
	var active bool
	err := s.conn(ctx).Raw(`SELECT revoked_at IS NULL FROM tasker_api_tokens WHERE api_token_id = $1`, id).Row().Scan(&active)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return active, err
}

// ActiveAPITokenIDsByID returns the ids of the active tokens with this id (none or one).
func (s *Store) ActiveAPITokenIDsByID(ctx context.Context, id int64) ([]int64, error) {
	return s.ids(ctx, `SELECT api_token_id FROM tasker_api_tokens
			WHERE api_token_id = $1 AND revoked_at IS NULL`, id)
}

// ActiveAPITokenIDsByHash returns the ids of the active tokens whose secret hashes to hash.
func (s *Store) ActiveAPITokenIDsByHash(ctx context.Context, hash []byte) ([]int64, error) {
	return s.ids(ctx, `SELECT api_token_id FROM tasker_api_tokens
			WHERE token_hash = $1 AND revoked_at IS NULL`, hash)
}

// ActiveAPITokenIDsByPrefix returns the ids of the active tokens whose stored prefix starts
// with prefix.
func (s *Store) ActiveAPITokenIDsByPrefix(ctx context.Context, prefix string) ([]int64, error) {
	return s.ids(ctx, `SELECT api_token_id FROM tasker_api_tokens
			WHERE prefix LIKE $1 || '%' AND revoked_at IS NULL`, prefix)
}

// ids runs a query of one bigint column and returns its values.
func (s *Store) ids(ctx context.Context, query string, args ...any) ([]int64, error) {
	rows, err := s.conn(ctx).Raw(query, args...).Rows()
	return collect(rows, err, func(r *sql.Rows, id *int64) error { return r.Scan(id) })
}

// collect reads every row of rows (the result of a query that failed with err, if not nil)
// with scan, and closes rows.
func collect[T any](rows *sql.Rows, err error, scan func(*sql.Rows, *T) error) ([]T, error) {
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		var v T
		if err := scan(rows, &v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// RevokeAPIToken revokes the token with this id if it is active and returns it; found is
// false when no active token has this id.
func (s *Store) RevokeAPIToken(ctx context.Context, id int64) (t APIToken, found bool, err error) {
	err = s.conn(ctx).Raw(`UPDATE tasker_api_tokens SET revoked_at = now()
		WHERE api_token_id = $1 AND revoked_at IS NULL
		RETURNING api_token_id, name, role, prefix, created_at, revoked_at`, id).Row().
		Scan(&t.ID, &t.Name, &t.Role, &t.Prefix, &t.CreatedAt, &t.RevokedAt)
	if errors.Is(err, sql.ErrNoRows) {
		return APIToken{}, false, nil
	}
	return t, err == nil, err
}

// APITokens returns every token, active and revoked, oldest first.
func (s *Store) APITokens(ctx context.Context) ([]APIToken, error) {
	rows, err := s.conn(ctx).Raw(`SELECT api_token_id, name, role, prefix, created_at, revoked_at
		FROM tasker_api_tokens ORDER BY api_token_id`).Rows()
	return collect(rows, err, func(r *sql.Rows, t *APIToken) error {
		return r.Scan(&t.ID, &t.Name, &t.Role, &t.Prefix, &t.CreatedAt, &t.RevokedAt)
	})
}
