// Package tracing sets up OpenTelemetry tracing for a tasker process and holds the
// instrumentation of its HTTP server (HTTP), GraphQL operations (UseGraphQL) and SQL
// statements (PGX); the engine's claim, run and record spans use Tracer.
//
// Tracing is off unless configured (see ConfigFromEnv). Off, Start installs nothing: the global
// tracer provider stays OpenTelemetry's no-op one, no exporter exists, and HTTP, UseGraphQL and
// PGX return their argument unchanged, so the only cost left is that of no-op spans. On, spans
// are exported with OTLP over HTTP, batched, and Provider.Shutdown flushes them.
//
// Every span started within an HTTP request carries the request's id as the attribute
// tasker.request_id: HTTP gives each request its id before anything else runs (the client's
// X-Request-Id when it is 1–64 characters of [A-Za-z0-9._-], the same rule the API's own
// middlewares apply, else a random one), and a span processor copies it from the context onto
// each span as it starts, so the HTTP, GraphQL and SQL spans of a request all have it.
package tracing

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// Attribute keys set by tasker's own instrumentation.
const (
	// RequestIDKey is the id of the HTTP request a span belongs to (X-Request-Id).
	RequestIDKey = attribute.Key("tasker.request_id")
	// TaskIDKey, StepIDKey, StepNameKey and AttemptKey identify the step of an engine span.
	TaskIDKey   = attribute.Key("tasker.task_id")
	StepIDKey   = attribute.Key("tasker.step_id")
	StepNameKey = attribute.Key("tasker.step_name")
	AttemptKey  = attribute.Key("tasker.attempt")
)

// instrumentationName names tasker's tracers.
const instrumentationName = "github.com/taskerhq/tasker"

// Config says whether and how a process exports traces.
type Config struct {
	// Enabled turns tracing on.
	Enabled bool
	// ServiceName is service.name unless OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES set
	// it (default "tasker").
	ServiceName string
	// Exporter, when set, receives every span synchronously as it ends, in place of OTLP
	// (tests use tracetest.InMemoryExporter).
	Exporter sdktrace.SpanExporter
}

// ConfigFromEnv reads the configuration from getenv:
//   - TASKER_TRACING: on, off, or unset; unset means on exactly when an OTLP endpoint is set
//     (OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT);
//   - OTEL_SDK_DISABLED=true and OTEL_TRACES_EXPORTER=none turn tracing off whatever else is set;
//     OTEL_TRACES_EXPORTER may otherwise only be otlp;
//   - OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL may be http/protobuf (the default) or http/json.
//
// The exporter itself reads the other OTEL_EXPORTER_OTLP_* variables (headers, timeout,
// compression, TLS); the SDK reads OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES,
// OTEL_TRACES_SAMPLER(_ARG) and OTEL_BSP_*. A value it cannot use is an error: nothing starts.
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	cfg := Config{ServiceName: "tasker"}
	endpoint := getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != ""
	switch v := getenv("TASKER_TRACING"); v {
	case "":
		cfg.Enabled = endpoint
	case "on":
		cfg.Enabled = true
	case "off":
	default:
		return cfg, fmt.Errorf("TASKER_TRACING=%q is neither on nor off", v)
	}
	if v := getenv("OTEL_SDK_DISABLED"); v != "" {
		disabled, err := strconv.ParseBool(v)
		if err != nil {
			return cfg, fmt.Errorf("OTEL_SDK_DISABLED=%q is not a boolean", v)
		}
		if disabled {
			cfg.Enabled = false
		}
	}
	switch v := strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER")); v {
	case "", "otlp":
	case "none":
		cfg.Enabled = false
	default:
		return cfg, fmt.Errorf("OTEL_TRACES_EXPORTER=%q is not supported: tasker exports traces with otlp (or none)", v)
	}
	for _, name := range []string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"} {
		switch v := getenv(name); v {
		case "", "http/protobuf", "http/json":
		default:
			return cfg, fmt.Errorf("%s=%q is not supported: tasker exports OTLP over HTTP (http/protobuf or http/json, port 4318)", name, v)
		}
	}
	return cfg, nil
}

