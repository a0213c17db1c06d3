package repo

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
)

func TestParallelObjectWriterRoundTrip(t *testing.T) {
	rs, ids := keys(t)
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{0, 1, FrameSize - 1, FrameSize, FrameSize + 1, 3*FrameSize + 12345} {
		plain := make([]byte, n)
		for i := range plain {
			if i%7 == 0 {
				plain[i] = byte(rng.IntN(256))
			}
		}
		for _, c := range []Codec{{Compression: "zstd", Level: 3, Recipients: rs}, {Compression: "none", Recipients: rs}, {Compression: "zstd", Level: 1}} {
			var obj bytes.Buffer
			h := sha256.New()
			w, err := NewParallelObjectWriter(&obj, c, 3, h)
			if err != nil {
				t.Fatal(err)
			}
			// Odd write sizes, across piece boundaries.
			for rest := plain; len(rest) > 0; {
				k := min(len(rest), 1+rng.IntN(700000))
				if _, err := w.Write(rest[:k]); err != nil {
					t.Fatal(err)
				}
				rest = rest[k:]
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			want := sha256.Sum256(plain)
			if !bytes.Equal(h.Sum(nil), want[:]) {
				t.Fatalf("n=%d %+v: the hash of the plaintext is wrong", n, c.Compression)
			}
			var o ReadOptions
			if c.Recipients != nil {
				o.Identities = ids
			}
			got, err := open(obj.Bytes(), o)
			if err != nil || !bytes.Equal(got, plain) {
				t.Fatalf("n=%d %s: round trip: %v (got %d bytes)", n, c.Compression, err, len(got))
			}
		}
	}
}

type failAfter struct{ n int }

func (f *failAfter) Write(p []byte) (int, error) {
	if f.n -= len(p); f.n < 0 {
		return 0, errors.New("disk full")
	}
	return len(p), nil
}

func TestParallelObjectWriterError(t *testing.T) {
	w, err := NewParallelObjectWriter(&failAfter{n: 1000}, Codec{Compression: "none"}, 2, nil)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, FrameSize)
	var werr error
	for i := 0; i < 20 && werr == nil; i++ {
		_, werr = w.Write(buf)
	}
	cerr := w.Close()
	if werr == nil && cerr == nil {
		t.Fatal("a failing destination went unnoticed")
	}
	if _, err := io.Copy(w, bytes.NewReader(buf)); err == nil {
		t.Fatal("a write after Close succeeded")
	}
}

// memAt is an in-memory io.WriterAt.
type memAt struct{ b []byte }

func (m *memAt) WriteAt(p []byte, off int64) (int, error) {
	if end := int(off) + len(p); end > len(m.b) {
		m.b = append(m.b, make([]byte, end-len(m.b))...)
	}
	return copy(m.b[off:], p), nil
}

// TestDecoderReuse: one Decoder decodes object after object, larger and
// smaller, framed and streamed, and after a damaged one, with the same
// results as a fresh one.
func TestDecoderReuse(t *testing.T) {
	rs, ids := keys(t)
	rng := rand.New(rand.NewPCG(3, 4))
	plainOf := func(n int) []byte {
		p := make([]byte, n)
		for i := range p {
			if i%5 == 0 {
				p[i] = byte(rng.IntN(256))
			}
		}
		return p
	}
	framed := func(c Codec, plain []byte) []byte {
		var obj bytes.Buffer
		w, err := NewParallelObjectWriter(&obj, c, 2, nil)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(plain)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		return obj.Bytes()
	}
	enc := Codec{Compression: "zstd", Level: 1, Recipients: rs}
	plain := Codec{Compression: "zstd", Level: 1}
	damaged := framed(plain, plainOf(3*FrameSize))
	damaged[len(damaged)/2] ^= 0x40

	d := NewDecoder(2)
	defer d.Close()
	for i, tc := range []struct {
		plain    []byte
		streamed bool   // one long frame, as NewObjectWriter writes
		obj      []byte // set: this (damaged) object
	}{
		{plain: plainOf(3*FrameSize + 12345)},
		{plain: plainOf(100)},
		{plain: plainOf(FrameSize)},
		{obj: damaged},
		{plain: plainOf(4*FrameSize + 1)},
		{plain: plainOf(FrameSize + 7), streamed: true},
		{plain: plainOf(2 * FrameSize)},
	} {
		o := ReadOptions{Identities: ids}
		switch {
		case tc.obj != nil:
			o = ReadOptions{}
		case tc.streamed:
			tc.obj = seal(t, enc, tc.plain)
		default:
			tc.obj = framed(enc, tc.plain)
		}
		body, err := OpenObject(bytes.NewReader(tc.obj), o)
		if err != nil {
			t.Fatalf("%d: %v", i, err)
		}
		var out memAt
		h := sha256.New()
		n, err := body.DecodeWith(d, &out, h, 8*FrameSize)
		if tc.plain == nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("damaged object: %v", err)
			}
			continue
		}
		want := sha256.Sum256(tc.plain)
		if err != nil || n != int64(len(tc.plain)) || !bytes.Equal(out.b, tc.plain) || !bytes.Equal(h.Sum(nil), want[:]) {
			t.Fatalf("%d: decoded %d of %d bytes, equal %v, hash equal %v: %v", i, n, len(tc.plain), bytes.Equal(out.b, tc.plain), bytes.Equal(h.Sum(nil), want[:]), err)
		}
	}
}
