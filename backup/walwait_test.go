package backup

import (
	"strings"
	"testing"

	"github.com/pgark/pgark/manifest"
)

func TestRequiredWAL(t *testing.T) {
	seg := uint32(16 << 20)
	names, err := RequiredWAL([]manifest.WALRange{{Timeline: 2, Start: 0x2000028, End: 0x4000000}}, seg, 0x2000028, 2, true)
	if err != nil {
		t.Fatal(err)
	}
	want := "00000002.history 000000020000000000000002 000000020000000000000003 000000020000000000000002.00000028.backup"
	if strings.Join(names, " ") != want {
		t.Fatalf("got %v", names)
	}
	names, _ = RequiredWAL([]manifest.WALRange{{Timeline: 1, Start: 0x2000028, End: 0x2000100}}, seg, 0x2000028, 1, false)
	if strings.Join(names, " ") != "000000010000000000000002" {
		t.Fatalf("got %v", names)
	}
	if _, err := RequiredWAL(nil, seg, 0, 1, true); err == nil {
		t.Fatal("no ranges accepted")
	}
}
