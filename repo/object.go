package repo

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"github.com/klauspost/compress/zstd"

	"github.com/pgark/pgark/crypto"
)

// Object format. Every object pgark writes starts with a 7-byte outer header:
//
//	"PGARK" 0x01 <encryption>
//
// where encryption is 0 (none) or 1 (age). The rest is the body: the age
// stream when encrypted, else the inner stream directly. The inner stream
// starts with one byte naming the compression, 0 (none) or 1 (zstd, frames
// with content checksums), followed by the compressed data. The compression
// byte sits under the encryption, so it is authenticated with the data. A
// change of settings never hides old objects: each records its own codec.
//
// The zstd data is one or more frames back to back, which a zstd reader
// reads as one stream. The writers cut the plaintext into FrameSize pieces
// and make each one frame that records its content size (FrameEncoder), so
// that DecodeTo can decode them on several cores: wal-push per segment,
// NewParallelObjectWriter for long streams (backup parts, dumps), both
// through NewEncodedWriter. NewObjectWriter writes the whole plaintext as
// one frame, as pgark did before frames; no command writes such objects any
// more, but repositories hold them, so readers read both (tests make them
// with NewObjectWriter).
const (
	objMagic   = "PGARK\x01"
	encNone    = 0
	encAge     = 1
	compNone   = 0
	compZstd   = 1
	headerSize = len(objMagic) + 1
)

// Codec says how to write objects.
type Codec struct {
	Compression string // "zstd" or "none"
	Level       int    // zstd level 1-22 (mapped to the encoder's speed classes)
	Recipients  *crypto.Recipients
	// Signer, when set, signs what is written (origin authentication).
	Signer *crypto.Signer
}

// ValidateCompression checks a compression name and level.
func ValidateCompression(name string, level int) error {
	switch name {
	case "zstd":
		if level < 1 || level > 22 {
			return fmt.Errorf("zstd level %d out of range 1-22", level)
		}
	case "none":
	default:
		return fmt.Errorf("unknown compression %q (use zstd or none)", name)
	}
	return nil
}

// objectWriter is the writer of an object's body that NewEncodedWriter and
// NewObjectWriter return: plaintext (or encoded data) goes to w, through
// the zstd encoder when zw is set and the age encryption when enc is set.
type objectWriter struct {
	enc io.WriteCloser // age writer or nil
	zw  *zstd.Encoder  // or nil
	w   io.Writer      // where plaintext goes
}

// NewEncodedWriter writes an object's header and compression byte to w and
// returns the writer of its encoded body: what is written to it must already
// be in the codec's compression (zstd frames, for instance from a
// FrameEncoder, or the plaintext itself for "none"); it is encrypted on the
// way when the codec has recipients. Close finishes the encryption but does
// not close w.
func NewEncodedWriter(w io.Writer, c Codec) (io.WriteCloser, error) {
	ow, err := newEncodedWriter(w, c)
	if err != nil {
		return nil, err
	}
	return ow, nil
}

func newEncodedWriter(w io.Writer, c Codec) (*objectWriter, error) {
	if err := ValidateCompression(c.Compression, c.Level); err != nil {
		return nil, err
	}
	hdr := []byte(objMagic + "\x00")
	if c.Recipients.Len() > 0 {
		hdr[len(objMagic)] = encAge
	}
	if _, err := w.Write(hdr); err != nil {
		return nil, err
	}
	ow := &objectWriter{w: w}
	if c.Recipients.Len() > 0 {
		e, err := c.Recipients.Encrypt(w)
		if err != nil {
			return nil, err
		}
		ow.enc, ow.w = e, e
	}
	comp := byte(compNone)
	if c.Compression == "zstd" {
		comp = compZstd
	}
	if _, err := ow.w.Write([]byte{comp}); err != nil {
		return nil, err
	}
	return ow, nil
}

