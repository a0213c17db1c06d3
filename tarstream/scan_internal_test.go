package tarstream

import (
	"fmt"
	"strings"
	"testing"
)

// This file tests the scanner from inside: tarstreamtest imports tarstream, so these
// tests carry their own copies of its header helpers.

func TestTarScanBase256Huge(t *testing.T) {
	// A 9 GiB member: the scanner knows its extent from the header, and does
	// not allocate for it.
	const big = 9 << 30
	s, _ := NewScanner("CRC32C", nil)
	if _, err := s.Write(rawHeader("base/1/16385", '0', base256(big))); err != nil {
		t.Fatal(err)
	}
	if s.state != tsData || s.cur.Size != big || s.cur.DataEnd != 512+big {
		t.Fatalf("state %d cur %+v", s.state, s.cur)
	}
	if _, err := s.Write(make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err == nil || !strings.Contains(err.Error(), "truncated inside member") {
		t.Fatalf("Close = %v", err)
	}
}

func rawHeader(name string, typ byte, size []byte) []byte {
	var b [512]byte
	copy(b[0:], name)
	copy(b[100:], "0000600\x00")
	copy(b[108:], "0000000\x00")
	copy(b[116:], "0000000\x00")
	copy(b[124:136], size)
	copy(b[136:], "14000000000\x00")
	b[156] = typ
	copy(b[257:], "ustar\x00")
	copy(b[263:], "00")
	fixChecksum(b[:])
	return b[:]
}

func fixChecksum(b []byte) {
	copy(b[148:156], "        ")
	var sum int64
	for _, c := range b[:512] {
		sum += int64(c)
	}
	copy(b[148:156], fmt.Sprintf("%06o\x00 ", sum))
}

func base256(n int64) []byte {
	f := make([]byte, 12)
	for i := 11; i > 0; i-- {
		f[i] = byte(n)
		n >>= 8
	}
	f[0] = 0x80
	return f
}
