package repo

import (
	"bufio"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"

	"github.com/pgark/pgark/crypto"
)

// Object format. Every object pgark writes starts with a 7-byte outer header:
//
//	"PGARK" 0x01 <encryption>
//
// where encryption is 0 (none) or 1 (age). The rest is the body: the age
// stream when encrypted, else the inner stream directly. The inner stream
// starts with one byte naming the compression, 0 (none) or 1 (zstd, frames
// with content checksums), followed by the compressed data. The compression
// byte sits under the encryption, so it is authenticated with the data. A
// change of settings never hides old objects: each records its own codec.
const (
	objMagic   = "PGARK\x01"
	encNone    = 0
	encAge     = 1
	compNone   = 0
	compZstd   = 1
	headerSize = len(objMagic) + 1
)

// Codec says how to write objects.
type Codec struct {
	Compression string // "zstd" or "none"
	Level       int    // zstd level 1-22 (mapped to the encoder's speed classes)
	Recipients  *crypto.Recipients
}

// ValidateCompression checks a compression name and level.
func ValidateCompression(name string, level int) error {
	switch name {
	case "zstd":
		if level < 1 || level > 22 {
			return fmt.Errorf("zstd level %d out of range 1-22", level)
		}
	case "none":
	default:
		return fmt.Errorf("unknown compression %q (use zstd or none)", name)
	}
	return nil
}

type objectWriter struct {
	enc io.WriteCloser // age writer or nil
	zw  *zstd.Encoder  // or nil
	w   io.Writer      // where plaintext goes
}

// NewObjectWriter writes an object's header to w and returns the writer that
// takes the plaintext. Close flushes compression and encryption but does not
// close w.
func NewObjectWriter(w io.Writer, c Codec) (io.WriteCloser, error) {
	if err := ValidateCompression(c.Compression, c.Level); err != nil {
		return nil, err
	}
	hdr := []byte(objMagic + "\x00")
	if c.Recipients.Len() > 0 {
		hdr[len(objMagic)] = encAge
	}
	if _, err := w.Write(hdr); err != nil {
		return nil, err
	}
	ow := &objectWriter{w: w}
	if c.Recipients.Len() > 0 {
		e, err := c.Recipients.Encrypt(w)
		if err != nil {
			return nil, err
		}
		ow.enc, ow.w = e, e
	}
	comp := byte(compNone)
	if c.Compression == "zstd" {
		comp = compZstd
	}
	if _, err := ow.w.Write([]byte{comp}); err != nil {
		return nil, err
	}
	if comp == compZstd {
		zw, err := zstd.NewWriter(ow.w,
			zstd.WithEncoderLevel(zstd.EncoderLevelFromZstd(c.Level)),
			zstd.WithEncoderCRC(true),
			// Two goroutines: the next block is compressed while the
			// previous one is written (and encrypted). Measured in
			// bench/wal.sh; memory stays bounded (two blocks in flight).
			zstd.WithEncoderConcurrency(2))
		if err != nil {
			return nil, fmt.Errorf("zstd encoder: %w", err)
		}
		ow.zw, ow.w = zw, zw
	}
	return ow, nil
}

func (o *objectWriter) Write(p []byte) (int, error) { return o.w.Write(p) }

// ReadFrom lets io.Copy feed the zstd encoder without an extra buffer.
func (o *objectWriter) ReadFrom(r io.Reader) (int64, error) {
	if o.zw != nil {
		return o.zw.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{o.w}, r)
}

func (o *objectWriter) Close() error {
	if o.zw != nil {
		if err := o.zw.Close(); err != nil {
			return fmt.Errorf("zstd: %w", err)
		}
	}
	if o.enc != nil {
		if err := o.enc.Close(); err != nil {
			return fmt.Errorf("age: %w", err)
		}
	}
	return nil
}

// ErrCorrupt is wrapped by errors that mean the object's bytes are damaged
// or not a pgark object.
var ErrCorrupt = errors.New("corrupt object")

