package tarstream

import (
	"errors"
	"fmt"
	"io"
)

// FilterOptions configures a Filter.
type FilterOptions struct {
	// Checksum is the algorithm for Member.Checksum (see NewScanner).
	Checksum string
	// Skip is called when a member's headers are complete (its name, size
	// and times known, its checksum not yet): true leaves the member out of
	// the output, header blocks, data and padding.
	Skip func(m Member) bool
	// Skipped is called when a skipped member is complete, with its
	// checksum: an error stops the stream (Write returns it), for a member
	// whose content was not what skipping it assumed.
	Skipped func(m Member) error
	// Member, if set, is called for every completed member, skipped or not.
	Member func(m Member) error
}

// Filter is an io.Writer that copies the tar stream written to it to an
// output writer, leaving out the members Skip chooses, whole: the output is
// a well-formed tar stream of the other members, byte for byte as they came,
// and the end-of-archive marker. Like Splitter it holds back only header
// blocks until a member's extent is known; it never buffers member data.
type Filter struct {
	o       FilterOptions
	sc      *Scanner
	w       io.Writer
	hold    []byte
	skip    bool // the current member is left out
	skipped int64
	err     error
}

// NewFilter returns a filter writing to w; Skip and Skipped must be set.
func NewFilter(w io.Writer, o FilterOptions) (*Filter, error) {
	if o.Skip == nil || o.Skipped == nil {
		return nil, errors.New("tar filter: Skip and Skipped are required")
	}
	f := &Filter{o: o, w: w}
	sc, err := NewScanner(o.Checksum, func(m Member) error {
		if f.skip {
			if err := o.Skipped(m); err != nil {
				return err
			}
		}
		if o.Member != nil {
			return o.Member(m)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	f.sc = sc
	return f, nil
}

// SkippedBytes is the number of stream bytes left out so far.
func (f *Filter) SkippedBytes() int64 { return f.skipped }

// Write consumes p (see Filter).
func (f *Filter) Write(p []byte) (int, error) {
	if f.err != nil {
		return 0, f.err
	}
	total := 0
	for {
		n, ev, held, err := f.sc.step(p[total:])
		chunk := p[total : total+n]
		total += n
		if n > 0 {
			switch {
			case held:
				f.hold = append(f.hold, chunk...)
			case f.skip:
				f.skipped += int64(n)
			default:
				if werr := f.emit(chunk); werr != nil {
					return total, werr
				}
			}
		}
		if err != nil {
			f.err = err
			return total, err
		}
		switch ev {
		case teHeader:
			f.skip = f.o.Skip(f.sc.cur)
			if f.skip {
				f.skipped += int64(len(f.hold))
				f.hold = f.hold[:0]
			} else if err := f.flushHold(); err != nil {
				return total, err
			}
		case teMember:
			f.skip = false
		case teEnd:
			if err := f.flushHold(); err != nil {
				return total, err
			}
		case teNone:
			if total == len(p) {
				return total, nil
			}
			if n == 0 {
				f.err = errors.New("tar filter: internal error: no progress")
				return total, f.err
			}
		}
	}
}

func (f *Filter) flushHold() error {
	err := f.emit(f.hold)
	if cap(f.hold) > 64<<10 {
		f.hold = nil
	} else {
		f.hold = f.hold[:0]
	}
	return err
}

func (f *Filter) emit(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	n, err := f.w.Write(b)
	if err == nil && n != len(b) {
		err = io.ErrShortWrite
	}
	if err != nil {
		f.err = fmt.Errorf("tar filter: %w", err)
		return f.err
	}
	return nil
}

// Close checks that the stream ended after the end-of-archive marker.
func (f *Filter) Close() error {
	if f.err != nil {
		return f.err
	}
	return f.sc.Close()
}
