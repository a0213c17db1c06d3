package tarstream

import (
	"errors"
	"fmt"
	"io"
)

// Part describes one part of a tar stream cut by a Splitter.
type Part struct {
	Index       int    // 0, 1, ...
	Offset      int64  // stream offset of its first byte
	Bytes       int64  // its size
	Members     int    // complete members in it
	FirstMember string // name of its first member ("" if none)
	Last        bool   // it holds the end-of-archive marker (the stream's last part)
}

// SplitOptions configures a Splitter.
type SplitOptions struct {
	// Limit is the maximum size of a part. A part holds as many complete
	// members as fit; a member larger than Limit gets a part of its own, and
	// the end-of-archive marker (1024 bytes, and any zero bytes after it)
	// always joins the last member's part. So a part exceeds Limit only when
	// it holds a single member larger than Limit, or by the marker.
	Limit int64
	// Checksum is the algorithm for Member.Checksum (see NewScanner).
	Checksum string
	// NewPart is called before the first byte of part n is written; the
	// part's bytes are then written to the writer it returns.
	NewPart func(n int, offset int64) (io.Writer, error)
	// EndPart is called when part p is complete: when the next part starts,
	// or from Close for the last part.
	EndPart func(p Part) error
	// Member, if set, is called for every completed member, after its last
	// byte was written to its part.
	Member func(Member) error
}

// Splitter is an io.Writer that cuts the tar stream written to it into
// consecutive parts at member boundaries, without changing a byte:
// concatenating the parts gives the stream, and each part is a sequence of
// complete tar members (the last one followed by the end-of-archive marker).
//
// It holds back only a member's header blocks until the member's extent is
// known, then decides whether the member still fits the current part, and
// streams the member's data straight into the part's writer.
//
// Use: io.Copy(splitter, r); then Close, which checks that the stream ended
// with the end-of-archive marker and ends the last part. After an error the
// current part is left as it is (neither ended nor closed): abort it. In a
// basebackup.Handler (package backup does this):
//
//	func (h *handler) Archive(name, location string, r io.Reader) error {
//		sp, err := NewSplitter(SplitOptions{
//			Limit:    h.partLimit,
//			Checksum: h.manifestChecksums, // as sent in MANIFEST_CHECKSUMS
//			NewPart: func(n int, off int64) (io.Writer, error) {
//				return h.startObject(catalog.PartKey(h.id, name, n)) // streams to the store
//			},
//			EndPart: func(p Part) error {
//				return h.finishObject(p) // p.Bytes, p.Members, p.FirstMember -> ObjectRef
//			},
//			Member: func(m Member) error { return h.files.Add(name, m) },  // *manifest.Files
//		})
//		if err != nil {
//			return err
//		}
//		if _, err := io.Copy(sp, r); err != nil {
//			return err
//		}
//		return sp.Close()
//	}
//
// and when the manifest has arrived: h.manifest.Check(h.files).
type Splitter struct {
	o      SplitOptions
	sc     *Scanner
	hold   []byte
	part   io.Writer
	cur    Part
	nparts int
	closed bool
	err    error
}

// NewSplitter returns a splitter; Limit must be positive and NewPart and
// EndPart set.
func NewSplitter(o SplitOptions) (*Splitter, error) {
	if o.Limit <= 0 {
		return nil, fmt.Errorf("tar splitter: part limit %d must be positive", o.Limit)
	}
	if o.NewPart == nil || o.EndPart == nil {
		return nil, errors.New("tar splitter: NewPart and EndPart are required")
	}
	sc, err := NewScanner(o.Checksum, o.Member)
	if err != nil {
		return nil, err
	}
	return &Splitter{o: o, sc: sc}, nil
}

// Write consumes p (see Splitter).
func (t *Splitter) Write(p []byte) (int, error) {
	if t.err != nil {
		return 0, t.err
	}
	if t.closed {
		return 0, errors.New("tar splitter: write after Close")
	}
	total := 0
	for {
		n, ev, held, err := t.sc.step(p[total:])
		chunk := p[total : total+n]
		total += n
		if n > 0 {
			if held {
				t.hold = append(t.hold, chunk...)
			} else if werr := t.emit(chunk); werr != nil {
				return total, werr
			}
		}
		if err != nil {
			t.err = err
			return total, err
		}
		switch ev {
		case teHeader:
			m := t.sc.cur
			if t.part != nil && t.cur.Bytes > 0 && t.cur.Bytes+(m.DataEnd-m.Offset) > t.o.Limit {
				if err := t.endPart(); err != nil {
					return total, err
				}
			}
			if err := t.ensurePart(m.Offset); err != nil {
				return total, err
			}
			t.cur.Members++
			if t.cur.Members == 1 {
				t.cur.FirstMember = m.Name
			}
			if err := t.flushHold(); err != nil {
				return total, err
			}
		case teEnd:
			if err := t.ensurePart(t.sc.EndOffset()); err != nil {
				return total, err
			}
			t.cur.Last = true
			if err := t.flushHold(); err != nil {
				return total, err
			}
		case teNone:
			if total == len(p) {
				return total, nil
			}
			if n == 0 {
				t.err = errors.New("tar splitter: internal error: no progress")
				return total, t.err
			}
		}
	}
}

func (t *Splitter) ensurePart(off int64) error {
	if t.part != nil {
		return nil
	}
	w, err := t.o.NewPart(t.nparts, off)
	if err != nil {
		t.err = err
		return err
	}
	if w == nil {
		t.err = errors.New("tar splitter: NewPart returned no writer")
		return t.err
	}
	t.part = w
	t.cur = Part{Index: t.nparts, Offset: off}
	t.nparts++
	return nil
}

func (t *Splitter) endPart() error {
	p := t.cur
	t.part = nil
	if err := t.o.EndPart(p); err != nil {
		t.err = err
		return err
	}
	return nil
}

func (t *Splitter) flushHold() error {
	err := t.emit(t.hold)
	if cap(t.hold) > 64<<10 {
		t.hold = nil
	} else {
		t.hold = t.hold[:0]
	}
	return err
}

func (t *Splitter) emit(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	if t.part == nil {
		t.err = errors.New("tar splitter: internal error: data outside a part")
		return t.err
	}
	n, err := t.part.Write(b)
	t.cur.Bytes += int64(n)
	if err == nil && n != len(b) {
		err = io.ErrShortWrite
	}
	if err != nil {
		t.err = fmt.Errorf("writing part %d: %w", t.cur.Index, err)
		return t.err
	}
	return nil
}

// Close checks that the stream ended after the end-of-archive marker and
// ends the last part. It does not close the parts' writers (EndPart does
// what the caller wants).
func (t *Splitter) Close() error {
	if t.err != nil {
		return t.err
	}
	if t.closed {
		return nil
	}
	if err := t.sc.Close(); err != nil {
		t.err = err
		return err
	}
	t.closed = true
	return t.endPart()
}
