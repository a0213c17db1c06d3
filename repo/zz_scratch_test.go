package repo

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"sync"
	"testing"
)

func sealF(t *testing.T, c Codec, plain []byte) []byte {
	enc, err := NewFrameEncoder(c, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	var buf bytes.Buffer
	ow, err := NewEncodedWriter(&buf, c)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(plain); i += FrameSize {
		ow.Write(enc.Encode(plain[i:min(i+FrameSize, len(plain))], nil))
	}
	if err := ow.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

type wa struct {
	mu   sync.Mutex
	b    []byte
	fail error
}

func (w *wa) WriteAt(p []byte, off int64) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.fail != nil {
		return 0, w.fail
	}
	if int(off)+len(p) > len(w.b) {
		nb := make([]byte, int(off)+len(p))
		copy(nb, w.b)
		w.b = nb
	}
	return copy(w.b[off:], p), nil
}

func decodeAll(obj []byte, o ReadOptions, size int64, workers int) ([]byte, error) {
	b, err := OpenObject(bytes.NewReader(obj), o)
	if err != nil {
		return nil, err
	}
	w := &wa{}
	h := sha256.New()
	n, err := b.DecodeTo(w, h, size, workers)
	if err != nil {
		return nil, err
	}
	out := w.b[:n]
	if sha256.Sum256(out) != [32]byte(h.Sum(nil)) {
		panic("hash differs from written")
	}
	return out, nil
}

func TestZZFramed(t *testing.T) {
	rs, ids := keys(t)
	rnd := make([]byte, 5<<20+7)
	rand.Read(rnd)
	text := bytes.Repeat([]byte("wal record 0123456789 "), 400000)
	codecs := []Codec{{Compression: "zstd", Level: 3, Recipients: rs}, {Compression: "zstd", Level: 1}, {Compression: "none", Recipients: rs}, {Compression: "none"}}
	for _, c := range codecs {
		ro := ReadOptions{Identities: ids}
		for _, sz := range []int{0, 1, 255, 256, 257, 1000, 1 << 16, FrameSize - 1, FrameSize, FrameSize + 1, 5<<20 + 7} {
			for _, src := range [][]byte{rnd, text} {
				p := src[:sz]
				for _, obj := range [][]byte{sealF(t, c, p), seal(t, c, p)} {
					for _, nw := range []int{1, 2, 3} {
						got, err := decodeAll(obj, ro, int64(sz), nw)
						if err != nil || !bytes.Equal(got, p) {
							t.Fatalf("%v size %d nw %d: %v (%d bytes)", c.Compression, sz, nw, err, len(got))
						}
					}
					// the old reader reads framed objects
					got, err := open(obj, ro)
					if err != nil || !bytes.Equal(got, p) {
						t.Fatalf("old reader %v size %d: %v", c.Compression, sz, err)
					}
					if sz > 0 {
						if _, err := decodeAll(obj, ro, int64(sz-1), 2); !errors.Is(err, ErrTooLong) || !errors.Is(err, ErrCorrupt) {
							t.Fatalf("too long %v size %d: %v", c.Compression, sz, err)
						}
						// write errors pass unchanged
						b, _ := OpenObject(bytes.NewReader(obj), ro)
						myErr := errors.New("disk full")
						_, err := b.DecodeTo(&wa{fail: myErr}, sha256.New(), int64(sz), 2)
						if err != myErr {
							t.Fatalf("write error %v size %d: %v", c.Compression, sz, err)
						}
					}
				}
			}
		}
	}
}

func TestZZCorrupt(t *testing.T) {
	rs, ids := keys(t)
	plain := append(bytes.Repeat([]byte("wal record 0123456789 "), 200000), make([]byte, 100)...)
	rnd := make([]byte, 3<<20)
	rand.Read(rnd)
	plain = append(plain, rnd...)
	for _, c := range []Codec{{Compression: "zstd", Level: 3, Recipients: rs}, {Compression: "zstd", Level: 3}} {
		obj := sealF(t, c, plain)
		ro := ReadOptions{Identities: ids}
		bad := 0
		for i := 0; i < len(obj); i += max(1, len(obj)/3000) {
			for _, mode := range []string{"flip", "trunc"} {
				var o []byte
				if mode == "flip" {
					o = flip(obj, i)
				} else {
					o = obj[:i]
				}
				got, err := decodeAll(o, ro, int64(len(plain)), 2)
				if err == nil && bytes.Equal(got, plain) {
					bad++
					t.Logf("%s at %d/%d accepted unchanged", mode, i, len(obj))
					continue
				}
				if err == nil {
					t.Fatalf("%s at %d: accepted with different content (%d bytes)", mode, i, len(got))
				}
				if !errors.Is(err, ErrCorrupt) && mode == "flip" && i > 200 {
					t.Logf("%s at %d: not ErrCorrupt: %v", mode, i, err)
				}
			}
		}
		// garbage after the frames
		_, err := decodeAll(append(bytes.Clone(obj[:len(obj)]), []byte("garbage!")...), ro, int64(len(plain)), 2)
		t.Logf("%v trailing garbage: %v", c.Recipients.Len(), err)
		_ = io.EOF
	}
}
