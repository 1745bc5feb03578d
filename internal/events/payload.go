package events

import "encoding/json"

// decodePayload decodes a notification's payload as json.Unmarshal decodes it into a
// payload. The payloads the database sends (objects of integers, nulls and plain strings, and
// their "rows" arrays of such objects) are read by a small scanner without reflection: a busy
// engine's transitions send thousands of rows a second, and every event is decoded. Anything
// the scanner does not handle exactly as json.Unmarshal would (escapes, non-ASCII text,
// other keys or values) goes through json.Unmarshal.
func decodePayload(data []byte, p *payload) error {
	sc := scanner{data: data}
	var q payload
	if sc.object(&q.Event, &q.Rows, true) && sc.end() {
		*p = q
		return nil
	}
	return json.Unmarshal(data, p)
}

// scanner reads a payload from data at i; every method reports false when the payload is not
// one it reads exactly.
type scanner struct {
	data []byte
	i    int
}

func (s *scanner) space() {
	for s.i < len(s.data) {
		switch s.data[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// next skips white space and reports whether the next byte is c, taking it if so.
func (s *scanner) next(c byte) bool {
	s.space()
	if s.i < len(s.data) && s.data[s.i] == c {
		s.i++
		return true
	}
	return false
}

func (s *scanner) end() bool {
	s.space()
	return s.i == len(s.data)
}

// str reads a string of printable ASCII without escapes.
func (s *scanner) str() (string, bool) {
	if !s.next('"') {
		return "", false
	}
	start := s.i
	for s.i < len(s.data) {
		c := s.data[s.i]
		switch {
		case c == '"':
			s.i++
			return string(s.data[start : s.i-1]), true
		case c == '\\' || c < 0x20 || c > 0x7e:
			return "", false
		}
		s.i++
	}
	return "", false
}

// null takes a null.
func (s *scanner) null() bool {
	s.space()
	if len(s.data)-s.i >= 4 && string(s.data[s.i:s.i+4]) == "null" {
		s.i += 4
		return true
	}
	return false
}

// int reads an integer (or a null, which leaves v as it is).
func (s *scanner) int(v *int64) bool {
	if s.null() {
		return true
	}
	start := s.i
	if s.i < len(s.data) && s.data[s.i] == '-' {
		s.i++
	}
	digits := s.i
	var n int64
	for s.i < len(s.data) && s.data[s.i] >= '0' && s.data[s.i] <= '9' {
		if s.i-digits >= 18 { // could overflow: json.Unmarshal decides
			return false
		}
		n = n*10 + int64(s.data[s.i]-'0')
		s.i++
	}
	if s.i == digits || (s.data[digits] == '0' && s.i-digits > 1) {
		return false
	}
	if s.i < len(s.data) {
		switch s.data[s.i] {
		case '.', 'e', 'E':
			return false
		}
	}
	if s.data[start] == '-' {
		n = -n
	}
	*v = n
	return true
}

// text reads a string (or a null, which leaves v as it is).
func (s *scanner) text(v *string) bool {
	if s.null() {
		return true
	}
	t, ok := s.str()
	*v = t
	return ok
}

// object reads an event's object into ev; at the top level (top), also its "rows" array into
// rows (a null leaves rows nil, an empty array makes it empty).
func (s *scanner) object(ev *Event, rows *[]Event, top bool) bool {
	if !s.next('{') {
		return false
	}
	if s.next('}') {
		return true
	}
	for {
		key, ok := s.str()
		if !ok || !s.next(':') {
			return false
		}
		s.space()
		switch n, t := field(ev, key); {
		case key == "rows":
			ok = top && *rows == nil && s.rows(rows) // a second "rows" goes to json.Unmarshal
		case n != nil:
			ok = s.int(n)
		case t != nil:
			ok = s.text(t)
		default:
			return false
		}
		if !ok {
			return false
		}
		if s.next('}') {
			return true
		}
		if !s.next(',') {
			return false
		}
	}
}

// field is ev's field under a payload key: an integer one (n) or a text one (t); neither
// for another key.
func field(ev *Event, key string) (n *int64, t *string) {
	switch key {
	case "id":
		return &ev.ID, nil
	case "task_id":
		return &ev.TaskID, nil
	case "step_id":
		return &ev.StepID, nil
	case "count":
		return &ev.Count, nil
	case "from":
		return nil, &ev.From
	case "to":
		return nil, &ev.To
	}
	return nil, nil
}

// rows reads a "rows" array.
func (s *scanner) rows(rows *[]Event) bool {
	if s.null() {
		return true
	}
	if !s.next('[') {
		return false
	}
	out := make([]Event, 0, 50)
	if s.next(']') {
		*rows = out
		return true
	}
	for {
		var ev Event
		if !s.object(&ev, nil, false) {
			return false
		}
		out = append(out, ev)
		if s.next(']') {
			*rows = out
			return true
		}
		if !s.next(',') {
			return false
		}
	}
}
