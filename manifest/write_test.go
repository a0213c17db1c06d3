package manifest

import (
	"reflect"
	"strings"
	"testing"

	"github.com/pgark/pgark/wal"
)

func TestMarshalRoundTrip(t *testing.T) {
	for _, version := range []int{1, 2} {
		m := &Manifest{Version: version, Files: []File{
			{Path: "backup_label", Size: 226, LastModified: "2026-12-07 18:00:00 GMT", ChecksumAlgorithm: "CRC32C", Checksum: "0a1b2c3d"},
			{Path: "base/5/16384", Size: 8192, LastModified: "2026-12-07 18:00:00 GMT", ChecksumAlgorithm: "CRC32C", Checksum: "ffffffff"},
			{Path: "odd \"name\" <&>\\", Size: 0, LastModified: "2026-12-07 18:00:00 GMT"},
			{Path: "bad\xffutf8", Size: 1, LastModified: "2026-12-07 18:00:00 GMT", ChecksumAlgorithm: "SHA256", Checksum: strings.Repeat("ab", 32)},
		}, WALRanges: []WALRange{{Timeline: 1, Start: wal.LSN(0x2000028), End: wal.LSN(0x2000100)}, {Timeline: 2, Start: 0x2000100, End: 0x3000000}}}
		if version == 2 {
			m.SystemID = 7450000000000000001
		}
		b, err := Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Parse(b)
		if err != nil {
			t.Fatalf("version %d: %v\n%s", version, err, b)
		}
		got.byPath = nil
		if got.Checksum != m.Checksum || !reflect.DeepEqual(got, m) {
			t.Fatalf("version %d: round trip differs:\n%+v\n%+v", version, got, m)
		}
		if !strings.Contains(string(b), `"Encoded-Path": "626164ff75746638"`) {
			t.Fatalf("a non-UTF-8 path is not hex-encoded:\n%s", b)
		}
	}
	for _, bad := range []*Manifest{
		{Version: 3, WALRanges: []WALRange{{Timeline: 1}}},
		{Version: 2},
		{Version: 2, WALRanges: []WALRange{{Timeline: 1}}, Files: []File{{Path: "a"}, {Path: "a"}}},
		{Version: 2, WALRanges: []WALRange{{Timeline: 1}}, Files: []File{{Path: "../a"}}},
		{Version: 2, WALRanges: []WALRange{{Timeline: 1}}, Files: []File{{Path: "a", ChecksumAlgorithm: "CRC32C", Checksum: "xyz"}}},
	} {
		if _, err := Marshal(bad); err == nil {
			t.Errorf("Marshal accepted %+v", bad)
		}
	}
}
