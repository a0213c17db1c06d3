package incremental

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

var small = Limits{BlockSize: 1024, SegmentBlocks: 64}

// encode writes an incremental file as PostgreSQL's basebackup.c does.
func encode(l Limits, trunc uint32, blocks []uint32, content func(b uint32) []byte) []byte {
	var w bytes.Buffer
	for _, v := range []uint32{Magic, uint32(len(blocks)), trunc} {
		binary.Write(&w, binary.LittleEndian, v)
	}
	for _, b := range blocks {
		binary.Write(&w, binary.LittleEndian, b)
	}
	if len(blocks) > 0 {
		for w.Len()%l.BlockSize != 0 {
			w.WriteByte(0)
		}
	}
	for _, b := range blocks {
		w.Write(content(b))
	}
	return w.Bytes()
}

// memFile is a File in memory.
type memFile struct{ b []byte }

func (m *memFile) WriteAt(p []byte, off int64) (int, error) {
	if end := off + int64(len(p)); end > int64(len(m.b)) {
		m.b = append(m.b, make([]byte, end-int64(len(m.b)))...)
	}
	return copy(m.b[off:], p), nil
}

func (m *memFile) Truncate(size int64) error {
	if size <= int64(len(m.b)) {
		m.b = m.b[:size]
	} else {
		m.b = append(m.b, make([]byte, size-int64(len(m.b)))...)
	}
	return nil
}

