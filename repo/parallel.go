package repo

import (
	"errors"
	"io"
	"sync"
)

// NewParallelObjectWriter is NewObjectWriter for long streams (backup
// parts, dumps): the plaintext is cut into FrameSize pieces, compressed as
// independent zstd frames on `workers` goroutines, and written in order
// (encrypted on the way) by one more; plaintext also goes to hash, in that
// goroutine, when hash is not nil. The object is the same format as the
// ones FrameEncoder writers make: any reader reads it, and DecodeTo decodes
// it on several cores. Memory stays bounded: at most workers+2 pieces are
// in flight. Close flushes everything but does not close w.
func NewParallelObjectWriter(w io.Writer, c Codec, workers int, hash io.Writer) (io.WriteCloser, error) {
	workers = max(workers, 1)
	enc, err := NewFrameEncoder(c, workers)
	if err != nil {
		return nil, err
	}
	out, err := NewEncodedWriter(w, c)
	if err != nil {
		enc.Close()
		return nil, err
	}
	pw := &parallelWriter{
		enc: enc, out: out, hash: hash,
		jobs:  make(chan *pieceJob, workers),
		order: make(chan *pieceJob, workers+1),
		free:  make(chan *pieceJob, workers+2),
		done:  make(chan struct{}),
	}
	for i := 0; i < workers+2; i++ {
		pw.free <- &pieceJob{src: make([]byte, 0, FrameSize), ready: make(chan struct{}, 1)}
	}
	pw.wg.Add(workers)
	for i := 0; i < workers; i++ {
		go pw.work()
	}
	go pw.write()
	return pw, nil
}

type pieceJob struct {
	src, dst []byte
	ready    chan struct{}
}

type parallelWriter struct {
	enc  *FrameEncoder
	out  io.WriteCloser
	hash io.Writer

	cur   *pieceJob
	jobs  chan *pieceJob // to the compressing workers
	order chan *pieceJob // the same jobs, in order, to the writer
	free  chan *pieceJob // recycled pieces
	wg    sync.WaitGroup
	done  chan struct{} // the writer ended

	mu     sync.Mutex
	err    error // the first write error (sticky)
	closed bool
}

func (p *parallelWriter) work() {
	defer p.wg.Done()
	for j := range p.jobs {
		j.dst = p.enc.Encode(j.src, j.dst[:0])
		j.ready <- struct{}{}
	}
}

func (p *parallelWriter) write() {
	defer close(p.done)
	for j := range p.order {
		<-j.ready
		if p.failed() == nil {
			if p.hash != nil {
				p.hash.Write(j.src)
			}
			if _, err := p.out.Write(j.dst); err != nil {
				p.fail(err)
			}
		}
		j.src = j.src[:0]
		p.free <- j
	}
}

func (p *parallelWriter) fail(err error) {
	p.mu.Lock()
	if p.err == nil {
		p.err = err
	}
	p.mu.Unlock()
}

func (p *parallelWriter) failed() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// submit hands the current piece to the workers and the writer.
func (p *parallelWriter) submit() {
	j := p.cur
	p.cur = nil
	p.order <- j
	p.jobs <- j
}

func (p *parallelWriter) Write(b []byte) (int, error) {
	if p.closed {
		return 0, errors.New("write to a closed object writer")
	}
	n := 0
	for len(b) > 0 {
		if err := p.failed(); err != nil {
			return n, err
		}
		if p.cur == nil {
			p.cur = <-p.free
		}
		k := min(len(b), FrameSize-len(p.cur.src))
		p.cur.src = append(p.cur.src, b[:k]...)
		b, n = b[k:], n+k
		if len(p.cur.src) == FrameSize {
			p.submit()
		}
	}
	return n, nil
}

// Close compresses and writes what is left, then finishes the object.
func (p *parallelWriter) Close() error {
	if p.closed {
		return p.failed()
	}
	p.closed = true
	if p.cur != nil && len(p.cur.src) > 0 {
		p.submit()
	}
	close(p.jobs)
	close(p.order)
	p.wg.Wait()
	<-p.done
	p.enc.Close()
	if err := p.failed(); err != nil {
		return err
	}
	return p.out.Close()
}
