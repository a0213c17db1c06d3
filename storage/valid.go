package storage

import (
	"errors"
	"fmt"
	"strings"
)

// TempPrefix starts the names of a backend's temporary files (the local
// store writes ".tmp-*" files next to their final names, and keeps its Swap
// lock files under such names too). No key segment may start with it, in
// any backend: such a key could collide with a temporary file, would be
// hidden from List on the local store, and a repository must hold the same
// keys whatever its store.
const TempPrefix = ".tmp-"

// ValidKey checks a key against the rules that every backend applies: one
// or more non-empty '/'-separated segments, none of them "." or "..", none
// starting with TempPrefix, and no NUL byte. The error is a PermanentError
// (never ErrNotFound or ErrExists).
func ValidKey(key string) error {
	var reason string
	switch {
	case key == "":
		reason = "empty key"
	case strings.HasPrefix(key, "/"):
		reason = "key starts with '/'"
	case strings.HasSuffix(key, "/"):
		reason = "key ends with '/'"
	case strings.IndexByte(key, 0) >= 0:
		reason = "key contains a NUL byte"
	default:
		for seg := range strings.SplitSeq(key, "/") {
			switch {
			case seg == "":
				reason = "key has an empty path segment"
			case seg == "." || seg == "..":
				reason = "key has a '.' or '..' path segment"
			case strings.HasPrefix(seg, TempPrefix):
				reason = "key has a path segment starting with " + TempPrefix
			}
			if reason != "" {
				break
			}
		}
	}
	if reason == "" {
		return nil
	}
	return &PermanentError{Err: fmt.Errorf("invalid key %q: %s", key, reason)}
}

// ValidMeta checks metadata: keys are lower-case ASCII letters, digits and
// '-', values printable ASCII (what S3 user metadata carries unchanged).
// The error is a PermanentError.
func ValidMeta(meta map[string]string) error {
	for k, v := range meta {
		if k == "" {
			return &PermanentError{Err: errors.New("invalid metadata: empty key")}
		}
		for _, c := range []byte(k) {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return &PermanentError{Err: fmt.Errorf("invalid metadata key %q: only a-z, 0-9 and '-' are allowed", k)}
			}
		}
		for _, c := range []byte(v) {
			if c < 0x20 || c > 0x7e {
				return &PermanentError{Err: fmt.Errorf("invalid metadata value for %q: only printable ASCII is allowed", k)}
			}
		}
	}
	return nil
}
