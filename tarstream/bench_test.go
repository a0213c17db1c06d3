package tarstream_test

// The measured reason for a push-mode scanner beside archive/tar (see the
// package comment in doc.go): the same work, member extents and manifest
// checksums of a tar stream fed in 32 KiB writes, once by tarstream.Scanner
// and once by archive/tar reading through a byte-counting reader at the far
// end of an io.Pipe (the only way to feed archive/tar where the caller holds
// a writer, as basebackup and the splitter do). The pipe variant is its best
// case: it learns nothing about the stream until Close (no per-Write handshake
// to tell the caller that the end-of-archive marker went by, which basebackup
// needs after every CopyData message), and it holds nothing back (the splitter
// must hold each member's header blocks until its extent is known).
//
//	go test -run '^$' -bench . -benchmem ./tarstream/

import (
	"archive/tar"
	"encoding/hex"
	"errors"
	"hash"
	"io"
	"testing"

	"github.com/pgark/pgark/tarstream"
	"github.com/pgark/pgark/tarstream/tarstreamtest"
)

// benchArchive is shaped like a small data directory: many 8 KiB relation
// files and a few larger ones, 64 MiB of content.
func benchArchive(b *testing.B) []byte {
	var entries []tarstreamtest.Entry
	for i := range 4096 {
		entries = append(entries, tarstreamtest.Entry{Hdr: tar.Header{Name: "base/5/" + string(rune('a'+i%26)) + hex.EncodeToString([]byte{byte(i >> 8), byte(i)}), Typeflag: tar.TypeReg, Mode: 0o600}, Data: tarstreamtest.Data(8192, byte(i))})
	}
	for i := range 32 {
		entries = append(entries, tarstreamtest.Entry{Hdr: tar.Header{Name: "base/5/big" + hex.EncodeToString([]byte{byte(i)}), Typeflag: tar.TypeReg, Mode: 0o600}, Data: tarstreamtest.Data(1<<20, byte(i))})
	}
	return tarstreamtest.Build(b, entries)
}

func benchFeed(b *testing.B, w io.Writer, data []byte) {
	for len(data) > 0 {
		k := min(32<<10, len(data))
		if _, err := w.Write(data[:k]); err != nil {
			b.Fatal(err)
		}
		data = data[k:]
	}
}

func BenchmarkScanner(b *testing.B) {
	data := benchArchive(b)
	for _, alg := range []string{"NONE", "CRC32C", "SHA256"} {
		b.Run(alg, func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				n := 0
				sc, err := tarstream.NewScanner(alg, func(tarstream.Member) error { n++; return nil })
				if err != nil {
					b.Fatal(err)
				}
				benchFeed(b, sc, data)
				if err := sc.Close(); err != nil || n != 4096+32 {
					b.Fatal(n, err)
				}
			}
		})
	}
}

// countingReader counts the bytes archive/tar has consumed: before Next, the
// offset of a member's first header block; after it, of its data.
type countingReader struct {
	r   io.Reader
	off int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.off += int64(n)
	return n, err
}

// pipeScanner is the archive/tar replacement of Scanner: an io.Writer whose
// bytes a goroutine reads with archive/tar, reporting the same extents.
type pipeScanner struct {
	pw   *io.PipeWriter
	done chan error
	n    int
}

func newPipeScanner(alg string) *pipeScanner {
	pr, pw := io.Pipe()
	p := &pipeScanner{pw: pw, done: make(chan error, 1)}
	go func() {
		err := p.read(pr, alg)
		pr.CloseWithError(err)
		p.done <- err
	}()
	return p
}

func (p *pipeScanner) read(r io.Reader, alg string) error {
	cr := &countingReader{r: r}
	tr := tar.NewReader(cr)
	buf := make([]byte, 32<<10)
	var boundary int64
	for {
		h, err := tr.Next()
		if err == io.EOF {
			if cr.off-boundary != 2*tarstream.BlockSize {
				return errors.New("no end-of-archive marker")
			}
			_, err = io.Copy(io.Discard, cr) // only zero bytes may follow (not checked here)
			return err
		}
		if err != nil {
			return err
		}
		m := tarstream.Member{Name: h.Name, Typeflag: h.Typeflag, Size: h.Size, DataStart: cr.off}
		var hh hash.Hash
		if alg != "NONE" && h.Typeflag == tar.TypeReg {
			hh = tarstream.NewChecksumHash(alg)
		}
		for {
			k, err := tr.Read(buf)
			if hh != nil {
				hh.Write(buf[:k])
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				return err
			}
		}
		m.DataEnd = m.DataStart + h.Size + (-h.Size & (tarstream.BlockSize - 1))
		if hh != nil {
			m.Checksum = hex.EncodeToString(hh.Sum(nil))
		}
		boundary = m.DataEnd
		p.n++
	}
}

func (p *pipeScanner) Write(b []byte) (int, error) { return p.pw.Write(b) }

func (p *pipeScanner) Close() error {
	p.pw.Close()
	return <-p.done
}

func BenchmarkArchiveTarPipe(b *testing.B) {
	data := benchArchive(b)
	for _, alg := range []string{"NONE", "CRC32C", "SHA256"} {
		b.Run(alg, func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				p := newPipeScanner(alg)
				benchFeed(b, p, data)
				if err := p.Close(); err != nil || p.n != 4096+32 {
					b.Fatal(p.n, err)
				}
			}
		})
	}
}