// NewObjectWriter writes an object's header to w and returns the writer that
// takes the plaintext. Close flushes compression and encryption but does not
// close w.
func NewObjectWriter(w io.Writer, c Codec) (io.WriteCloser, error) {
	ow, err := newEncodedWriter(w, c)
	if err != nil {
		return nil, err
	}
	if c.Compression == "zstd" {
		zw, err := zstd.NewWriter(ow.w,
			zstd.WithEncoderLevel(zstd.EncoderLevelFromZstd(c.Level)),
			zstd.WithEncoderCRC(true),
			// Two goroutines: the next block is compressed while the
			// previous one is written (and encrypted); memory stays
			// bounded (two blocks in flight). Measured with bench/wal.sh
			// when wal-push still used this writer.
			zstd.WithEncoderConcurrency(2))
		if err != nil {
			return nil, fmt.Errorf("zstd encoder: %w", err)
		}
		ow.zw, ow.w = zw, zw
	}
	return ow, nil
}

// FrameSize is the plaintext size of the pieces that writers using a
// FrameEncoder cut their input into (the last piece may be shorter).
//
// Each piece becomes one independent zstd frame: frames are compressed on
// several cores at once, and read back the same way (DecodeTo), which a single
// frame does not allow. Frames back to back are one valid zstd stream, so any
// zstd reader (NewObjectReader too) reads such an object. 2 MiB frames cost
// about 1.5% of compressed size against one frame per 16 MiB segment (measured
// on pgbench WAL; 1 MiB: 2.3%, 4 MiB: 0.7%), and keep every encoder's and
// decoder's working memory small.
const FrameSize = 2 << 20

// FrameEncoder turns pieces of plaintext into complete, independent zstd
// frames (content size and checksum recorded), or copies them unchanged when
// the codec does not compress. Encode may be called from up to `workers`
// goroutines at once.
type FrameEncoder struct {
	zenc *zstd.Encoder
}

// NewFrameEncoder returns an encoder for the codec's compression.
func NewFrameEncoder(c Codec, workers int) (*FrameEncoder, error) {
	if err := ValidateCompression(c.Compression, c.Level); err != nil {
		return nil, err
	}
	if c.Compression != "zstd" {
		return &FrameEncoder{}, nil
	}
	zenc, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zstd.EncoderLevelFromZstd(c.Level)),
		zstd.WithEncoderCRC(true),
		zstd.WithEncoderConcurrency(max(workers, 1)),
		// A frame never refers to another. A window of half a frame
		// halves the encoder's history buffer (memory that a
		// short-lived process pays for in page faults) for 0.4% of
		// compressed size (pgbench WAL). Single segment: the content
		// size is always in the frame header, which DecodeTo needs.
		zstd.WithWindowSize(FrameSize/2),
		zstd.WithSingleSegment(true))
	if err != nil {
		return nil, fmt.Errorf("zstd encoder: %w", err)
	}
	return &FrameEncoder{zenc: zenc}, nil
}

// Encode appends the encoding of src (at most FrameSize bytes) to dst.
func (e *FrameEncoder) Encode(src, dst []byte) []byte {
	if len(src) == 0 {
		return dst
	}
	if e.zenc == nil {
		return append(dst, src...)
	}
	return e.zenc.EncodeAll(src, dst)
}

// Compresses says whether Encode compresses (or copies).
func (e *FrameEncoder) Compresses() bool { return e.zenc != nil }

// MaxEncodedSize bounds the encoding of n bytes.
func (e *FrameEncoder) MaxEncodedSize(n int) int {
	if e.zenc == nil {
		return n
	}
	return e.zenc.MaxEncodedSize(n)
}

// Close releases the encoder.
func (e *FrameEncoder) Close() {
	if e.zenc != nil {
		e.zenc.Close()
	}
}

func (o *objectWriter) Write(p []byte) (int, error) { return o.w.Write(p) }

// ReadFrom lets io.Copy feed the zstd encoder without an extra buffer.
func (o *objectWriter) ReadFrom(r io.Reader) (int64, error) {
	if o.zw != nil {
		return o.zw.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{o.w}, r)
}

func (o *objectWriter) Close() error {
	if o.zw != nil {
		if err := o.zw.Close(); err != nil {
			return fmt.Errorf("zstd: %w", err)
		}
	}
	if o.enc != nil {
		if err := o.enc.Close(); err != nil {
			return fmt.Errorf("age: %w", err)
		}
	}
	return nil
}

// ErrCorrupt is wrapped by errors that mean the object's bytes are damaged
// or not a pgark object.
var ErrCorrupt = errors.New("corrupt object")

