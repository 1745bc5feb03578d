package handler

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// decodeConfig decodes a config map into dst (a pointer to a struct with json tags), refusing
// unknown keys and values of the wrong type.
func decodeConfig(config map[string]any, dst any) error {
	raw, err := json.Marshal(config)
	if err != nil {
		return fmt.Errorf("encoding config: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return fmt.Errorf("decoding config: %w", err)
	}
	return nil
}

// duration is a config value written as a Go duration string ("2s", "150ms").
type duration time.Duration

func (d *duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("a duration must be a string such as \"2s\", got %s", b)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("bad duration %q: %w", s, err)
	}
	if v < 0 {
		return fmt.Errorf("bad duration %q: negative", s)
	}
	*d = duration(v)
	return nil
}

// resultsJSON encodes an optional config value as the results of a successful attempt: an
// empty object when unset.
func resultsJSON(v any) (json.RawMessage, error) {
	if v == nil {
		return json.RawMessage(`{}`), nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encoding results: %w", err)
	}
	return b, nil
}

var errMissing = errors.New("is required")
