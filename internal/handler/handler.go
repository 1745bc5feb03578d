// Package handler defines what a workflow step runs: the Handler interface, the typed errors a
// handler returns (retryable, with an optional delay asked for by a remote server, or
// permanent), and a Registry of handler kinds so that the engine can be embedded as a library
// with custom handlers. The built-in kinds are http, noop, sleep and fail.
//
// A template names a handler kind and gives it a config map; the kind's Factory validates that
// config when the template is loaded and returns a Handler that the workers call for every
// attempt of the step. A Handler is shared by all runs of its step and must be safe for
// concurrent use.
package handler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"
)

// Input is what a handler receives for one attempt of one step.
type Input struct {
	// TaskID and StepID identify the running task and workflow step (0 when run outside one).
	TaskID int64
	StepID int64
	// StepName is the step's name in its template.
	StepName string
	// Attempt is the 1-based number of this attempt: 1 the first time the step runs.
	Attempt int
	// Context is the task's context (its input), a JSON object.
	Context json.RawMessage
	// Inputs is the step's own inputs (from the template), or nil.
	Inputs json.RawMessage
	// Parents holds the results of the step's parents, by parent step name.
	Parents map[string]json.RawMessage
}

// Output is what a successful attempt produces.
type Output struct {
	// Results is stored as the step's results; nil is stored as an empty JSON object.
	Results json.RawMessage
}

// Handler runs one attempt of a step. It returns a *RetryableError or a *PermanentError to say
// how the failure should be treated; any other error is treated as retryable with no
// requested delay. Run must return promptly when ctx is done.
type Handler interface {
	Run(ctx context.Context, in Input) (Output, error)
}

// HandlerFunc adapts a function to the Handler interface.
type HandlerFunc func(ctx context.Context, in Input) (Output, error)

// Run calls f.
func (f HandlerFunc) Run(ctx context.Context, in Input) (Output, error) { return f(ctx, in) }

// Factory builds a Handler from a step's config map, or returns an error naming what is wrong
// with the config. It is called once per step when a template is loaded.
type Factory func(config map[string]any) (Handler, error)

// MaxRetryAfter caps the delay a handler or a remote server may ask for before a retry.
const MaxRetryAfter = 300 * time.Second

// RetryableError is a failure that may succeed if the step runs again.
type RetryableError struct {
	Err error
	// RetryAfter is the delay asked for before the next attempt (0: none), at most MaxRetryAfter.
	RetryAfter time.Duration
}

func (e *RetryableError) Error() string {
	if e.RetryAfter > 0 {
		return fmt.Sprintf("retryable failure (retry after %s): %v", e.RetryAfter, e.Err)
	}
	return fmt.Sprintf("retryable failure: %v", e.Err)
}

func (e *RetryableError) Unwrap() error { return e.Err }

// PermanentError is a failure that will not succeed on a retry; the step is not retried.
type PermanentError struct {
	Err error
}

func (e *PermanentError) Error() string { return fmt.Sprintf("permanent failure: %v", e.Err) }

func (e *PermanentError) Unwrap() error { return e.Err }

// Retryable wraps err as a retryable failure asking for retryAfter (clamped to [0, MaxRetryAfter]).
func Retryable(err error, retryAfter time.Duration) error {
	return &RetryableError{Err: err, RetryAfter: clampRetryAfter(retryAfter)}
}

// Permanent wraps err as a permanent failure.
func Permanent(err error) error { return &PermanentError{Err: err} }

// IsPermanent reports whether err is, or wraps, a *PermanentError.
func IsPermanent(err error) bool {
	var p *PermanentError
	return errors.As(err, &p)
}

// RetryAfter returns the delay requested by err (a *RetryableError with RetryAfter > 0), capped
// at MaxRetryAfter, and whether one was requested.
func RetryAfter(err error) (time.Duration, bool) {
	var r *RetryableError
	if errors.As(err, &r) && r.RetryAfter > 0 {
		return clampRetryAfter(r.RetryAfter), true
	}
	return 0, false
}

func clampRetryAfter(d time.Duration) time.Duration {
	if d < 0 {
		return 0
	}
	if d > MaxRetryAfter {
		return MaxRetryAfter
	}
	return d
}

// Registry maps handler kinds to their factories. It is safe for concurrent use.
type Registry struct {
	mu        sync.RWMutex
	factories map[string]Factory
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{factories: map[string]Factory{}} }

// NewBuiltinRegistry returns a registry holding the built-in kinds: http, noop, sleep, fail.
func NewBuiltinRegistry() *Registry {
	r := NewRegistry()
	for kind, f := range map[string]Factory{
		"http":  NewHTTP,
		"noop":  NewNoop,
		"sleep": NewSleep,
		"fail":  NewFail,
	} {
		if err := r.Register(kind, f); err != nil {
			panic(err) // unreachable: the built-in kinds are distinct and non-empty
		}
	}
	return r
}

// Register adds a kind. It refuses an empty kind, a nil factory, and a kind already registered.
func (r *Registry) Register(kind string, factory Factory) error {
	if kind == "" {
		return errors.New("registering handler: empty kind")
	}
	if factory == nil {
		return fmt.Errorf("registering handler %q: nil factory", kind)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.factories[kind]; ok {
		return fmt.Errorf("registering handler %q: kind already registered", kind)
	}
	r.factories[kind] = factory
	return nil
}

// ErrUnknownKind is returned by New for a kind that is not registered.
var ErrUnknownKind = errors.New("unknown handler kind")

// New builds a handler of the given kind from config, validating the config.
func (r *Registry) New(kind string, config map[string]any) (Handler, error) {
	r.mu.RLock()
	f, ok := r.factories[kind]
	r.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("%w %q (known: %v)", ErrUnknownKind, kind, r.Kinds())
	}
	if config == nil {
		config = map[string]any{}
	}
	h, err := f(config)
	if err != nil {
		return nil, fmt.Errorf("%s handler config: %w", kind, err)
	}
	return h, nil
}

// Kinds lists the registered kinds in ascending order.
func (r *Registry) Kinds() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]string, 0, len(r.factories))
	for k := range r.factories {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
