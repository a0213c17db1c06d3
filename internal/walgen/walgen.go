// Package walgen makes synthetic WAL for benchmarks and tests, when real
// segments are not at hand.
package walgen

import (
	"encoding/binary"
	"math/rand/v2"
	"strings"
)

// PgbenchLike returns size bytes that look like the WAL of pgbench's
// TPC-B-like transactions (it compresses about as well, 10:1 with zstd -3):
// 8 KiB pages of records (updates of accounts, tellers and branches, history
// inserts, commits), some with full-page images of accounts pages.
func PgbenchLike(size int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	le := binary.LittleEndian
	out := make([]byte, 0, size)
	rec := make([]byte, 0, 9000)
	var pending []byte
	xid := uint32(1000)
	lsn := uint64(0x3000000)
	filler := []byte(strings.Repeat(" ", 84))
	tuple := func(b []byte, aid, bid, bal int32) []byte {
		b = le.AppendUint32(b, xid)
		b = le.AppendUint32(b, 0)
		b = le.AppendUint16(b, 0)
		b = le.AppendUint16(b, uint16(r.IntN(64)))
		b = append(b, 4, 0x03, 0x09, 0x18)
		b = le.AppendUint32(b, uint32(aid))
		b = le.AppendUint32(b, uint32(bid))
		b = le.AppendUint32(b, uint32(bal))
		return append(b, filler...)
	}
	for len(out) < size {
		for len(pending) < 64<<10 {
			xid++
			aid := int32(r.IntN(2000000))
			bal := int32(r.IntN(10000) - 5000)
			for k := range 5 {
				rec = le.AppendUint32(rec[:0], 0) // total length, below
				rec = le.AppendUint32(rec, xid)
				rec = le.AppendUint64(rec, lsn-uint64(r.IntN(200)))
				rec = append(rec, 0x10, byte(0x20+k), 0, 0)
				rec = le.AppendUint32(rec, r.Uint32()) // CRC
				rec = append(rec, 0, 0, 0x7f, 0xf3, 0x06, 0, 0)
				rec = le.AppendUint32(rec, uint32(16384+k))
				rec = le.AppendUint32(rec, uint32(aid/61))
				switch {
				case k == 4: // commit
					rec = le.AppendUint64(rec, uint64(780000000000000+int64(xid)*1000+int64(r.IntN(1000))))
				case r.IntN(40) == 0: // full-page image
					base := aid / 61 * 61
					for t := range int32(61) {
						rec = tuple(rec, base+t, base/100000+1, int32(r.IntN(3)*r.IntN(5000)))
					}
				default:
					rec = tuple(rec, aid, aid/100000+1, bal)
				}
				le.PutUint32(rec, uint32(len(rec)))
				for len(rec)%8 != 0 {
					rec = append(rec, 0)
				}
				pending = append(pending, rec...)
				lsn += uint64(len(rec))
			}
		}
		for len(pending) >= 8192-24 && len(out) < size {
			page := make([]byte, 24, 8192)
			le.PutUint16(page[0:], 0xD110)
			le.PutUint32(page[4:], 1)
			le.PutUint64(page[8:], uint64(len(out)))
			out = append(out, append(page, pending[:8192-24]...)...)
			pending = pending[8192-24:]
		}
	}
	return out[:size]
}