// ReadOptions says how to read objects.
type ReadOptions struct {
	Identities *crypto.Identities
	// RequireEncrypted refuses unencrypted objects (an encrypted repository
	// fails closed: an unencrypted object there was not written by pgark).
	RequireEncrypted bool
}

type objectReader struct {
	r  io.Reader
	zr *zstd.Decoder
}

func (o *objectReader) Read(p []byte) (int, error) {
	n, err := o.r.Read(p)
	if err != nil && err != io.EOF {
		err = fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	return n, err
}

// WriteTo lets io.Copy drain the zstd decoder without an extra buffer.
func (o *objectReader) WriteTo(w io.Writer) (int64, error) {
	if o.zr == nil {
		return io.Copy(w, struct{ io.Reader }{o})
	}
	n, err := o.zr.WriteTo(w)
	if err != nil {
		var pe *writeError
		if errors.As(err, &pe) {
			return n, pe.err
		}
		err = fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	return n, err
}

// writeError marks errors of the destination writer, which must not be
// reported as corruption of the object.
type writeError struct{ err error }

func (e *writeError) Error() string { return e.err.Error() }
func (e *writeError) Unwrap() error { return e.err }

// MarkWriteErrors wraps w so that its errors pass through an object reader's
// WriteTo unchanged (and are not taken for corruption).
func MarkWriteErrors(w io.Writer) io.Writer { return writeErrMarker{w} }

type writeErrMarker struct{ w io.Writer }

func (m writeErrMarker) Write(p []byte) (int, error) {
	n, err := m.w.Write(p)
	if err != nil {
		err = &writeError{err}
	}
	return n, err
}

func (o *objectReader) Close() error {
	if o.zr != nil {
		o.zr.Close()
	}
	return nil
}

// Body is an object whose header has been read and whose decryption is set
// up: what is left to read is its encoded body.
type Body struct {
	comp byte
	r    io.Reader
}

// OpenObject reads an object's header from r and sets up its decryption.
// The errors are those of NewObjectReader.
func OpenObject(r io.Reader, o ReadOptions) (*Body, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	hdr := make([]byte, headerSize)
	if _, err := io.ReadFull(br, hdr); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, fmt.Errorf("%w: truncated header", ErrCorrupt)
		}
		return nil, err
	}
	if string(hdr[:len(objMagic)]) != objMagic {
		return nil, fmt.Errorf("%w: not a pgark object (bad magic)", ErrCorrupt)
	}
	var body io.Reader = br
	switch hdr[len(objMagic)] {
	case encNone:
		if o.RequireEncrypted {
			return nil, fmt.Errorf("%w: the object is not encrypted but the repository is: refusing it (it was not written by pgark for this repository)", ErrCorrupt)
		}
	case encAge:
		pr, err := o.Identities.Decrypt(br)
		if err != nil {
			if errors.Is(err, crypto.ErrNoMatchingIdentity) || errors.Is(err, crypto.ErrMissingIdentity) {
				return nil, err
			}
			return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
		}
		// age hands out at most one 64 KiB chunk per Read: buffer it for
		// the small reads of frame headers.
		body = bufio.NewReaderSize(pr, 64<<10)
	default:
		return nil, fmt.Errorf("%w: unknown encryption %d", ErrCorrupt, hdr[len(objMagic)])
	}
	comp := make([]byte, 1)
	if _, err := io.ReadFull(body, comp); err != nil {
		return nil, fmt.Errorf("%w: truncated body: %w", ErrCorrupt, err)
	}
	switch comp[0] {
	case compNone, compZstd:
	default:
		return nil, fmt.Errorf("%w: unknown compression %d", ErrCorrupt, comp[0])
	}
	return &Body{comp: comp[0], r: body}, nil
}

// NewObjectReader reads an object's header from r and returns the reader of
// its plaintext. Decryption is authenticated (age), zstd frames carry content
// checksums; damage surfaces as an error wrapping ErrCorrupt (or an age
// error) from Read. Callers still compare the plaintext hash and size with
// the object's metadata.
func NewObjectReader(r io.Reader, o ReadOptions) (io.ReadCloser, error) {
	b, err := OpenObject(r, o)
	if err != nil {
		return nil, err
	}
	if b.comp == compNone {
		return &objectReader{r: b.r}, nil
	}
	zr, err := newStreamDecoder(b.r)
	if err != nil {
		return nil, err
	}
	return &objectReader{r: zr, zr: zr}, nil
}

