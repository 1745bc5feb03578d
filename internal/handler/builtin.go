package handler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// NewNoop builds the noop handler: it succeeds at once with config "results" (default {}).
// Config: {results: any}.
func NewNoop(config map[string]any) (Handler, error) {
	var cfg struct {
		Results any `json:"results"`
	}
	if err := decodeConfig(config, &cfg); err != nil {
		return nil, err
	}
	res, err := resultsJSON(cfg.Results)
	if err != nil {
		return nil, err
	}
	return HandlerFunc(func(context.Context, Input) (Output, error) {
		return Output{Results: res}, nil
	}), nil
}

// NewSleep builds the sleep handler: it waits "duration" then succeeds with "results"; when ctx
// ends first it returns a retryable error wrapping ctx.Err().
// Config: {duration: "1s" (required), results: any}.
func NewSleep(config map[string]any) (Handler, error) {
	var cfg struct {
		Duration *duration `json:"duration"`
		Results  any       `json:"results"`
	}
	if err := decodeConfig(config, &cfg); err != nil {
		return nil, err
	}
	if cfg.Duration == nil {
		return nil, fmt.Errorf("duration %w (e.g. \"1s\")", errMissing)
	}
	res, err := resultsJSON(cfg.Results)
	if err != nil {
		return nil, err
	}
	d := time.Duration(*cfg.Duration)
	return HandlerFunc(func(ctx context.Context, _ Input) (Output, error) {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			return Output{Results: res}, nil
		case <-ctx.Done():
			return Output{}, Retryable(fmt.Errorf("sleeping %s: %w", d, ctx.Err()), 0)
		}
	}), nil
}

// ErrInjected is wrapped by every failure of the fail handler.
var ErrInjected = errors.New("injected failure")

// Fail handler failure kinds.
const (
	FailError     = "error"     // a retryable failure, returned at once
	FailTimeout   = "timeout"   // block until the step's context ends (its timeout), then a retryable failure
	FailPermanent = "permanent" // a permanent failure
)

// NewFail builds the fail handler, which injects failures for tests and demos: attempts 1..times
// fail, later attempts succeed with "results".
//
// Config: {times: N (default 1, >= 0), error: "message", kind: error|timeout|permanent (default
// error), retry_after: "2s" (optional, asked for on each retryable failure), results: any}.
//
// Kind timeout makes a failing attempt wait until its context is done, which is the step's
// timeout when run by a worker, and then fail with a retryable error wrapping both ErrInjected
// and ctx.Err() (context.DeadlineExceeded for a timeout): "times out once" is a step with
// {kind: timeout, times: 1} and a short step timeout.
func NewFail(config map[string]any) (Handler, error) {
	var cfg struct {
		Times      *int      `json:"times"`
		Error      string    `json:"error"`
		Kind       string    `json:"kind"`
		RetryAfter *duration `json:"retry_after"`
		Results    any       `json:"results"`
	}
	if err := decodeConfig(config, &cfg); err != nil {
		return nil, err
	}
	times := 1
	if cfg.Times != nil {
		times = *cfg.Times
	}
	if times < 0 {
		return nil, fmt.Errorf("times must be >= 0, got %d", times)
	}
	switch cfg.Kind {
	case "":
		cfg.Kind = FailError
	case FailError, FailTimeout, FailPermanent:
	default:
		return nil, fmt.Errorf("kind %q is not one of error, timeout, permanent", cfg.Kind)
	}
	msg := cfg.Error
	if msg == "" {
		msg = "failing as configured"
	}
	var retryAfter time.Duration
	if cfg.RetryAfter != nil {
		retryAfter = time.Duration(*cfg.RetryAfter)
		if retryAfter > MaxRetryAfter {
			return nil, fmt.Errorf("retry_after %s exceeds the cap of %s", retryAfter, MaxRetryAfter)
		}
	}
	res, err := resultsJSON(cfg.Results)
	if err != nil {
		return nil, err
	}
	kind := cfg.Kind
	return HandlerFunc(func(ctx context.Context, in Input) (Output, error) {
		if in.Attempt > times {
			return Output{Results: res}, nil
		}
		base := fmt.Errorf("%w: %s (attempt %d of %d failing)", ErrInjected, msg, in.Attempt, times)
		switch kind {
		case FailPermanent:
			return Output{}, Permanent(base)
		case FailTimeout:
			<-ctx.Done()
			return Output{}, Retryable(fmt.Errorf("%w: %w", base, ctx.Err()), retryAfter)
		default:
			return Output{}, Retryable(base, retryAfter)
		}
	}), nil
}

// jsonValue decodes raw JSON for templating: nil or empty input decodes to nil.
func jsonValue(raw json.RawMessage) (any, error) {
	if len(raw) == 0 {
		return nil, nil
	}
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, err
	}
	return v, nil
}
