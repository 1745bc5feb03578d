// Package requestid holds the one rule for a request's id: the client's X-Request-Id when it is
// 1–64 characters of [A-Za-z0-9._-], else a new random one. Every layer that needs the id (HTTP
// metrics and logs, the GraphQL endpoint, traces) takes it from here, so they all agree.
package requestid

import (
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"regexp"
)

// Header is the HTTP header that carries the id, in requests and in responses.
const Header = "X-Request-Id"

var valid = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// Valid reports whether id may be used as a request id as the client sent it.
func Valid(id string) bool { return valid.MatchString(id) }

// New returns a random request id (16 hex characters).
func New() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Ensure returns r's request id: its X-Request-Id header when valid, else a new id, which it
// then sets on r's header so that handlers further in reuse it. It also echoes the id in w's
// X-Request-Id header.
func Ensure(w http.ResponseWriter, r *http.Request) string {
	id := r.Header.Get(Header)
	if !Valid(id) {
		id = New()
		r.Header.Set(Header, id)
	}
	w.Header().Set(Header, id)
	return id
}
