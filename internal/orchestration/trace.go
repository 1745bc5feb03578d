package orchestration

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/taskerhq/tasker/internal/tracing"
)

// The engine's spans (internal/tracing; no-op spans while tracing is off):
//   - "orchestration.claim", one per claim that took steps or failed, covering the claim's
//     transaction. A claim that finds nothing makes no span, so an idle engine exports nothing.
//   - "orchestration.run", one per attempt, a child of its claim's span, covering the
//     handler's run; the step's input read and the handler's own spans are its children.
//   - "orchestration.record", one per attempt, a child of its run's span, covering the
//     transaction that records the attempt's batch; the batch's SQL spans are children of its
//     first attempt's record span.
//
// Each span of a step carries tasker.task_id, tasker.step_id and tasker.attempt. While tracing
// is off these helpers return at once: no attribute is built, no span started.

// traceClaim records the span of a claim that began at began and took steps (or failed), and
// gives each claimed step that span as its parent.
func (e *Engine) traceClaim(began time.Time, n int, steps []claimedStep, err error) {
	if !tracing.Enabled() || (len(steps) == 0 && err == nil) {
		return
	}
	ids := make([]int64, len(steps))
	for i, s := range steps {
		ids[i] = s.StepID
	}
	_, span := tracing.Tracer().Start(context.Background(), "orchestration.claim", trace.WithTimestamp(began),
		trace.WithAttributes(attribute.Int("tasker.claim.limit", n), attribute.Int("tasker.claim.steps", len(steps)),
			attribute.Int64Slice("tasker.step_ids", ids), attribute.String("tasker.worker_id", e.cfg.WorkerID)))
	tracing.End(span, err)
	for i := range steps {
		steps[i].trace = span.SpanContext()
	}
}

// stepAttributes identify the attempt of a claimed step.
func stepAttributes(s claimedStep) []attribute.KeyValue {
	return []attribute.KeyValue{tracing.TaskIDKey.Int64(s.TaskID), tracing.StepIDKey.Int64(s.StepID),
		tracing.AttemptKey.Int(s.Attempt)}
}

// startRun starts the span of a step's run as a child of its claim's span, on ctx (the
// handler's context).
func startRun(ctx context.Context, s claimedStep, name string) (context.Context, trace.Span) {
	if !tracing.Enabled() {
		return ctx, noop.Span{}
	}
	return tracing.Tracer().Start(trace.ContextWithSpanContext(ctx, s.trace), "orchestration.run",
		trace.WithAttributes(append(stepAttributes(s), tracing.StepNameKey.String(name))...))
}

// startRecord starts the record span of each attempt of batch, as a child of its run's span,
// and returns ctx under the first of them.
func startRecord(ctx context.Context, batch []result) (context.Context, []trace.Span) {
	if !tracing.Enabled() {
		return ctx, nil
	}
	spans := make([]trace.Span, len(batch))
	first := ctx
	for i, res := range batch {
		c, span := tracing.Tracer().Start(trace.ContextWithSpanContext(ctx, res.trace), "orchestration.record",
			trace.WithAttributes(append(stepAttributes(res.step), attribute.Int("tasker.record.batch", len(batch)))...))
		if i == 0 {
			first = c
		}
		spans[i] = span
	}
	return first, spans
}

// endRecord ends the record spans of a batch, failed when err is not nil.
func endRecord(spans []trace.Span, err error) {
	for _, span := range spans {
		tracing.End(span, err)
	}
}
