package handler

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"text/template"
	"time"
)

// MaxHTTPResponseBytes bounds how much of a response body the http handler reads.
const MaxHTTPResponseBytes = 10 << 20

// DefaultHTTPTimeout bounds one request when the config sets no timeout.
const DefaultHTTPTimeout = 30 * time.Second

// HTTPTemplateData is what the http handler's url, body and header templates see:
// {{.Context.order_id}}, {{.Parents.fetch_user.id}}, {{json .Context}}.
type HTTPTemplateData struct {
	Context  any
	Parents  map[string]any
	Inputs   any
	StepName string
	Attempt  int
	TaskID   int64
	StepID   int64
}

type httpHandler struct {
	method  string
	url     *template.Template
	body    *template.Template
	headers map[string]*template.Template
	client  *http.Client
}

// NewHTTP builds the http handler, which calls a remote service.
//
// Config: {method: GET (default; POST when a body is set), url: template (required), body:
// template, headers: {name: template}, timeout: "10s" (default 30s)}. Templates are Go
// text/template over HTTPTemplateData with a "json" function, and a missing map key is an
// error.
//
// Outcome: 2xx with a JSON body (or an empty one, read as {}) → the body is the step's results;
// a 2xx body that is not JSON → permanent failure; 429 and 503 → retryable failure honouring
// Retry-After (seconds or an HTTP date, capped at MaxRetryAfter); other 4xx → permanent
// failure; 5xx and network errors (including the timeout) → retryable failure; a template that
// cannot be rendered from the task's data → permanent failure.
func NewHTTP(config map[string]any) (Handler, error) {
	var cfg struct {
		Method  string            `json:"method"`
		URL     string            `json:"url"`
		Body    *string           `json:"body"`
		Headers map[string]string `json:"headers"`
		Timeout *duration         `json:"timeout"`
	}
	if err := decodeConfig(config, &cfg); err != nil {
		return nil, err
	}
	if cfg.URL == "" {
		return nil, fmt.Errorf("url %w", errMissing)
	}
	h := &httpHandler{method: strings.ToUpper(cfg.Method), headers: map[string]*template.Template{}}
	if h.method == "" {
		h.method = http.MethodGet
		if cfg.Body != nil {
			h.method = http.MethodPost
		}
	}
	switch h.method {
	case http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodHead:
	default:
		return nil, fmt.Errorf("method %q is not one of GET, POST, PUT, PATCH, DELETE, HEAD", cfg.Method)
	}
	var err error
	if h.url, err = parseTemplate("url", cfg.URL); err != nil {
		return nil, err
	}
	if !strings.Contains(cfg.URL, "{{") {
		u, err := url.Parse(cfg.URL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("url %q is not an absolute http(s) URL", cfg.URL)
		}
	}
	if cfg.Body != nil {
		if h.body, err = parseTemplate("body", *cfg.Body); err != nil {
			return nil, err
		}
	}
	for name, v := range cfg.Headers {
		if h.headers[name], err = parseTemplate("header "+name, v); err != nil {
			return nil, err
		}
	}
	timeout := DefaultHTTPTimeout
	if cfg.Timeout != nil {
		timeout = time.Duration(*cfg.Timeout)
		if timeout <= 0 {
			return nil, errors.New("timeout must be positive")
		}
	}
	h.client = &http.Client{Timeout: timeout}
	return h, nil
}

func parseTemplate(what, text string) (*template.Template, error) {
	t, err := template.New(what).Option("missingkey=error").Funcs(template.FuncMap{
		"json": func(v any) (string, error) {
			b, err := json.Marshal(v)
			return string(b), err
		},
	}).Parse(text)
	if err != nil {
		return nil, fmt.Errorf("parsing %s template: %w", what, err)
	}
	return t, nil
}

func render(t *template.Template, data HTTPTemplateData) (string, error) {
	var b strings.Builder
	if err := t.Execute(&b, data); err != nil {
		return "", fmt.Errorf("rendering %s template: %w", t.Name(), err)
	}
	return b.String(), nil
}

