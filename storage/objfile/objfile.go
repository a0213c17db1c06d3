package objfile

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/pgark/pgark/storage"
)

const (
	// Magic starts every object file.
	Magic = "PGARKOB\x01"
	// MaxMetaLen bounds the JSON metadata in a header.
	MaxMetaLen = 64 << 10
	// FixedHeaderLen is the magic plus the length field.
	FixedHeaderLen = len(Magic) + 4
)

// CorruptError reports a file that is not a well-formed object file.
type CorruptError struct{ What string }

func (e *CorruptError) Error() string { return e.What }

// EncodeHeader returns the header for meta. Metadata larger than MaxMetaLen
// is a storage.PermanentError.
func EncodeHeader(meta map[string]string) ([]byte, error) {
	var js []byte
	if len(meta) > 0 {
		var err error
		if js, err = json.Marshal(meta); err != nil {
			return nil, err
		}
	}
	if len(js) > MaxMetaLen {
		return nil, &storage.PermanentError{Err: fmt.Errorf("metadata too large (%d bytes, at most %d)", len(js), MaxMetaLen)}
	}
	h := make([]byte, FixedHeaderLen, FixedHeaderLen+len(js))
	copy(h, Magic)
	binary.BigEndian.PutUint32(h[len(Magic):], uint32(len(js)))
	return append(h, js...), nil
}

// ReadFixed reads the fixed part of a header from r and returns the length
// of the whole header. A malformed or short header is a *CorruptError; other
// read errors are returned as they are.
func ReadFixed(r io.Reader) (metaLen uint32, headerLen int64, err error) {
	var fixed [FixedHeaderLen]byte
	if _, err := io.ReadFull(r, fixed[:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return 0, 0, &CorruptError{"file shorter than the header"}
		}
		return 0, 0, err
	}
	if string(fixed[:len(Magic)]) != Magic {
		return 0, 0, &CorruptError{"bad magic"}
	}
	n := binary.BigEndian.Uint32(fixed[len(Magic):])
	if n > MaxMetaLen {
		return 0, 0, &CorruptError{fmt.Sprintf("metadata length %d exceeds %d", n, MaxMetaLen)}
	}
	return n, int64(FixedHeaderLen) + int64(n), nil
}

// ReadHeader reads a whole header from r, leaving r at the payload. It
// returns the metadata (never nil) and the header's length. A malformed
// header is a *CorruptError; other read errors are returned as they are.
func ReadHeader(r io.Reader) (map[string]string, int64, error) {
	n, hlen, err := ReadFixed(r)
	if err != nil {
		return nil, 0, err
	}
	meta := map[string]string{}
	if n > 0 {
		js := make([]byte, n)
		if _, err := io.ReadFull(r, js); err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return nil, 0, &CorruptError{"truncated metadata"}
			}
			return nil, 0, err
		}
		if err := json.Unmarshal(js, &meta); err != nil {
			return nil, 0, &CorruptError{"bad metadata: " + err.Error()}
		}
	}
	return meta, hlen, nil
}

// Version names one stored version of an object: a hash of its whole file,
// header included.
func Version(file []byte) string {
	h := sha256.Sum256(file)
	return hex.EncodeToString(h[:16])
}