func newStreamDecoder(r io.Reader) (*zstd.Decoder, error) {
	zr, err := zstd.NewReader(r,
		zstd.WithDecoderConcurrency(2),
		zstd.WithDecoderLowmem(true),
		zstd.WithDecoderMaxWindow(64<<20))
	if err != nil {
		return nil, fmt.Errorf("zstd decoder: %w", err)
	}
	return zr, nil
}

// ErrTooLong is wrapped when an object decodes to more bytes than expected.
var ErrTooLong = fmt.Errorf("%w: the plaintext is longer than expected", ErrCorrupt)

// maxFrameContent bounds the frames that DecodeTo decodes in parallel (each
// into a buffer of its content size); larger ones are streamed.
const maxFrameContent = 4 * FrameSize

// pieceSize is the size of the pieces of streamed plaintext.
const pieceSize = 1 << 20

// DecodeTo decodes the body's plaintext, which must not be longer than size
// bytes. It writes the plaintext to w at its offsets, in order and never
// from two goroutines at once (but not from the calling one), and passes it
// to h (a hash, say) in order, on the calling goroutine: both get every byte
// of the plaintext exactly once. It returns the number of bytes decoded: the
// caller compares it (and the hash) with what it expects before it trusts
// what w holds.
//
// zstd frames that record their content size (those of a FrameEncoder) are
// decoded by `workers` goroutines at once while the next frames are read and
// decrypted, and the previous ones written and hashed; anything else (one
// long frame written by a streaming encoder, say) is decoded by a streaming
// decoder. Memory stays bounded whatever the size: a few frames are in
// flight.
//
// w's errors are returned unchanged; damage (failed authentication, a bad
// frame or checksum, more than size bytes) is an error wrapping ErrCorrupt.
func (b *Body) DecodeTo(w io.WriterAt, h io.Writer, size int64, workers int) (int64, error) {
	d := NewDecoder(workers)
	defer d.Close()
	return b.DecodeWith(d, w, h, size)
}

// DecodeWith is DecodeTo with the decoder, buffers and workers of d.
func (b *Body) DecodeWith(d *Decoder, w io.WriterAt, h io.Writer, size int64) (int64, error) {
	emit := func(off int64, p []byte) error {
		if _, err := w.WriteAt(p, off); err != nil {
			return &writeError{err}
		}
		h.Write(p)
		return nil
	}
	var n int64
	var err error
	if b.comp == compNone {
		n, err = copyPieces(b.r, size, emit)
	} else {
		n, err = d.decodeFrames(b.r, size, w, h, emit)
	}
	var we *writeError
	if errors.As(err, &we) {
		return n, we.err
	}
	return n, err
}

// A Decoder holds what decoding a zstd body takes: the zstd decoder, the
// plaintext buffers (from an Arena) and the compressed frame buffers. A
// process that decodes object after object (the prefetch helper) keeps one
// per goroutine and allocates all that once: fresh memory costs a page fault
// per page and, on virtual machines that hand freed memory back to the host,
// a fault in the host too (writing 16 MiB of fresh memory measured 10 times
// slower than reused memory on such a VM). Not for concurrent use; Close
// releases it.
type Decoder struct {
	workers int
	dec     *zstd.Decoder // made at first use
	arena   *Arena
	bufs    [][]byte // plaintext buffers, from arena
	frames  [][]byte // compressed frame buffers
}

// NewDecoder returns a Decoder that decodes frames on workers goroutines.
func NewDecoder(workers int) *Decoder { return &Decoder{workers: max(workers, 1)} }

// Close releases the decoder's memory.
func (d *Decoder) Close() {
	if d.dec != nil {
		d.dec.Close()
		d.dec = nil
	}
	d.freeBufs()
	d.frames = nil
}

func (d *Decoder) freeBufs() {
	if d.arena != nil {
		d.arena.Free()
		d.arena = nil
	}
	d.bufs = nil
}

