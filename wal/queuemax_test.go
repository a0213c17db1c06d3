package wal

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestMeasureQueue: the queue is the .ready segments times the segment
// size of the header, the segment being pushed counted once whether or not
// its .ready is there; .ready files of history and backup files do not
// count; history, backup and partial files are never droppable.
func TestMeasureQueue(t *testing.T) {
	dir, names := pgWal(t, 5)
	q, err := MeasureQueue(filepath.Join(dir, names[0]))
	if err != nil {
		t.Fatal(err)
	}
	if q.Ready != 5 || q.Bytes != 5<<20 || q.SegSize != 1<<20 || q.SystemID != 42 || q.Name.Raw != names[0] {
		t.Fatalf("queue %+v, want 5 segments of 1 MiB of cluster 42", q)
	}
	// Archived ones (.done) do not count; a push by hand of a segment
	// without .ready counts it once.
	for _, n := range names[:2] {
		if err := os.Rename(filepath.Join(dir, "archive_status", n+".ready"), filepath.Join(dir, "archive_status", n+".done")); err != nil {
			t.Fatal(err)
		}
	}
	ready(t, dir, "00000002.history")
	ready(t, dir, names[2]+".00000028.backup")
	if q, err = MeasureQueue(filepath.Join(dir, names[0])); err != nil || q.Ready != 4 || q.Bytes != 4<<20 {
		t.Fatalf("after two archived: %+v, %v; want 4 (3 ready and the one pushed)", q, err)
	}
	for _, name := range []string{"00000002.history", names[2] + ".00000028.backup", names[3] + ".partial"} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("START WAL LOCATION: 0/3000028\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := MeasureQueue(p); !errors.Is(err, ErrNotDroppable) {
			t.Errorf("%s: %v, want ErrNotDroppable", name, err)
		}
	}
	// Not a segment of the size its header says: refused.
	short := filepath.Join(dir, SegmentFileName(1, 9, 1<<20))
	if err := os.WriteFile(short, make([]byte, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := MeasureQueue(short); !errors.Is(err, ErrBadInput) {
		t.Errorf("a truncated segment: %v, want ErrBadInput", err)
	}
}
