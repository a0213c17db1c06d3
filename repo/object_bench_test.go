package repo

import (
	"bytes"
	"crypto/sha256"
	"io"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"

	"github.com/klauspost/compress/zstd"
)

func benchSegs(b *testing.B) [][]byte {
	dir := os.Getenv("PGARK_BENCH_WAL_DIR")
	var out [][]byte
	if dir != "" {
		m, _ := filepath.Glob(filepath.Join(dir, "*"))
		sort.Strings(m)
		for _, f := range m {
			d, err := os.ReadFile(f)
			if err == nil && len(d) == 16<<20 {
				out = append(out, d)
			}
			if len(out) == 4 {
				break
			}
		}
	}
	if len(out) == 0 {
		b.Skip("no segs")
	}
	return out
}

func BenchmarkXSHA(b *testing.B) {
	s := benchSegs(b)
	b.SetBytes(int64(len(s[0])))
	for i := 0; b.Loop(); i++ {
		sha256.Sum256(s[i%len(s)])
	}
}

func BenchmarkXZstd(b *testing.B) {
	s := benchSegs(b)
	for _, v := range []struct {
		name string
		opts []zstd.EOption
		mode string
	}{
		{"stream-c2", []zstd.EOption{zstd.WithEncoderConcurrency(2)}, "stream"},
		{"stream-c1", []zstd.EOption{zstd.WithEncoderConcurrency(1)}, "stream"},
		{"all", []zstd.EOption{zstd.WithEncoderConcurrency(1)}, "all"},
		{"all-w2M", []zstd.EOption{zstd.WithEncoderConcurrency(1), zstd.WithWindowSize(2 << 20)}, "all"},
		{"all-lowmem", []zstd.EOption{zstd.WithEncoderConcurrency(1), zstd.WithLowerEncoderMem(true)}, "all"},
		{"all2par", []zstd.EOption{zstd.WithEncoderConcurrency(2)}, "all2"},
		{"stream-cb-w2M", []zstd.EOption{zstd.WithEncoderConcurrency(2), zstd.WithConcurrentBlocks(true), zstd.WithWindowSize(2 << 20)}, "stream"},
		{"stream-cb", []zstd.EOption{zstd.WithEncoderConcurrency(2), zstd.WithConcurrentBlocks(true)}, "stream"},
	} {
		b.Run(v.name, func(b *testing.B) {
			opts := append([]zstd.EOption{zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderCRC(true)}, v.opts...)
			b.SetBytes(int64(len(s[0])))
			var total int
			for i := 0; b.Loop(); i++ {
				d := s[i%len(s)]
				switch v.mode {
				case "stream":
					var buf bytes.Buffer
					zw, _ := zstd.NewWriter(&buf, opts...)
					zw.ReadFrom(bytes.NewReader(d))
					zw.Close()
					total = buf.Len()
				case "all":
					zw, _ := zstd.NewWriter(nil, opts...)
					total = len(zw.EncodeAll(d, nil))
				case "all2":
					zw, _ := zstd.NewWriter(nil, opts...)
					var o1, o2 []byte
					var wg sync.WaitGroup
					wg.Add(1)
					go func() { o1 = zw.EncodeAll(d[:len(d)/2], nil); wg.Done() }()
					o2 = zw.EncodeAll(d[len(d)/2:], nil)
					wg.Wait()
					total = len(o1) + len(o2)
				}
			}
			b.ReportMetric(float64(total), "outbytes")
		})
	}
}

func BenchmarkXUnzstd(b *testing.B) {
	s := benchSegs(b)
	zw, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderCRC(true), zstd.WithEncoderConcurrency(1))
	var comp [][]byte
	for _, d := range s {
		comp = append(comp, zw.EncodeAll(d, nil))
	}
	for _, v := range []struct {
		name string
		opts []zstd.DOption
		mode string
	}{
		{"stream-c2-lowmem", []zstd.DOption{zstd.WithDecoderConcurrency(2), zstd.WithDecoderLowmem(true)}, "stream"},
		{"stream-c1", []zstd.DOption{zstd.WithDecoderConcurrency(1)}, "stream"},
		{"stream-c2", []zstd.DOption{zstd.WithDecoderConcurrency(2)}, "stream"},
		{"all", []zstd.DOption{zstd.WithDecoderConcurrency(1)}, "all"},
	} {
		b.Run(v.name, func(b *testing.B) {
			opts := append([]zstd.DOption{zstd.WithDecoderMaxWindow(64 << 20)}, v.opts...)
			b.SetBytes(16 << 20)
			dst := make([]byte, 0, 16<<20)
			for i := 0; b.Loop(); i++ {
				c := comp[i%len(comp)]
				switch v.mode {
				case "stream":
					zr, _ := zstd.NewReader(bytes.NewReader(c), opts...)
					zr.WriteTo(io.Discard)
					zr.Close()
				case "all":
					zr, _ := zstd.NewReader(nil, opts...)
					zr.DecodeAll(c, dst[:0])
					zr.Close()
				}
			}
		})
	}
}
