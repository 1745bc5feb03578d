package store

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"

	"github.com/taskerhq/tasker/internal/database"
	"github.com/taskerhq/tasker/internal/events"
)

// The engine's transactions notify the transitions they write themselves (migration 00063).
// Everywhere else the tables' statement triggers do: one notification per inserting
// statement and 50 rows, a JSON document built in SQL, with each step's task looked up. That
// building cost a third of a millisecond per statement, three statements of every batch the
// engine records (drains with the notifications turned off ran 7-27 % faster). In an engine
// transaction (its connections carry tasker.writer_notifies = on, which the triggers read),
// each transition the Store writes is noted instead, with what the writer knows (a step's
// task comes with its move), and before the transaction commits one statement sends the same
// notifications: per channel, the transaction's rows in id order, 50 to a notification, in the
// triggers' format ({"rows": [{"id", "task_id", "step_id", "from", "to"}]}; no step_id for a
// task). Like the triggers' notifications they are delivered only if the transaction commits.

// writerNotifiesSetting names the setting that tells the transition tables' notification
// triggers that the writing transaction notifies its transitions itself.
const writerNotifiesSetting = "tasker.writer_notifies"

// notifyChunk is the most transition rows one notification carries (as the triggers').
const notifyChunk = 50

// transitionNote is one written transition, as its notification describes it.
type transitionNote struct {
	id, taskID, stepID int64 // stepID 0 for a task's transition
	from               *string
	to                 string
}

// transitionNotes are the transitions an engine transaction wrote, to be notified at its end.
type transitionNotes struct {
	steps, tasks []transitionNote
}

// note adds the transitions rows of owner o, written with the ids of written (matched by
// owner and sort key). A step's row names its task (TransitionRow.TaskID); those that do not
// have theirs looked up, in one statement.
func (n *transitionNotes) note(ctx context.Context, s *Store, o Owner, rows []TransitionRow, written []WrittenTransition) error {
	type key struct {
		owner   int64
		sortKey int
	}
	ids := make(map[key]int64, len(written))
	for _, w := range written {
		ids[key{w.Owner, w.SortKey}] = w.ID
	}
	step := o == StepOwner
	var tasks map[int64]int64
	if step {
		var unknown []int64
		for _, r := range rows {
			if r.TaskID == 0 && !slices.Contains(unknown, r.Owner) {
				unknown = append(unknown, r.Owner)
			}
		}
		if len(unknown) > 0 {
			pairs, err := queryRows(ctx, s, func(p *[2]int64) []any { return []any{&p[0], &p[1]} },
				`SELECT workflow_step_id, task_id FROM tasker_workflow_steps WHERE workflow_step_id = ANY(?::bigint[])`,
				database.Array[int64](unknown))
			if err != nil {
				return fmt.Errorf("reading the tasks of steps to notify: %w", err)
			}
			tasks = make(map[int64]int64, len(pairs))
			for _, p := range pairs {
				tasks[p[0]] = p[1]
			}
		}
	}
	for _, r := range rows {
		id, ok := ids[key{r.Owner, r.SortKey}]
		if !ok {
			return fmt.Errorf("notifying transitions: no row written for owner %d, sort key %d", r.Owner, r.SortKey)
		}
		t := transitionNote{id: id, taskID: r.Owner, from: r.FromState, to: r.ToState}
		if step {
			t.stepID, t.taskID = r.Owner, r.TaskID
			if t.taskID == 0 {
				t.taskID = tasks[r.Owner]
			}
			n.steps = append(n.steps, t)
		} else {
			n.tasks = append(n.tasks, t)
		}
	}
	return nil
}

// send sends the noted transitions' notifications in one statement (none when nothing was
// noted).
func (n *transitionNotes) send(ctx context.Context, s *Store) error {
	var channels, payloads []string
	for _, c := range []struct {
		channel string
		rows    []transitionNote
	}{{events.ChannelStepTransitions, n.steps}, {events.ChannelTaskTransitions, n.tasks}} {
		for _, p := range notePayloads(c.rows) {
			channels = append(channels, c.channel)
			payloads = append(payloads, p)
		}
	}
	if len(payloads) == 0 {
		return nil
	}
	if err := execRaw(ctx, s, `SELECT count(pg_notify(n.channel, n.payload)) FROM unnest(?::text[], ?::text[]) AS n(channel, payload)`,
		database.Array[string](channels), database.Array[string](payloads)); err != nil {
		return fmt.Errorf("notifying %d step and %d task transitions: %w", len(n.steps), len(n.tasks), err)
	}
	return nil
}

// notePayloads encodes rows (sorted by id here) as the notification payloads of one channel,
// notifyChunk rows each.
func notePayloads(rows []transitionNote) []string {
	slices.SortFunc(rows, func(a, b transitionNote) int { return cmp.Compare(a.id, b.id) })
	var out []string
	for len(rows) > 0 {
		chunk := rows[:min(notifyChunk, len(rows))]
		rows = rows[len(chunk):]
		b := make([]byte, 0, 16+96*len(chunk))
		b = append(b, `{"rows":[`...)
		for i, r := range chunk {
			if i > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendInt(append(b, `{"id":`...), r.id, 10)
			b = strconv.AppendInt(append(b, `,"task_id":`...), r.taskID, 10)
			if r.stepID != 0 {
				b = strconv.AppendInt(append(b, `,"step_id":`...), r.stepID, 10)
			}
			b = append(b, `,"from":`...)
			if r.from == nil {
				b = append(b, "null"...)
			} else {
				b = strconv.AppendQuote(b, *r.from)
			}
			b = strconv.AppendQuote(append(b, `,"to":`...), r.to)
			b = append(b, '}')
		}
		out = append(out, string(append(b, "]}"...)))
	}
	return out
}