// history simulates one relation segment the way the server's WAL
// summaries see it: WAL-logged writes of blocks, truncations (a limit
// block), and extensions by zero blocks that no WAL records. After each
// step an incremental file is made by the server's rule and applying the
// chain forward to the first version must give the current bytes exactly.
func TestApplyChainMatchesHistory(t *testing.T) {
	for seed := range uint64(300) {
		rng := rand.New(rand.NewPCG(seed, 7))
		bs := small.BlockSize
		block := func(tag int) []byte {
			p := make([]byte, bs)
			for i := range p {
				p[i] = byte(tag*31 + i)
			}
			binary.LittleEndian.PutUint64(p, uint64(tag))
			return p
		}
		truth := make([]byte, bs*(1+rng.IntN(int(small.SegmentBlocks))))
		for i := 0; i < len(truth)/bs; i++ {
			copy(truth[i*bs:], block(1000+i))
		}
		restored := &memFile{b: bytes.Clone(truth)}
		tag := 2000
		for step := range 4 {
			modified := map[uint32]bool{}
			limit := uint32(len(truth) / bs)
			for range rng.IntN(6) {
				n := uint32(len(truth) / bs)
				switch op := rng.IntN(4); {
				case op == 0 && n > 0: // truncation (VACUUM)
					to := uint32(rng.IntN(int(n)))
					truth = truth[:int(to)*bs]
					limit = min(limit, to)
				case op == 1 && n < small.SegmentBlocks: // extension by unlogged zero blocks
					k := 1 + rng.IntN(int(small.SegmentBlocks-n))
					truth = append(truth, make([]byte, k*bs)...)
				default: // a WAL-logged write, possibly extending by one block
					b := uint32(rng.IntN(int(n) + 1))
					if b >= small.SegmentBlocks {
						continue
					}
					if b == n {
						truth = append(truth, make([]byte, bs)...)
					}
					tag++
					copy(truth[int(b)*bs:], block(tag))
					modified[b] = true
				}
			}
			size := uint32(len(truth) / bs)
			trunc := min(size, limit)
			var blocks []uint32
			for b := range size {
				if modified[b] {
					blocks = append(blocks, b)
				}
			}
			inc := encode(small, trunc, blocks, func(b uint32) []byte { return truth[int(b)*bs : int(b+1)*bs] })
			h, err := Apply(restored, bytes.NewReader(inc), int64(len(inc)), small, nil)
			if err != nil {
				t.Fatalf("seed %d step %d: %v", seed, step, err)
			}
			if h.FileBlocks() > size {
				t.Fatalf("seed %d step %d: rebuilt length %d blocks > %d", seed, step, h.FileBlocks(), size)
			}
			// Blocks past the rebuilt length are unlogged zeros: PostgreSQL
			// reads a short file as zero blocks too.
			want := truth[:int(h.FileBlocks())*bs]
			if !bytes.Equal(restored.b, want) || !allZero(truth[len(want):]) {
				t.Fatalf("seed %d step %d: rebuilt file differs from the history (%d blocks, want %d)", seed, step, len(restored.b)/bs, len(want)/bs)
			}
			restored.b = append(restored.b, truth[len(want):]...)
		}
	}
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func TestRejectsMalformed(t *testing.T) {
	good := encode(small, 3, []uint32{1, 4}, func(b uint32) []byte { return bytes.Repeat([]byte{byte(b)}, small.BlockSize) })
	le := binary.LittleEndian
	cases := map[string][]byte{
		"empty":         nil,
		"short header":  good[:8],
		"bad magic":     append(le.AppendUint32(nil, 0xd3ae1f0e), good[4:]...),
		"too many":      append(append(le.AppendUint32(nil, Magic), le.AppendUint32(nil, 65)...), good[8:]...),
		"truncation":    append(append(good[:8:8], le.AppendUint32(nil, 65)...), good[12:]...),
		"not ascending": encode(small, 3, []uint32{4, 1}, func(uint32) []byte { return make([]byte, small.BlockSize) }),
		"duplicate":     encode(small, 3, []uint32{4, 4}, func(uint32) []byte { return make([]byte, small.BlockSize) }),
		"beyond":        encode(small, 3, []uint32{64}, func(uint32) []byte { return make([]byte, small.BlockSize) }),
		"short padding": good[:100],
		"short block":   good[:len(good)-1],
	}
	for name, data := range cases {
		t.Run(name, func(t *testing.T) {
			f := &memFile{b: []byte("untouched")}
			size := int64(len(good)) // what the tar header claimed
			if _, err := Apply(f, bytes.NewReader(data), size, small, nil); !errors.Is(err, ErrFormat) {
				t.Fatalf("err = %v, want ErrFormat", err)
			}
			if name != "short block" && string(f.b) != "untouched" {
				t.Fatalf("the file was changed before the header was checked: %q", f.b)
			}
		})
	}
	f := &memFile{b: []byte("untouched")}
	if _, err := Apply(f, bytes.NewReader(good), int64(len(good))+1, small, nil); !errors.Is(err, ErrFormat) || string(f.b) != "untouched" {
		t.Fatalf("size mismatch: err %v, file %q", err, f.b)
	}
	if _, err := ReadHeader(bytes.NewReader(good), Limits{BlockSize: 1000, SegmentBlocks: 64}); err == nil {
		t.Fatal("a block size of 1000 was accepted")
	}
}

func TestTarget(t *testing.T) {
	for in, want := range map[string]string{
		"base/5/INCREMENTAL.16384":     "base/5/16384",
		"base/5/INCREMENTAL.16384.2":   "base/5/16384.2",
		"INCREMENTAL.1259_vm":          "1259_vm",
		"base/5/16384":                 "",
		"base/5/INCREMENTAL.":          "",
		"base/INCREMENTAL.5/16384":     "",
		"pg_tblspc/1/INCREMENTAL.2619": "pg_tblspc/1/2619",
	} {
		got, ok := Target(in)
		if ok != (want != "") || (ok && got != want) {
			t.Errorf("Target(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
}

func TestStripLabel(t *testing.T) {
	full := "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nCHECKPOINT LOCATION: 0/2000080\nBACKUP METHOD: streamed\nBACKUP FROM: primary\nSTART TIME: 2026-12-07 18:00:00 UTC\nLABEL: x\nSTART TIMELINE: 1\n"
	out, _, ok, err := StripLabel([]byte(full))
	if err != nil || ok || string(out) != full {
		t.Fatalf("full label: %v %v %q", err, ok, out)
	}
	inc := full + "INCREMENTAL FROM LSN: 0/1000028\nINCREMENTAL FROM TLI: 1\n"
	out, from, ok, err := StripLabel([]byte(inc))
	if err != nil || !ok || string(out) != full || from != (From{LSN: "0/1000028", Timeline: 1}) {
		t.Fatalf("incremental label: %v %v %+v %q", err, ok, from, out)
	}
	for _, bad := range []string{full + "INCREMENTAL FROM LSN: 0/1\n", full + "INCREMENTAL FROM LSN: 0/1\nINCREMENTAL FROM TLI: x\n"} {
		if _, _, _, err := StripLabel([]byte(bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

// TestApplyOSFile applies to a real file, growing and shrinking it.
func TestApplyOSFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "16384")
	if err := os.WriteFile(p, bytes.Repeat([]byte{1}, 10*small.BlockSize), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	inc := encode(small, 4, []uint32{2, 6}, func(b uint32) []byte { return bytes.Repeat([]byte{byte(b)}, small.BlockSize) })
	if _, err := Apply(f, bytes.NewReader(inc), int64(len(inc)), small, make([]byte, 10)); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(p)
	var want []byte
	for b, v := range []byte{1, 1, 2, 1, 0, 0, 6} {
		want = append(want, bytes.Repeat([]byte{v}, small.BlockSize)...)
		_ = b
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("file after apply: %s", fmt.Sprint(len(got)/small.BlockSize, " blocks"))
	}
}
