package wal

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// Queue is the WAL waiting to be archived in a pg_wal directory, as
// archive-queue-max measures it.
type Queue struct {
	// Name is the segment being pushed; SegSize and SystemID come from its
	// header.
	Name     Name
	SegSize  uint32
	SystemID uint64
	// Ready is the number of segments with a .ready file in
	// archive_status, the one being pushed included (counted once even
	// when its .ready is missing, e.g. a push by hand).
	Ready int
	// Bytes is Ready times the segment size.
	Bytes int64
}

// ErrNotDroppable means that the file is not a WAL segment that
// archive-queue-max may drop: timeline history files, backup history files
// and partial segments are never dropped.
var ErrNotDroppable = errors.New("only complete WAL segments are ever dropped")

// MeasureQueue measures the WAL waiting in the pg_wal directory of the
// segment at path: the segments whose .ready file is in archive_status,
// times the segment size of path's header. It refuses (ErrNotDroppable,
// ErrBadInput) what is not a complete, valid segment. It reads one header
// and one directory, whatever the backlog.
func MeasureQueue(path string) (Queue, error) {
	n, err := ParseName(filepath.Base(path))
	if err != nil {
		return Queue{}, fmt.Errorf("%w: %w", ErrBadInput, err)
	}
	if n.Kind != KindSegment {
		return Queue{}, fmt.Errorf("%s is a %s: %w", n.Raw, n.Kind, ErrNotDroppable)
	}
	f, err := openRegular(path)
	if err != nil {
		return Queue{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return Queue{}, fmt.Errorf("%w: %w", ErrBadInput, err)
	}
	head := make([]byte, LongHeaderSize)
	if _, err := io.ReadFull(f, head); err != nil {
		return Queue{}, fmt.Errorf("%w: read the header of %s: %w", ErrBadInput, n.Raw, err)
	}
	h, err := ParseHeader(head)
	if err == nil {
		err = CheckSegment(n, fi.Size(), h)
	}
	if err != nil {
		return Queue{}, fmt.Errorf("%w: %s: %w", ErrBadInput, n.Raw, err)
	}
	q := Queue{Name: n, SegSize: h.SegSize, SystemID: h.SystemID}
	ents, err := os.ReadDir(filepath.Join(filepath.Dir(path), "archive_status"))
	if err != nil {
		return Queue{}, fmt.Errorf("measure the archive queue: %w", err)
	}
	self := false
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".ready")
		if !ok {
			continue
		}
		if pn, err := ParseName(name); err != nil || pn.Kind != KindSegment {
			continue // history and backup files are a few hundred bytes
		}
		q.Ready++
		self = self || name == n.Raw
	}
	if !self {
		q.Ready++
	}
	q.Bytes = int64(q.Ready) * int64(h.SegSize)
	return q, nil
}