// plainBufs returns n plaintext buffers of at least size bytes, reusing the
// ones of the last call when they are large enough.
func (d *Decoder) plainBufs(n, size int) [][]byte {
	if len(d.bufs) == n && cap(d.bufs[0]) >= size {
		return d.bufs
	}
	d.freeBufs()
	d.arena = NewArena(n * size)
	for range n {
		d.bufs = append(d.bufs, d.arena.Alloc(size)[:0])
	}
	return d.bufs
}

func corrupt(err error) error {
	if errors.Is(err, ErrCorrupt) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrCorrupt, err)
}

// copyPieces emits the plaintext of an uncompressed body.
func copyPieces(r io.Reader, size int64, emit func(int64, []byte) error) (int64, error) {
	buf := make([]byte, min(size+1, pieceSize))
	var n int64
	for {
		k, err := io.ReadFull(r, buf)
		if k > 0 {
			if int64(k) > size-n {
				return n, ErrTooLong
			}
			if err := emit(n, buf[:k]); err != nil {
				return n, err
			}
			n += int64(k)
		}
		switch err {
		case nil:
		case io.EOF, io.ErrUnexpectedEOF:
			return n, nil
		default:
			return n, corrupt(err)
		}
	}
}

// streamPieces decodes a zstd stream with the streaming decoder and emits its
// plaintext, at most limit bytes.
func streamPieces(r io.Reader, off, limit int64, emit func(int64, []byte) error) (int64, error) {
	zr, err := newStreamDecoder(r)
	if err != nil {
		return 0, err
	}
	defer zr.Close()
	var n int64
	_, err = zr.WriteTo(writerFunc(func(p []byte) (int, error) {
		if int64(len(p)) > limit-n {
			return 0, ErrTooLong
		}
		if err := emit(off+n, p); err != nil {
			return 0, err
		}
		n += int64(len(p))
		return len(p), nil
	}))
	var we *writeError
	if err != nil && !errors.As(err, &we) {
		err = corrupt(err)
	}
	return n, err
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// frameJob is one frame on its way from the reader through a decoding worker
// to the writer and the hasher.
type frameJob struct {
	frame   []byte // the compressed frame
	fcs     int    // its content size
	off     int64  // its offset in the plaintext
	buf     []byte // where it is decoded (cap >= fcs)
	out     []byte
	err     error         // reading or decoding failed
	rest    io.Reader     // not nil: stream the rest with the streaming decoder
	decoded chan struct{} // closed when out (or err) is set
	refs    atomic.Int32  // the writer and the hasher: the last one frees buf
}

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// decodeFrames is DecodeTo for zstd bodies, decoded by a framePipeline:
// the reader splits the body into frames; the workers decode them; one
// writer writes them in order (concurrent writes to one file contend for
// its lock, and cost much more than they save); the calling goroutine
// hashes them in order.
func (d *Decoder) decodeFrames(r io.Reader, size int64, w io.WriterAt, h io.Writer, emit func(int64, []byte) error) (int64, error) {
	dec, err := d.frameDecoder()
	if err != nil {
		return 0, err
	}
	br, ok := r.(*bufio.Reader)
	if !ok {
		br = bufio.NewReaderSize(r, 64<<10)
	}
	p := d.newFramePipeline(dec, size)
	p.wg.Add(d.workers + 1)
	for range d.workers {
		go p.work()
	}
	go p.write(w)
	// The reader is not waited for when the hasher stops early: it stops
	// at its next step, or when the caller closes the source. It touches
	// no decoding buffer.
	go p.read(br)
	n, err := p.hash(h, emit)
	return n, p.finish(d, err)
}

// frameDecoder returns d's zstd decoder for whole frames, made at first
// use.
func (d *Decoder) frameDecoder() (*zstd.Decoder, error) {
	if d.dec == nil {
		dec, err := zstd.NewReader(nil,
			zstd.WithDecoderConcurrency(d.workers),
			zstd.WithDecoderMaxWindow(maxFrameContent),
			zstd.WithDecoderMaxMemory(maxFrameContent),
			zstd.WithDecodeAllCapLimit(true))
		if err != nil {
			return nil, fmt.Errorf("zstd decoder: %w", err)
		}
		d.dec = dec
	}
	return d.dec, nil
}

// framePipeline is what the goroutines of one decodeFrames call share.
// Every frame job goes, in order, to the workers (jobs), the writer
// (writeq) and the hasher (queue); its plaintext buffer returns to bufs
// once both the writer and the hasher are done with it.
type framePipeline struct {
	dec    *zstd.Decoder
	size   int64          // the most plaintext the body may hold
	bufs   chan []byte    // free plaintext buffers (the Decoder's)
	frames chan []byte    // free compressed frame buffers
	queue  chan *frameJob // in order, to the hasher
	writeq chan *frameJob // in order, to the writer
	jobs   chan *frameJob // to the workers
	quit   chan struct{}  // closed when the hasher stops early
	// writeErr is the first error of the destination writer.
	writeErr atomic.Pointer[error]
	wg       sync.WaitGroup // the workers and the writer
}

func (d *Decoder) newFramePipeline(dec *zstd.Decoder, size int64) *framePipeline {
	// Frames in flight: one per worker, one being written and hashed, one
	// read ahead.
	inflight := d.workers + 2
	p := &framePipeline{
		dec:    dec,
		size:   size,
		bufs:   make(chan []byte, inflight),
		frames: make(chan []byte, inflight),
		queue:  make(chan *frameJob, inflight),
		writeq: make(chan *frameJob, inflight),
		jobs:   make(chan *frameJob, inflight),
		quit:   make(chan struct{}),
	}
	for _, b := range d.plainBufs(inflight, int(min(size, FrameSize))) {
		p.bufs <- b
	}
	for _, f := range d.frames {
		p.frames <- f[:0]
	}
	d.frames = nil
	return p
}

// release drops one reference to j's plaintext buffer (the writer's or the
// hasher's); the last one returns it.
func (p *framePipeline) release(j *frameJob) {
	if j.refs.Add(-1) == 0 {
		p.bufs <- j.buf // never blocks: there are inflight buffers
	}
}

// work decodes frames until the jobs end or the hasher stops.
func (p *framePipeline) work() {
	defer p.wg.Done()
	for {
		select {
		case j, ok := <-p.jobs:
			if !ok {
				return
			}
			p.decode(j)
		case <-p.quit:
			return
		}
	}
}

// decode decodes j's frame into its buffer, marks j decoded and recycles
// the compressed frame.
func (p *framePipeline) decode(j *frameJob) {
	j.out, j.err = p.dec.DecodeAll(j.frame, j.buf[:0])
	if j.err == nil && len(j.out) != j.fcs {
		j.err = fmt.Errorf("frame decodes to %d bytes, its header says %d", len(j.out), j.fcs)
	}
	close(j.decoded)
	select {
	case p.frames <- j.frame[:0]:
	default:
	}
}

// write writes the decoded frames to w at their offsets, in order, until
// the first error of w (kept in writeErr).
func (p *framePipeline) write(w io.WriterAt) {
	defer p.wg.Done()
	for j := range p.writeq {
		select {
		case <-j.decoded:
		case <-p.quit:
			return
		}
		if j.err == nil && p.writeErr.Load() == nil {
			if _, err := w.WriteAt(j.out, j.off); err != nil {
				p.writeErr.Store(&err)
			}
		}
		p.release(j)
	}
}

// read splits the body into frames (reading it decrypts it) and hands
// them out in order. A failure, a frame that is too long for size, or one
// that is not decoded on its own (then with the rest of the body) goes to
// the hasher as the last job.
func (p *framePipeline) read(br *bufio.Reader) {
	defer close(p.jobs)
	defer close(p.writeq)
	defer close(p.queue)
	var total int64
	for {
		frame, fcs, ok, err := readFrame(br, p.frameBuf())
		switch {
		case err == io.EOF:
			return
		case err != nil:
			p.send(&frameJob{err: corrupt(err), decoded: closedChan})
			return
		case !ok:
			p.send(&frameJob{off: total, rest: io.MultiReader(bytes.NewReader(frame), br), decoded: closedChan})
			return
		case int64(fcs) > p.size-total:
			p.send(&frameJob{err: ErrTooLong, decoded: closedChan})
			return
		}
		var buf []byte
		select {
		case buf = <-p.bufs:
		case <-p.quit:
			return
		}
		if cap(buf) < fcs {
			buf = make([]byte, 0, fcs)
		}
		j := &frameJob{frame: frame, fcs: fcs, off: total, buf: buf, decoded: make(chan struct{})}
		j.refs.Store(2)
		total += int64(fcs)
		// None of these blocks: at most inflight jobs hold a buffer.
		p.jobs <- j
		p.writeq <- j
		if !p.send(j) {
			return
		}
	}
}

// frameBuf returns a compressed frame buffer for the reader: a recycled
// one, else a new one with room for a frame of FrameSize that compresses
// to half (WAL: a third to a tenth): growing a buffer from less cost more
// than the buffers' memory.
func (p *framePipeline) frameBuf() []byte {
	select {
	case f := <-p.frames:
		return f
	default:
		return make([]byte, 0, FrameSize/2)
	}
}

// send queues j for the hasher, unless the hasher has stopped.
func (p *framePipeline) send(j *frameJob) bool {
	select {
	case p.queue <- j:
		return true
	case <-p.quit:
		return false
	}
}

// hash passes the decoded frames to h in order, on the calling goroutine,
// and streams the rest of a body whose frames cannot all be decoded on
// their own. It returns the number of plaintext bytes and the first
// failure.
func (p *framePipeline) hash(h io.Writer, emit func(int64, []byte) error) (int64, error) {
	var n int64
	for j := range p.queue {
		<-j.decoded
		if j.err != nil {
			return n, corrupt(j.err)
		}
		if we := p.writeErr.Load(); we != nil {
			return n, *we
		}
		if j.rest != nil {
			// The frames before it are written: the writer has
			// stopped (its queue is closed) once they are.
			p.wg.Wait()
			k, err := streamPieces(j.rest, j.off, p.size-j.off, emit)
			n += k
			if err != nil {
				return n, err
			}
			continue
		}
		h.Write(j.out)
		n += int64(len(j.out))
		p.release(j)
	}
	return n, nil
}

// finish ends the pipeline after hash returned err: after a failure it
// stops the others at once. Once the workers and the writer are done with
// the plaintext buffers (the reader never touches them), the decoder's
// next call may reuse them; after a success the reader has returned too
// (it closed the queue), so the frame buffers are kept for it as well
// (after a failure the reader may still be filling one). It returns err,
// else the writer's first error.
func (p *framePipeline) finish(d *Decoder, err error) error {
	if err != nil {
		close(p.quit)
	}
	p.wg.Wait()
	if err == nil {
		for len(p.frames) > 0 {
			d.frames = append(d.frames, <-p.frames)
		}
	}
	if we := p.writeErr.Load(); err == nil && we != nil {
		err = *we
	}
	return err
}

const zstdMagic = 0xFD2FB528

// readFrame reads one zstd frame from br, appending it to frame. ok is false
// when the frame is not one that DecodeTo decodes on its own (no content
// size, larger than maxFrameContent, a skippable frame, or not zstd at all):
// frame then holds the bytes read so far, for the streaming decoder, which
// decodes the rest or reports the damage. io.EOF means a clean end before a
// frame; other errors are of reading (damage, or the source).
func readFrame(br *bufio.Reader, frame []byte) (_ []byte, fcs int, ok bool, err error) {
	frame, err = appendN(br, frame, 5)
	if err != nil {
		if err == io.EOF && len(frame) == 0 {
			return nil, 0, false, io.EOF
		}
		return frame, 0, false, err
	}
	if binary.LittleEndian.Uint32(frame) != zstdMagic {
		return frame, 0, false, nil
	}
	fhd := frame[4]
	single := fhd&0x20 != 0
	if fhd&0x08 != 0 || fhd&0x03 != 0 { // reserved bit, dictionary
		return frame, 0, false, nil
	}
	fcsLen := [4]int{0, 2, 4, 8}[fhd>>6]
	if fcsLen == 0 && single {
		fcsLen = 1
	}
	if fcsLen == 0 {
		return frame, 0, false, nil
	}
	hlen := fcsLen
	if !single {
		hlen++ // window descriptor
	}
	if frame, err = appendN(br, frame, hlen); err != nil {
		return frame, 0, false, err
	}
	f := frame[len(frame)-fcsLen:]
	var c uint64
	switch fcsLen {
	case 1:
		c = uint64(f[0])
	case 2:
		c = uint64(binary.LittleEndian.Uint16(f)) + 256
	case 4:
		c = uint64(binary.LittleEndian.Uint32(f))
	case 8:
		c = binary.LittleEndian.Uint64(f)
	}
	if c > maxFrameContent {
		return frame, 0, false, nil
	}
	fcs = int(c)
	// A frame written by an encoder is at most its content, plus a 3-byte
	// header per block (of at most 128 KiB), plus its header and checksum.
	limit := len(frame) + fcs + 3*(fcs>>17+2) + 4
	for {
		if frame, err = appendN(br, frame, 3); err != nil {
			return frame, 0, false, err
		}
		bh := frame[len(frame)-3:]
		h := uint32(bh[0]) | uint32(bh[1])<<8 | uint32(bh[2])<<16
		last, typ, bsize := h&1 != 0, (h>>1)&3, int(h>>3)
		switch typ {
		case 1: // RLE: one byte
			bsize = 1
		case 3: // reserved
			return frame, 0, false, nil
		}
		if len(frame)+bsize > limit {
			return frame, 0, false, nil
		}
		if frame, err = appendN(br, frame, bsize); err != nil {
			return frame, 0, false, err
		}
		if last {
			break
		}
	}
	if fhd&0x04 != 0 { // content checksum
		if frame, err = appendN(br, frame, 4); err != nil {
			return frame, 0, false, err
		}
	}
	return frame, fcs, true, nil
}

// appendN appends the next n bytes of br to b.
func appendN(br *bufio.Reader, b []byte, n int) ([]byte, error) {
	b = slices.Grow(b, n)
	k, err := io.ReadFull(br, b[len(b):len(b)+n])
	b = b[:len(b)+k]
	if err == io.ErrUnexpectedEOF || (err == io.EOF && len(b) > 0) {
		return b, fmt.Errorf("truncated zstd frame: %w", io.ErrUnexpectedEOF)
	}
	return b, err
}

// Arena hands out large, short-lived buffers from one anonymous memory
// mapping that asks for transparent huge pages (Linux, THP mode "madvise" or
// "always"), else from the Go heap. A process that lives for one WAL segment
// spends much of its time in page faults on fresh memory (in a VM most of
// all: 4 KiB each); a huge page takes one fault per 2 MiB. Free unmaps the
// mapping: nothing may touch its buffers afterwards, so they must never
// reach code that may keep them (a Store's Put, an HTTP body).
type Arena struct {
	m    []byte // the mapping, nil on the heap
	free []byte // what is left of it
}

const hugePage = 2 << 20

// NewArena reserves n bytes (touched pages only count as memory).
func NewArena(n int) *Arena {
	n = (n + 63) &^ 63
	if n < hugePage {
		return &Arena{}
	}
	m, err := syscall.Mmap(-1, 0, n+hugePage, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		return &Arena{}
	}
	off := (hugePage - int(uintptr(unsafe.Pointer(&m[0]))%hugePage)) % hugePage
	a := &Arena{m: m, free: m[off : off+n : off+n]}
	if runtime.GOOS == "linux" {
		// A hint (MADV_HUGEPAGE): without it, 4 KiB pages.
		const madvHugepage = 14
		syscall.Syscall(syscall.SYS_MADVISE, uintptr(unsafe.Pointer(&a.free[0])), uintptr(len(a.free)), madvHugepage)
	}
	return a
}

// Alloc returns n bytes from the arena, or from the heap when it is used up.
func (a *Arena) Alloc(n int) []byte {
	if n <= len(a.free) {
		b := a.free[:n:n]
		a.free = a.free[min((n+63)&^63, len(a.free)):]
		return b
	}
	return make([]byte, n)
}

// Free releases the mapping.
func (a *Arena) Free() {
	if a.m != nil {
		_ = syscall.Munmap(a.m)
		a.m, a.free = nil, nil
	}
}