// ReadOptions says how to read objects.
type ReadOptions struct {
	Identities *crypto.Identities
	// RequireEncrypted refuses unencrypted objects (an encrypted repository
	// fails closed: an unencrypted object there was not written by pgark).
	RequireEncrypted bool
}

type objectReader struct {
	r  io.Reader
	zr *zstd.Decoder
}

func (o *objectReader) Read(p []byte) (int, error) {
	n, err := o.r.Read(p)
	if err != nil && err != io.EOF {
		err = fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	return n, err
}

// WriteTo lets io.Copy drain the zstd decoder without an extra buffer.
func (o *objectReader) WriteTo(w io.Writer) (int64, error) {
	if o.zr == nil {
		return io.Copy(w, struct{ io.Reader }{o})
	}
	n, err := o.zr.WriteTo(w)
	if err != nil {
		var pe *writeError
		if errors.As(err, &pe) {
			return n, pe.err
		}
		err = fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	return n, err
}

// writeError marks errors of the destination writer, which must not be
// reported as corruption of the object.
type writeError struct{ err error }

func (e *writeError) Error() string { return e.err.Error() }
func (e *writeError) Unwrap() error { return e.err }

// MarkWriteErrors wraps w so that its errors pass through an object reader's
// WriteTo unchanged (and are not taken for corruption).
func MarkWriteErrors(w io.Writer) io.Writer { return writeErrMarker{w} }

type writeErrMarker struct{ w io.Writer }

func (m writeErrMarker) Write(p []byte) (int, error) {
	n, err := m.w.Write(p)
	if err != nil {
		err = &writeError{err}
	}
	return n, err
}

func (o *objectReader) Close() error {
	if o.zr != nil {
		o.zr.Close()
	}
	return nil
}

// NewObjectReader reads an object's header from r and returns the reader of
// its plaintext. Decryption is authenticated (age), zstd frames carry content
// checksums; damage surfaces as an error wrapping ErrCorrupt (or an age
// error) from Read. Callers still compare the plaintext hash and size with
// the object's metadata.
func NewObjectReader(r io.Reader, o ReadOptions) (io.ReadCloser, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	hdr := make([]byte, headerSize)
	if _, err := io.ReadFull(br, hdr); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("%w: truncated header", ErrCorrupt)
		}
		return nil, err
	}
	if string(hdr[:len(objMagic)]) != objMagic {
		return nil, fmt.Errorf("%w: not a pgark object (bad magic)", ErrCorrupt)
	}
	var body io.Reader = br
	switch hdr[len(objMagic)] {
	case encNone:
		if o.RequireEncrypted {
			return nil, fmt.Errorf("%w: the object is not encrypted but the repository is: refusing it (it was not written by pgark for this repository)", ErrCorrupt)
		}
	case encAge:
		pr, err := o.Identities.Decrypt(br)
		if err != nil {
			if errors.Is(err, crypto.ErrNoMatchingIdentity) || errors.Is(err, crypto.ErrMissingIdentity) {
				return nil, err
			}
			return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
		}
		body = pr
	default:
		return nil, fmt.Errorf("%w: unknown encryption %d", ErrCorrupt, hdr[len(objMagic)])
	}
	comp := make([]byte, 1)
	if _, err := io.ReadFull(body, comp); err != nil {
		return nil, fmt.Errorf("%w: truncated body: %w", ErrCorrupt, err)
	}
	switch comp[0] {
	case compNone:
		return &objectReader{r: body}, nil
	case compZstd:
		zr, err := zstd.NewReader(body,
			zstd.WithDecoderConcurrency(2),
			zstd.WithDecoderLowmem(true),
			zstd.WithDecoderMaxWindow(64<<20))
		if err != nil {
			return nil, fmt.Errorf("zstd decoder: %w", err)
		}
		return &objectReader{r: zr, zr: zr}, nil
	default:
		return nil, fmt.Errorf("%w: unknown compression %d", ErrCorrupt, comp[0])
	}
}
