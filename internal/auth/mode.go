package auth

import (
	"net"
	"strings"

	"github.com/taskerhq/tasker/internal/errs"
)

// Mode says whether requests must authenticate.
type Mode int

// The modes.
const (
	// Required: every request needs a valid API token.
	Required Mode = iota
	// Off: every request is admitted as an anonymous admin. Limits still apply.
	Off
)

func (m Mode) String() string {
	if m == Off {
		return "off"
	}
	return "required"
}

// Setup is what DecideMode needs to know about the process.
type Setup struct {
	// Embedded is true when the server runs its own private PostgreSQL (no DATABASE_URL).
	Embedded bool
	// Listen is the HTTP listen address (host:port).
	Listen string
	// Env is the value of TASKER_AUTH: "", "on" or "off".
	Env string
}

// Decision is the outcome of DecideMode: the mode, and a warning to log when it is Off.
type Decision struct {
	Mode    Mode
	Warning string
}

// DecideMode applies the startup rule:
//
//   - TASKER_AUTH=on: authentication is required.
//   - TASKER_AUTH=off: the server runs open, whatever its configuration, with a warning.
//   - unset: the embedded default bound to a loopback address runs open, with a warning (a
//     private development server); any other configuration (DATABASE_URL set, or listening
//     beyond loopback) requires authentication and never starts open.
//
// Any other TASKER_AUTH value is an error.
func DecideMode(s Setup) (Decision, error) {
	switch strings.ToLower(strings.TrimSpace(s.Env)) {
	case "on", "required", "true", "1":
		return Decision{Mode: Required}, nil
	case "off", "false", "0":
		return Decision{Mode: Off, Warning: "authentication is OFF (TASKER_AUTH=off): every request is admitted as an admin"}, nil
	case "":
	default:
		return Decision{}, errs.E(errs.Invalid, "TASKER_AUTH=%q is not on or off", s.Env)
	}
	if s.Embedded && isLoopback(s.Listen) {
		return Decision{Mode: Off, Warning: "authentication is OFF: embedded PostgreSQL on a loopback address; set TASKER_AUTH=on to require API tokens"}, nil
	}
	return Decision{Mode: Required}, nil
}

// isLoopback reports whether addr (host:port) binds only loopback interfaces. An empty host
// binds every interface.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