// enabled is true once Start has installed a tracer provider in this process.
var enabled atomic.Bool

// Enabled reports whether Start installed a tracer provider in this process. The
// instrumentation helpers read it when they are called, so Start runs first.
func Enabled() bool { return enabled.Load() }

// Provider is the process's tracing, as Start set it up.
type Provider struct {
	tp *sdktrace.TracerProvider // nil when tracing is off
}

// Start sets up tracing as cfg says. Off, it installs nothing and returns a Provider whose
// Shutdown does nothing. On, it creates the exporter (OTLP over HTTP unless cfg.Exporter is
// set), installs a tracer provider and the W3C trace-context propagator globally, and logs
// where spans go; the SDK's errors (a failed export) go to log as warnings.
func Start(ctx context.Context, cfg Config, log *slog.Logger) (*Provider, error) {
	if !cfg.Enabled {
		return &Provider{}, nil
	}
	if cfg.ServiceName == "" {
		cfg.ServiceName = "tasker"
	}
	res, err := resource.New(ctx,
		resource.WithTelemetrySDK(),
		resource.WithAttributes(semconv.ServiceName(cfg.ServiceName)),
		resource.WithFromEnv(), // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win
	)
	if err != nil {
		return nil, fmt.Errorf("tracing: building the resource: %w", err)
	}
	opts := []sdktrace.TracerProviderOption{
		sdktrace.WithResource(res),
		sdktrace.WithSpanProcessor(requestIDProcessor{}), // before the exporter's: it adds attributes
	}
	where := "the given exporter"
	if cfg.Exporter != nil {
		opts = append(opts, sdktrace.WithSyncer(cfg.Exporter))
	} else {
		exp, err := otlptracehttp.New(ctx)
		if err != nil {
			return nil, fmt.Errorf("tracing: creating the OTLP exporter: %w", err)
		}
		opts = append(opts, sdktrace.WithBatcher(exp))
		where = "OTLP/HTTP"
	}
	tp := sdktrace.NewTracerProvider(opts...) // the sampler comes from OTEL_TRACES_SAMPLER
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.TraceContext{})
	enabled.Store(true)
	if log != nil {
		// Export failures (an unreachable collector) are logged, never returned to callers.
		otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) { log.Warn("tracing: export failed", "error", err) }))
		log.Info("tracing: on", "exporter", where, "service", serviceName(res))
	}
	return &Provider{tp: tp}, nil
}

func serviceName(res *resource.Resource) string {
	v, _ := res.Set().Value(semconv.ServiceNameKey)
	return v.AsString()
}

// Shutdown exports the spans not exported yet and stops the exporter, within ctx's deadline.
// Spans that end afterwards are dropped. It does nothing when tracing is off.
func (p *Provider) Shutdown(ctx context.Context) error {
	if p == nil || p.tp == nil {
		return nil
	}
	if err := p.tp.Shutdown(ctx); err != nil {
		return fmt.Errorf("flushing traces: %w", err)
	}
	return nil
}

// Tracer returns tasker's tracer from the global provider: a no-op one while tracing is off.
func Tracer() trace.Tracer { return otel.Tracer(instrumentationName) }

type requestIDKey struct{}

// WithRequestID returns ctx carrying the request id that every span started under it gets.
func WithRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, requestIDKey{}, id)
}

// RequestID returns the request id of ctx, or "".
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

// requestIDProcessor sets tasker.request_id on every span started under a context that
// carries a request id.
type requestIDProcessor struct{}

func (requestIDProcessor) OnStart(parent context.Context, s sdktrace.ReadWriteSpan) {
	if id := RequestID(parent); id != "" {
		s.SetAttributes(RequestIDKey.String(id))
	}
}
func (requestIDProcessor) OnEnd(sdktrace.ReadOnlySpan)      {}
func (requestIDProcessor) Shutdown(context.Context) error   { return nil }
func (requestIDProcessor) ForceFlush(context.Context) error { return nil }

// End ends span, marked as failed with err when err is not nil.
func End(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}
