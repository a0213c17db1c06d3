package health

import (
	"fmt"

	"github.com/pgark/pgark/wal"
)

// SegmentDistance is how many segments separate two WAL file names: the
// segment number of to minus that of from. Segment numbers count from the
// start of the WAL stream whatever the timeline (a new timeline continues
// the numbering of its parent), so across a timeline switch the distance is
// the one along the current timeline. .partial and .backup files count as
// the segment they belong to; history files have no position.
func SegmentDistance(from, to string, segSize uint32) (int64, error) {
	if !wal.ValidSegSize(segSize) {
		return 0, fmt.Errorf("WAL segment size %d is not valid", segSize)
	}
	a, err := segNo(from, segSize)
	if err != nil {
		return 0, err
	}
	b, err := segNo(to, segSize)
	if err != nil {
		return 0, err
	}
	return int64(b) - int64(a), nil
}

func segNo(name string, segSize uint32) (uint64, error) {
	n, err := wal.ParseName(name)
	if err != nil {
		return 0, err
	}
	if n.Kind == wal.KindHistory {
		return 0, fmt.Errorf("%s is a timeline history file, not a position in the WAL", name)
	}
	no, ok := n.SegNo(segSize)
	if !ok {
		return 0, fmt.Errorf("%s is not a segment name for %d-byte segments", name, segSize)
	}
	return no, nil
}

// ArchiveLag is the number of complete segments not archived yet: those
// after lastArchived and before current, the segment being written (which
// cannot be archived before it is complete). An idle server that archived
// everything it completed has lag 0, however long ago that was.
func ArchiveLag(lastArchived, current string, segSize uint32) (int64, error) {
	d, err := SegmentDistance(lastArchived, current, segSize)
	if err != nil {
		return 0, err
	}
	return max(d-1, 0), nil
}
