package handler

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func newHTTP(t *testing.T, cfg map[string]any) Handler {
	t.Helper()
	h, err := NewBuiltinRegistry().New("http", cfg)
	if err != nil {
		t.Fatalf("building http handler: %v", err)
	}
	return h
}

func TestHTTPStatusOutcomes(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name       string
		status     int
		body       string
		header     map[string]string
		wantErr    bool
		permanent  bool
		retryAfter time.Duration
		results    string
	}{
		{name: "200 json", status: 200, body: `{"ok": true, "n": [1, 2]}`, results: `{"ok":true,"n":[1,2]}`},
		{name: "201 empty body", status: 201, body: ``, results: `{}`},
		{name: "200 invalid json", status: 200, body: `<html>oops</html>`, wantErr: true, permanent: true},
		{name: "400", status: 400, body: `bad`, wantErr: true, permanent: true},
		{name: "404", status: 404, wantErr: true, permanent: true},
		{name: "429 seconds", status: 429, header: map[string]string{"Retry-After": "7"}, wantErr: true, retryAfter: 7 * time.Second},
		{name: "429 no header", status: 429, wantErr: true},
		{name: "503 capped", status: 503, header: map[string]string{"Retry-After": "100000"}, wantErr: true, retryAfter: MaxRetryAfter},
		{name: "500", status: 500, body: `boom`, wantErr: true},
		{name: "502 garbage retry-after", status: 502, header: map[string]string{"Retry-After": "soon"}, wantErr: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				for k, v := range tc.header {
					w.Header().Set(k, v)
				}
				w.WriteHeader(tc.status)
				_, _ = io.WriteString(w, tc.body)
			}))
			defer srv.Close()
			out, err := newHTTP(t, map[string]any{"url": srv.URL}).Run(context.Background(), Input{Attempt: 1})
			if !tc.wantErr {
				if err != nil {
					t.Fatalf("Run: %v", err)
				}
				if string(out.Results) != tc.results {
					t.Fatalf("results = %s, want %s", out.Results, tc.results)
				}
				return
			}
			if err == nil {
				t.Fatalf("Run succeeded with %s, want an error", out.Results)
			}
			if IsPermanent(err) != tc.permanent {
				t.Fatalf("IsPermanent(%v) = %v, want %v", err, IsPermanent(err), tc.permanent)
			}
			var re *RetryableError
			if !tc.permanent && !errors.As(err, &re) {
				t.Fatalf("error %v is not a *RetryableError", err)
			}
			got, ok := RetryAfter(err)
			if got != tc.retryAfter || ok != (tc.retryAfter > 0) {
				t.Fatalf("RetryAfter = %s, %v; want %s", got, ok, tc.retryAfter)
			}
		})
	}
}

func TestHTTPRetryAfterHTTPDate(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", time.Now().Add(60*time.Second).UTC().Format(http.TimeFormat))
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	_, err := newHTTP(t, map[string]any{"url": srv.URL}).Run(context.Background(), Input{Attempt: 1})
	got, ok := RetryAfter(err)
	if !ok || got < 58*time.Second || got > 61*time.Second {
		t.Fatalf("RetryAfter = %s, %v; want about 60s (err %v)", got, ok, err)
	}
}

func TestParseRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	cases := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"", 0, false},
		{"0", 0, true},
		{" 12 ", 12 * time.Second, true},
		{"301", MaxRetryAfter, true},
		{"-5", 0, false},
		{"tomorrow", 0, false},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second, true},
		{now.Add(2 * time.Hour).Format(http.TimeFormat), MaxRetryAfter, true},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0, true},
	}
	for _, tc := range cases {
		got, ok := ParseRetryAfter(tc.in, now)
		if got != tc.want || ok != tc.ok {
			t.Errorf("ParseRetryAfter(%q) = %s, %v; want %s, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestHTTPTemplating(t *testing.T) {
	t.Parallel()
	type seen struct {
		method, path, query, body, ctype, auth string
	}
	var mu sync.Mutex
	var got seen
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		got = seen{r.Method, r.URL.Path, r.URL.RawQuery, string(b), r.Header.Get("Content-Type"), r.Header.Get("Authorization")}
		mu.Unlock()
		_, _ = io.WriteString(w, `{"charged": true}`)
	}))
	defer srv.Close()
	h := newHTTP(t, map[string]any{
		"url":     srv.URL + "/orders/{{.Context.order_id}}/charge?attempt={{.Attempt}}",
		"body":    `{"amount": {{.Parents.price.amount}}, "user": {{json .Parents.user}}}`,
		"headers": map[string]any{"Authorization": "Bearer {{.Context.token}}"},
	})
	out, err := h.Run(context.Background(), Input{
		Attempt: 2,
		Context: json.RawMessage(`{"order_id": 42, "token": "t0k"}`),
		Parents: map[string]json.RawMessage{
			"price": json.RawMessage(`{"amount": 9.5}`),
			"user":  json.RawMessage(`{"id": 7, "name": "ada"}`),
		},
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if string(out.Results) != `{"charged":true}` {
		t.Fatalf("results = %s", out.Results)
	}
	mu.Lock()
	defer mu.Unlock()
	want := seen{"POST", "/orders/42/charge", "attempt=2", `{"amount": 9.5, "user": {"id":7,"name":"ada"}}`, "application/json", "Bearer t0k"}
	if got != want {
		t.Fatalf("request = %+v\nwant      %+v", got, want)
	}
}

func TestHTTPTemplateMissingKeyIsPermanent(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { calls.Add(1) }))
	defer srv.Close()
	h := newHTTP(t, map[string]any{"url": srv.URL + "/{{.Context.missing}}"})
	_, err := h.Run(context.Background(), Input{Attempt: 1, Context: json.RawMessage(`{"other": 1}`)})
	if !IsPermanent(err) || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("err = %v, want a permanent error naming the missing key", err)
	}
	if n := calls.Load(); n != 0 {
		t.Fatalf("server was called %d times, want 0", n)
	}
}

func TestHTTPNetworkErrorAndTimeoutAreRetryable(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	addr := srv.URL
	srv.Close() // nothing listens there any more
	_, err := newHTTP(t, map[string]any{"url": addr}).Run(context.Background(), Input{Attempt: 1})
	var re *RetryableError
	if !errors.As(err, &re) {
		t.Fatalf("connection refused: err = %v, want a *RetryableError", err)
	}

	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer slow.Close()
	defer close(release)
	_, err = newHTTP(t, map[string]any{"url": slow.URL, "timeout": "50ms"}).Run(context.Background(), Input{Attempt: 1})
	if !errors.As(err, &re) {
		t.Fatalf("timeout: err = %v, want a *RetryableError", err)
	}
}

func TestHTTPConfigValidation(t *testing.T) {
	t.Parallel()
	r := NewBuiltinRegistry()
	cases := map[string]map[string]any{
		"missing url":     {},
		"relative url":    {"url": "/just/a/path"},
		"bad template":    {"url": "http://x/{{.Context.a"},
		"bad method":      {"url": "http://x", "method": "BREW"},
		"unknown key":     {"url": "http://x", "verb": "GET"},
		"bad timeout":     {"url": "http://x", "timeout": "soon"},
		"numeric timeout": {"url": "http://x", "timeout": 5},
	}
	for name, cfg := range cases {
		if _, err := r.New("http", cfg); err == nil {
			t.Errorf("%s: config %v accepted, want an error", name, cfg)
		}
	}
}
