package handler

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestFailFailsFirstNAttempts(t *testing.T) {
	t.Parallel()
	h, err := NewBuiltinRegistry().New("fail", map[string]any{
		"times": 2, "error": "disk full", "retry_after": "2s", "results": map[string]any{"done": true},
	})
	if err != nil {
		t.Fatal(err)
	}
	for attempt := 1; attempt <= 2; attempt++ {
		_, err := h.Run(context.Background(), Input{Attempt: attempt})
		if !errors.Is(err, ErrInjected) || IsPermanent(err) {
			t.Fatalf("attempt %d: err = %v, want a retryable injected failure", attempt, err)
		}
		if d, ok := RetryAfter(err); !ok || d != 2*time.Second {
			t.Fatalf("attempt %d: RetryAfter = %s, %v; want 2s", attempt, d, ok)
		}
	}
	out, err := h.Run(context.Background(), Input{Attempt: 3})
	if err != nil || string(out.Results) != `{"done":true}` {
		t.Fatalf("attempt 3: %s, %v; want success with results", out.Results, err)
	}
}

func TestFailKinds(t *testing.T) {
	t.Parallel()
	r := NewBuiltinRegistry()
	perm, err := r.New("fail", map[string]any{"kind": "permanent"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := perm.Run(context.Background(), Input{Attempt: 1}); !IsPermanent(err) {
		t.Fatalf("kind permanent: err = %v", err)
	}
	to, err := r.New("fail", map[string]any{"kind": "timeout", "times": 1})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err = to.Run(ctx, Input{Attempt: 1})
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, ErrInjected) || IsPermanent(err) {
		t.Fatalf("kind timeout: err = %v, want a retryable deadline-exceeded failure", err)
	}
	if out, err := to.Run(context.Background(), Input{Attempt: 2}); err != nil || string(out.Results) != `{}` {
		t.Fatalf("kind timeout attempt 2: %s, %v", out.Results, err)
	}
	for _, bad := range []map[string]any{{"times": -1}, {"kind": "explode"}, {"retry_after": "1h"}, {"tims": 1}} {
		if _, err := r.New("fail", bad); err == nil {
			t.Errorf("fail config %v accepted", bad)
		}
	}
}

func TestSleepRespectsCancel(t *testing.T) {
	t.Parallel()
	r := NewBuiltinRegistry()
	h, err := r.New("sleep", map[string]any{"duration": "1h"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := h.Run(ctx, Input{Attempt: 1})
		done <- err
	}()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) || IsPermanent(err) {
			t.Fatalf("err = %v, want a retryable context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("sleep did not return after cancel")
	}
	short, err := r.New("sleep", map[string]any{"duration": "1ms", "results": map[string]any{"slept": 1}})
	if err != nil {
		t.Fatal(err)
	}
	if out, err := short.Run(context.Background(), Input{Attempt: 1}); err != nil || string(out.Results) != `{"slept":1}` {
		t.Fatalf("short sleep: %s, %v", out.Results, err)
	}
	if _, err := r.New("sleep", map[string]any{}); err == nil {
		t.Fatal("sleep without duration accepted")
	}
}

func TestRegistry(t *testing.T) {
	t.Parallel()
	r := NewBuiltinRegistry()
	if got := r.Kinds(); len(got) != 4 || got[0] != "fail" || got[3] != "sleep" {
		t.Fatalf("Kinds = %v", got)
	}
	if err := r.Register("noop", NewNoop); err == nil {
		t.Fatal("registering noop twice succeeded")
	}
	custom := func(map[string]any) (Handler, error) {
		return HandlerFunc(func(ctx context.Context, in Input) (Output, error) {
			return Output{Results: []byte(`{"custom":"` + in.StepName + `"}`)}, nil
		}), nil
	}
	if err := r.Register("custom", custom); err != nil {
		t.Fatal(err)
	}
	h, err := r.New("custom", nil)
	if err != nil {
		t.Fatal(err)
	}
	if out, _ := h.Run(context.Background(), Input{StepName: "s"}); string(out.Results) != `{"custom":"s"}` {
		t.Fatalf("custom results = %s", out.Results)
	}
	if _, err := r.New("nope", nil); !errors.Is(err, ErrUnknownKind) {
		t.Fatalf("unknown kind: err = %v", err)
	}
	if out, err := mustNew(t, r, "noop", nil).Run(context.Background(), Input{}); err != nil || string(out.Results) != `{}` {
		t.Fatalf("noop: %s, %v", out.Results, err)
	}
}

func mustNew(t *testing.T, r *Registry, kind string, cfg map[string]any) Handler {
	t.Helper()
	h, err := r.New(kind, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return h
}