func templateData(in Input) (HTTPTemplateData, error) {
	d := HTTPTemplateData{StepName: in.StepName, Attempt: in.Attempt, TaskID: in.TaskID, StepID: in.StepID,
		Parents: map[string]any{}}
	var err error
	if d.Context, err = jsonValue(in.Context); err != nil {
		return d, fmt.Errorf("decoding task context: %w", err)
	}
	if d.Inputs, err = jsonValue(in.Inputs); err != nil {
		return d, fmt.Errorf("decoding step inputs: %w", err)
	}
	for name, raw := range in.Parents {
		if d.Parents[name], err = jsonValue(raw); err != nil {
			return d, fmt.Errorf("decoding results of parent %q: %w", name, err)
		}
	}
	return d, nil
}

func (h *httpHandler) Run(ctx context.Context, in Input) (Output, error) {
	data, err := templateData(in)
	if err != nil {
		return Output{}, Permanent(err)
	}
	target, err := render(h.url, data)
	if err != nil {
		return Output{}, Permanent(err)
	}
	var body io.Reader
	if h.body != nil {
		s, err := render(h.body, data)
		if err != nil {
			return Output{}, Permanent(err)
		}
		body = strings.NewReader(s)
	}
	req, err := http.NewRequestWithContext(ctx, h.method, target, body)
	if err != nil {
		return Output{}, Permanent(fmt.Errorf("building request to %q: %w", target, err))
	}
	for name, t := range h.headers {
		v, err := render(t, data)
		if err != nil {
			return Output{}, Permanent(err)
		}
		req.Header.Set(name, v)
	}
	if body != nil && req.Header.Get("Content-Type") == "" {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	resp, err := h.client.Do(req)
	if err != nil {
		return Output{}, Retryable(fmt.Errorf("calling %s %s: %w", h.method, req.URL.Redacted(), err), 0)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, MaxHTTPResponseBytes+1))
	if err != nil {
		return Output{}, Retryable(fmt.Errorf("reading response of %s %s: %w", h.method, req.URL.Redacted(), err), 0)
	}
	where := fmt.Sprintf("%s %s answered %d", h.method, req.URL.Redacted(), resp.StatusCode)
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		if len(raw) > MaxHTTPResponseBytes {
			return Output{}, Permanent(fmt.Errorf("%s with a body over %d bytes", where, MaxHTTPResponseBytes))
		}
		if len(bytes.TrimSpace(raw)) == 0 {
			return Output{Results: json.RawMessage(`{}`)}, nil
		}
		if !json.Valid(raw) {
			return Output{}, Permanent(fmt.Errorf("%s with a body that is not JSON: %s", where, snippet(raw)))
		}
		var compact bytes.Buffer
		if err := json.Compact(&compact, raw); err != nil {
			return Output{}, Permanent(fmt.Errorf("%s: compacting JSON body: %w", where, err))
		}
		return Output{Results: compact.Bytes()}, nil
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		ra, _ := ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
		return Output{}, Retryable(fmt.Errorf("%s: %s", where, snippet(raw)), ra)
	default:
		return Output{}, Permanent(fmt.Errorf("%s: %s", where, snippet(raw)))
	}
}

// ParseRetryAfter reads a Retry-After header value: delay seconds or an HTTP date (relative to
// now; a past date is 0). The result is capped at MaxRetryAfter. ok is false for an empty or
// unreadable value.
func ParseRetryAfter(v string, now time.Time) (d time.Duration, ok bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs < 0 {
			return 0, false
		}
		if secs > int64(MaxRetryAfter/time.Second) {
			return MaxRetryAfter, true
		}
		return time.Duration(secs) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return clampRetryAfter(t.Sub(now).Round(time.Second)), true
}

func snippet(b []byte) string {
	const max = 512
	s := strings.TrimSpace(string(b))
	if len(s) > max {
		s = s[:max] + "…"
	}
	if s == "" {
		return "(empty body)"
	}
	return s
}
