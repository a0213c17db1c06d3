package repo

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"github.com/pgark/pgark/internal/walgen"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"testing"

	"github.com/pgark/pgark/crypto"
)

// Benchmarks of the object pipeline on 16 MiB WAL segments. Real segments
// are best: set PGARK_BENCH_WAL_DIR to a directory of them (for instance the
// segs/ of a work dir kept by `KEEP=1 SEGMENTS=4 bash bench/wal.sh`);
// without it, synthetic pgbench-like segments are used. They print figures
// and never fail on a time.
//
//	PGARK_BENCH_WAL_DIR=/tmp/segs go test ./repo -run X -bench . -benchtime 20x

// benchSegments returns up to 4 segments of 16 MiB.
func benchSegments(b *testing.B) [][]byte {
	b.Helper()
	var segs [][]byte
	if dir := os.Getenv("PGARK_BENCH_WAL_DIR"); dir != "" {
		files, _ := filepath.Glob(filepath.Join(dir, "*"))
		sort.Strings(files)
		for _, f := range files {
			if fi, err := os.Stat(f); err != nil || fi.Size() != 16<<20 {
				continue
			}
			d, err := os.ReadFile(f)
			if err != nil {
				b.Fatal(err)
			}
			if segs = append(segs, d); len(segs) == 4 {
				break
			}
		}
		if len(segs) == 0 {
			b.Logf("no 16 MiB files in PGARK_BENCH_WAL_DIR=%s: using synthetic segments", dir)
		}
	}
	for i := len(segs); i < 2; i++ {
		segs = append(segs, walgen.PgbenchLike(16<<20, uint64(i+1)))
	}
	return segs
}

func benchCodec(b *testing.B) (Codec, ReadOptions) {
	b.Helper()
	f := filepath.Join(b.TempDir(), "id")
	recip, err := crypto.GenerateIdentity(f)
	if err != nil {
		b.Fatal(err)
	}
	rs, err := crypto.ParseRecipients(recip, "")
	if err != nil {
		b.Fatal(err)
	}
	ids, err := crypto.LoadIdentities(f)
	if err != nil {
		b.Fatal(err)
	}
	return Codec{Compression: "zstd", Level: 3, Recipients: rs}, ReadOptions{Identities: ids, RequireEncrypted: true}
}

// sealFramed writes an object as push does: FrameSize pieces compressed on
// several goroutines, frames written in order.
func sealFramed(b *testing.B, w io.Writer, c Codec, plain []byte, workers int) {
	enc, err := NewFrameEncoder(c, workers)
	if err != nil {
		b.Fatal(err)
	}
	defer enc.Close()
	ow, err := NewEncodedWriter(w, c)
	if err != nil {
		b.Fatal(err)
	}
	n := (len(plain) + FrameSize - 1) / FrameSize
	outs := make([][]byte, n)
	done := make([]chan struct{}, n)
	next := make(chan int, n)
	for i := range n {
		done[i] = make(chan struct{})
		next <- i
	}
	close(next)
	for range workers {
		go func() {
			for i := range next {
				outs[i] = enc.Encode(plain[i*FrameSize:min((i+1)*FrameSize, len(plain))], nil)
				close(done[i])
			}
		}()
	}
	for i := range n {
		<-done[i]
		ow.Write(outs[i])
	}
	if err := ow.Close(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkSeal: compress and encrypt one segment. stream: one zstd frame
// from the streaming encoder (NewObjectWriter, as push did before frames);
// frames-N: FrameSize frames on N goroutines (as push does, but for its
// smaller first pieces).
func BenchmarkSeal(b *testing.B) {
	segs := benchSegments(b)
	c, _ := benchCodec(b)
	run := func(name string, seal func(w io.Writer, p []byte)) {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(segs[0])))
			var out bytes.Buffer
			var stored int64
			for i := 0; b.Loop(); i++ {
				out.Reset()
				seal(&out, segs[i%len(segs)])
				stored += int64(out.Len())
			}
			b.ReportMetric(float64(stored)/float64(b.N), "stored-bytes/op")
		})
	}
	run("stream", func(w io.Writer, p []byte) {
		ow, err := NewObjectWriter(w, c)
		if err != nil {
			b.Fatal(err)
		}
		ow.(io.ReaderFrom).ReadFrom(bytes.NewReader(p))
		if err := ow.Close(); err != nil {
			b.Fatal(err)
		}
	})
	for nw := 1; nw <= runtime.GOMAXPROCS(0); nw++ {
		run(fmt.Sprintf("frames-%d", nw), func(w io.Writer, p []byte) { sealFramed(b, w, c, p, nw) })
	}
}

// BenchmarkOpen: decrypt, decompress and hash one segment. stream: the
// streaming reader (io.Copy into the hash; objects of one frame are read
// this way); decodeto-N: DecodeTo with N workers on framed objects (as fetch
// does), writing into memory.
func BenchmarkOpen(b *testing.B) {
	segs := benchSegments(b)
	c, ro := benchCodec(b)
	var framed, single [][]byte
	for _, s := range segs {
		var buf bytes.Buffer
		sealFramed(b, &buf, c, s, 2)
		framed = append(framed, bytes.Clone(buf.Bytes()))
		buf.Reset()
		ow, _ := NewObjectWriter(&buf, c)
		ow.Write(s)
		ow.Close()
		single = append(single, bytes.Clone(buf.Bytes()))
	}
	b.Run("stream-single-frame", func(b *testing.B) {
		b.SetBytes(int64(len(segs[0])))
		for i := 0; b.Loop(); i++ {
			r, err := NewObjectReader(bytes.NewReader(single[i%len(single)]), ro)
			if err != nil {
				b.Fatal(err)
			}
			h := sha256.New()
			if _, err := io.Copy(h, r); err != nil {
				b.Fatal(err)
			}
			r.Close()
		}
	})
	b.Run("stream-frames", func(b *testing.B) {
		b.SetBytes(int64(len(segs[0])))
		for i := 0; b.Loop(); i++ {
			r, err := NewObjectReader(bytes.NewReader(framed[i%len(framed)]), ro)
			if err != nil {
				b.Fatal(err)
			}
			h := sha256.New()
			if _, err := io.Copy(h, r); err != nil {
				b.Fatal(err)
			}
			r.Close()
		}
	})
	for nw := 1; nw <= runtime.GOMAXPROCS(0); nw++ {
		b.Run(fmt.Sprintf("decodeto-%d", nw), func(b *testing.B) {
			b.SetBytes(int64(len(segs[0])))
			dst := &memWriterAt{b: make([]byte, len(segs[0]))}
			for i := 0; b.Loop(); i++ {
				body, err := OpenObject(bytes.NewReader(framed[i%len(framed)]), ro)
				if err != nil {
					b.Fatal(err)
				}
				h := sha256.New()
				n, err := body.DecodeTo(dst, h, int64(len(segs[0])), nw)
				if err != nil || n != int64(len(segs[0])) {
					b.Fatal(n, err)
				}
			}
		})
	}
}

type memWriterAt struct{ b []byte }

func (m *memWriterAt) WriteAt(p []byte, off int64) (int, error) {
	return copy(m.b[off:], p), nil
}
