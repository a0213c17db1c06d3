package wal

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/pgark/pgark/repo"
	"github.com/pgark/pgark/storage"
)

// ErrContentConflict means the repository already holds different content
// under the name being pushed. It is never overwritten.
var ErrContentConflict = errors.New("different content is already archived under this name")

// ErrBadInput wraps errors about the file to push (missing, unreadable, not
// WAL, wrong cluster).
var ErrBadInput = errors.New("bad input")

// maxTextFile bounds .history and .backup files (they are a few hundred bytes).
const maxTextFile = 1 << 20

// PushOptions configure a push.
type PushOptions struct {
	Codec repo.Codec
	// RetryFor bounds the retries of transient storage errors.
	RetryFor time.Duration
	Log      *slog.Logger

	// enc, when set, is the encoder of the codec shared by the pushes of
	// one batch (PushAhead): made once, its encoders and their memory
	// serve every push instead of being made and faulted in anew.
	enc *repo.FrameEncoder
	// scratch, when set, keeps the object buffer of one push for the next
	// push of the same goroutine (in a batch): a fresh 16 MiB buffer is
	// cleared by the runtime each time, about 3 ms of CPU. Reusing it is
	// safe because a Store does not use the reader after Put returns.
	scratch *[]byte
}

// PushResult says what a push did.
type PushResult struct {
	Name          string
	Key           string
	Size          int64
	AlreadyStored bool // identical content was archived before
	SHA256        string
	// CRC32C of the content pushed (Castagnoli): with the size, the proof
	// that the push-ahead spool checks before it answers for a file.
	CRC32C uint32
	// ident is the file's identity (device, inode, size, mtime, ctime),
	// the same before and after it was read, when push could take it: a
	// cheaper proof than the CRC-32C that the file is unchanged.
	ident *fileIdent
}

// Push archives the WAL file at path into the repository. It returns only
// when the object is durable. Identical content already archived is success;
// different content is ErrContentConflict and the stored object is untouched.
func Push(ctx context.Context, r *repo.Repo, path string, o PushOptions) (PushResult, error) {
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	n, err := ParseName(filepath.Base(path))
	if err != nil {
		return PushResult{}, fmt.Errorf("%w: %w", ErrBadInput, err)
	}
	f, err := openRegular(path)
	if err != nil {
		return PushResult{}, err
	}
	defer f.Close()

	// A file of up to inMemoryMax bytes (every default-size segment) is
	// read once, in pieces that are hashed in order and compressed on
	// several cores at once into the object: the bytes hashed are exactly
	// the bytes stored, and the object is complete (and its hash known)
	// before the upload starts. Larger files are hashed first, then
	// streamed.
	enc := o.enc
	if enc == nil {
		if enc, err = repo.NewFrameEncoder(o.Codec, workers()); err != nil {
			return PushResult{}, err
		}
		defer enc.Close()
	}
	before, _ := f.Stat()
	var buf []byte
	if o.scratch != nil {
		buf = *o.scratch
	}
	sums, size, head, obj, err := readForPush(f, enc, o.Codec, buf)
	if err != nil {
		return PushResult{}, fmt.Errorf("read %s: %w", path, err)
	}
	if o.scratch != nil && obj != nil {
		// Put has returned when Push does: the next push may reuse it.
		defer func() { *o.scratch = obj[:0] }()
	}
	after, _ := f.Stat()
	ident := sameIdent(before, after, size)
	if err := checkContent(ctx, r, n, size, head); err != nil {
		return PushResult{}, err
	}
	sum := sums.sha256
	res := PushResult{Name: n.Raw, Key: ObjectKey(n), Size: size, SHA256: sum, CRC32C: sums.crc32c, ident: ident}
	meta := map[string]string{storage.MetaSHA256: sum, storage.MetaSize: strconv.FormatInt(size, 10), storage.MetaCRC32C: formatCRC(sums.crc32c)}
	if o.Codec.Signer != nil {
		meta[storage.MetaSigner], meta[storage.MetaSignature] = o.Codec.Signer.Sign(res.Key, sum, size)
	}
	if fps := o.Codec.Recipients.Fingerprints(); len(fps) > 0 {
		meta[storage.MetaRecipients] = strings.Join(fps, ",")
	}
	if n.Kind == KindHistory {
		// The switch points in plaintext metadata, for continuity
		// checks without the private key. Only when the file parses
		// and is what was hashed.
		if b, err := os.ReadFile(path); err == nil && int64(len(b)) == size {
			if h, err := ParseHistory(n.Timeline, b); err == nil {
				meta[MetaTimelines] = FormatTimelinesMeta(h)
			}
		}
	}

	compare := func() (PushResult, error) {
		info, err := r.Store.Stat(ctx, res.Key)
		if err != nil {
			return res, fmt.Errorf("compare with the archived %s: %w", n.Raw, err)
		}
		if info.Meta[storage.MetaSHA256] == sum && info.Meta[storage.MetaSize] == meta[storage.MetaSize] {
			res.AlreadyStored = true
			log.Info("already archived with identical content", "wal", n.Raw)
			return res, nil
		}
		return res, fmt.Errorf("%w: %s is archived in %s with SHA-256 %s and %s bytes, the file to push has SHA-256 %s and %d bytes; the archived copy is kept. Likely causes: two servers archive into one repository, or a server was restored without a new timeline",
			ErrContentConflict, n.Raw, r.Store, short(info.Meta[storage.MetaSHA256]), info.Meta[storage.MetaSize], short(sum), size)
	}
	if r.Config.WriteMode == repo.WriteHeadThenPut {
		_, err := r.Store.Stat(ctx, res.Key)
		if err == nil {
			return compare()
		}
		if !storage.IsNotFound(err) {
			return res, fmt.Errorf("check %s in the repository: %w", n.Raw, err)
		}
	}

	// Store, create-only. A large file is read again, compressed, encrypted
	// and uploaded on the way, and hashed again: if it changed since the
	// first pass, the upload is aborted and nothing is stored.
	err = retryTransient(ctx, o.RetryFor, log, "push "+n.Raw, func() error {
		if obj != nil {
			return r.Store.Put(ctx, res.Key, bytes.NewReader(obj), storage.PutOptions{Size: int64(len(obj)), Meta: meta})
		}
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return &storage.PermanentError{Err: err}
		}
		return putStreamed(ctx, r.Store, res.Key, f, enc, o.Codec, sum, size, meta)
	})
	if storage.IsExists(err) {
		return compare()
	}
	if err != nil {
		return res, fmt.Errorf("store %s: %w", n.Raw, err)
	}
	return res, nil
}

func short(sum string) string {
	if len(sum) > 16 {
		return sum[:16] + "..."
	}
	return sum
}

func openRegular(path string) (*os.File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadInput, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%w: %w", ErrBadInput, err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%w: %s is not a regular file", ErrBadInput, path)
	}
	return f, nil
}

// inMemoryMax is the largest file that push reads into memory once (its
// compressed object, that is); larger ones (segments of 128 MiB to 1 GiB) are
// streamed twice, the second pass verified against the first.
const inMemoryMax = 64 << 20

// workers is how many goroutines compress: compression is push's largest
// cost, several times the hash's.
func workers() int { return min(runtime.GOMAXPROCS(0), 4) }

// pieceSize is the size of the piece of a file that starts at off: the
// first 2 MiB come in pieces of 256 KiB, 768 KiB and 1 MiB, then
// repo.FrameSize. Small first frames let fetch start hashing (which is
// sequential, and its longest step) almost at once, instead of after a
// whole frame is read and decoded; they cost a few hundred bytes per object.
func pieceSize(off int64) int {
	switch {
	case off < 256<<10:
		return 256<<10 - int(off)
	case off < 1<<20:
		return 1<<20 - int(off)
	case off < 2<<20:
		return 2<<20 - int(off)
	}
	return repo.FrameSize
}

// readForPush hashes the file and returns its size and first bytes, and, when
// it is at most inMemoryMax bytes, the object to store.
func readForPush(f *os.File, enc *repo.FrameEncoder, c repo.Codec, buf []byte) (sum fileSums, size int64, head, obj []byte, err error) {
	fi, err := f.Stat()
	if err != nil {
		return sum, 0, nil, nil, err
	}
	if fi.Size() > inMemoryMax {
		sum, size, head, err = encodeFile(f, -1, nil, nil)
		return sum, size, head, nil, err
	}
	// The object's own buffer, from the heap (never from an Arena: it
	// goes to a Store's Put), or buf when that is large enough: frames are
	// at most a little larger than their content.
	need := enc.MaxEncodedSize(int(fi.Size())) + objOverhead(c, int(fi.Size()))
	if cap(buf) < need {
		buf = make([]byte, 0, need)
	}
	ob := &appendWriter{b: buf[:0]}
	ow, err := repo.NewEncodedWriter(ob, c)
	if err != nil {
		return sum, 0, nil, nil, err
	}
	sum, size, head, err = encodeFile(f, fi.Size(), enc, func(p []byte) error {
		_, err := ow.Write(p)
		return err
	})
	if errors.Is(err, errLonger) {
		err = errors.New("the file grew while it was being read")
	}
	if err == nil {
		err = ow.Close()
	}
	return sum, size, head, ob.b, err
}

// objOverhead bounds what the object header and encryption add: age adds 16
// bytes per 64 KiB chunk and a header of about 200 bytes per recipient.
func objOverhead(c repo.Codec, n int) int { return n/4096 + 1024 + 256*c.Recipients.Len() }

type appendWriter struct{ b []byte }

func (a *appendWriter) Write(p []byte) (int, error) {
	a.b = append(a.b, p...)
	return len(p), nil
}

var errLonger = errors.New("longer than expected")

// piece is one piece of the file on its way from the reader through the
// hasher and an encoder to the emitter.
type piece struct {
	buf  []byte
	refs atomic.Int32 // the hasher and the encoder: the last one frees buf
	out  []byte       // the encoded frame
	err  error
	done chan struct{}
}

// fileSums are the checksums of a file's content.
type fileSums struct {
	sha256 string
	crc32c uint32
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// encodeFile reads f to its end in pieces (pieceSize), hashes them in
// order and, with an encoder, encodes each into a frame on workers()
// goroutines at once and passes the frames to emit in order, on the calling
// goroutine (a frame is valid until emit returns). Reading more than limit
// bytes (limit >= 0) fails with errLonger. A few pieces are in flight at
// most, whatever the file's size.
func encodeFile(f io.Reader, limit int64, enc *repo.FrameEncoder, emit func([]byte) error) (sum fileSums, size int64, head []byte, err error) {
	nw := workers()
	if enc == nil {
		nw = 0
	}
	// Pieces in flight: one per encoder (and the hasher at the same time),
	// and one being read. Frames: one per encoder and one in emit. Each
	// more costs memory (up to 2 MiB each) and measured no faster.
	nbuf, nout := max(nw+1, 2), nw+1
	bufSize := repo.FrameSize
	if limit >= 0 {
		bufSize = int(min(limit+1, int64(bufSize)))
	}
	arena := repo.NewArena(nbuf * bufSize)
	free := make(chan []byte, nbuf)
	for range nbuf {
		free <- arena.Alloc(bufSize)
	}
	outs := make(chan []byte, nout)
	for range nout {
		var out []byte
		if nw > 0 {
			out = make([]byte, 0, enc.MaxEncodedSize(bufSize))
		}
		outs <- out
	}
	if nw > 0 && enc.Compresses() {
		// The encoders allocate their memory next: 1.3 MiB of tables, a
		// 1 MiB history and block buffers each.
		warmHeap(nw*4<<20 + 2<<20)
	}
	order := make(chan *piece, nout) // to the emitter
	hashq := make(chan *piece, nbuf)
	jobs := make(chan *piece, nbuf)
	quit := make(chan struct{})
	release := func(p *piece) {
		if p.refs.Add(-1) == 0 {
			free <- p.buf // never blocks: there are nbuf buffers
		}
	}
	h := sha256.New()
	var crc uint32
	var wg sync.WaitGroup
	wg.Add(1 + nw)
	go func() {
		defer wg.Done()
		for p := range hashq {
			h.Write(p.buf)
			crc = crc32.Update(crc, castagnoli, p.buf)
			release(p)
		}
	}()
	for range nw {
		go func() {
			defer wg.Done()
			for p := range jobs {
				p.out = enc.Encode(p.buf, p.out[:0])
				release(p)
				close(p.done)
			}
		}()
	}
	// The reader. It takes a buffer and an output for each piece, in order
	// (so that the emitter always gets the next frame), and closes the
	// channels that end the hasher and the encoders.
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		defer close(order)
		defer close(jobs)
		defer close(hashq)
		for {
			var buf, out []byte
			select {
			case buf = <-free:
			case <-quit:
				return
			}
			k, rerr := io.ReadFull(f, buf[:min(cap(buf), pieceSize(size))])
			if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
				rerr = nil
			}
			if k == 0 && rerr == nil {
				return
			}
			p := &piece{buf: buf[:k], done: make(chan struct{})}
			switch {
			case rerr != nil:
				p.err = rerr
			case limit >= 0 && int64(k) > limit-size:
				p.err = errLonger
			}
			if p.err == nil && nw > 0 {
				select {
				case out = <-outs:
				case <-quit:
					return
				}
				p.out = out
			}
			if p.err != nil {
				close(p.done)
				select {
				case order <- p:
				case <-quit:
				}
				return
			}
			if size == 0 {
				head = bytes.Clone(buf[:min(k, LongHeaderSize)])
			}
			size += int64(k)
			if nw == 0 {
				p.refs.Store(1)
				close(p.done)
			} else {
				p.refs.Store(2)
				jobs <- p // never blocks: at most nbuf pieces hold a buffer
				select {
				case order <- p:
				case <-quit:
					return
				}
			}
			hashq <- p // never blocks either
		}
	}()
	stop := func(err error) (fileSums, int64, []byte, error) {
		if err != nil {
			close(quit)
		}
		<-readerDone
		wg.Wait()
		arena.Free() // the reader, the hasher and the encoders are done with it
		if err != nil {
			return fileSums{}, 0, nil, err
		}
		return fileSums{sha256: hex.EncodeToString(h.Sum(nil)), crc32c: crc}, size, head, nil
	}
	for p := range order {
		<-p.done
		if p.err != nil {
			return stop(p.err)
		}
		if err := emit(p.out); err != nil {
			return stop(err)
		}
		outs <- p.out
	}
	return stop(nil)
}

var warmed sync.Once

// warmHeap gives the Go heap n bytes of memory that is already backed (in
// huge pages where the system offers them) and frees it, once per process,
// so that the zstd encoders allocate their hash tables and windows in it.
// Fresh memory is mapped to the shared zero page when first read and copied
// when first written, and the encoders read each entry of their tables
// before they write it: each such copy interrupts the other cores running
// the process (a TLB shootdown). Measured on a 2-core VM, per 16 MiB
// segment: 630 shootdowns and 4300 page faults without, about 60 and 2400
// with, and 7 ms less CPU. It costs a garbage collection of a small heap
// (in a short-lived wal-push, the first one anyway); later pushes in the
// same process find the heap's memory backed already.
func warmHeap(n int) {
	warmed.Do(func() {
		b := make([]byte, n+hugePage)
		if runtime.GOOS == "linux" {
			// A hint (MADV_HUGEPAGE) for the aligned part: one fault
			// per 2 MiB instead of 512.
			p := uintptr(unsafe.Pointer(&b[0]))
			off := (hugePage - p%hugePage) % hugePage
			syscall.Syscall(syscall.SYS_MADVISE, p+off, uintptr(n), madvHugepage)
		}
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1
		}
		runtime.KeepAlive(b)
		runtime.GC()
	})
}

const (
	hugePage     = 2 << 20
	madvHugepage = 14
)

// checkContent refuses what is not the WAL file its name says, and WAL of
// another cluster.
func checkContent(ctx context.Context, r *repo.Repo, n Name, size int64, head []byte) error {
	switch n.Kind {
	case KindSegment, KindPartial:
		h, err := ParseHeader(head)
		if err == nil {
			err = CheckSegment(n, size, h)
		}
		if err != nil {
			return fmt.Errorf("%w: %s: %w", ErrBadInput, n.Raw, err)
		}
		if err := r.BindCluster(ctx, h.SystemID, h.SegSize, "wal-push "+n.Raw); err != nil {
			if errors.Is(err, repo.ErrWrongCluster) {
				return fmt.Errorf("%w: refusing %s: %w", ErrBadInput, n.Raw, err)
			}
			return err
		}
	case KindHistory, KindBackup:
		if size > maxTextFile || size == 0 || bytes.IndexByte(head, 0) >= 0 {
			return fmt.Errorf("%w: %s does not look like a PostgreSQL %s (%d bytes)", ErrBadInput, n.Raw, n.Kind, size)
		}
		if n.Kind == KindBackup && !bytes.HasPrefix(head, []byte("START WAL LOCATION:")) {
			return fmt.Errorf("%w: %s does not start with \"START WAL LOCATION:\": not a backup history file", ErrBadInput, n.Raw)
		}
	}
	return nil
}

// putStreamed reads f again, compresses, encrypts and uploads it, create-only,
// and fails the upload (nothing is stored) if its content is not what the
// first pass hashed.
func putStreamed(ctx context.Context, s storage.Store, key string, f io.Reader, enc *repo.FrameEncoder, c repo.Codec, sum string, size int64, meta map[string]string) error {
	pr, pw := io.Pipe()
	go func() {
		ow, err := repo.NewEncodedWriter(pw, c)
		if err == nil {
			var gotSum fileSums
			var n int64
			gotSum, n, _, err = encodeFile(f, size, enc, func(p []byte) error {
				_, err := ow.Write(p)
				return err
			})
			if err == nil && (n != size || gotSum.sha256 != sum) || errors.Is(err, errLonger) {
				err = &storage.PermanentError{Err: fmt.Errorf("%w: the file changed while it was being archived", ErrBadInput)}
			}
			if err == nil {
				err = ow.Close()
			}
		}
		pw.CloseWithError(err)
	}()
	err := s.Put(ctx, key, pr, storage.PutOptions{Size: -1, Meta: meta})
	pr.CloseWithError(errors.New("upload ended"))
	return err
}

// retryTransient runs fn until it succeeds, fails permanently, or the time is
// up. Exists and not-found are answers, not failures: they end the loop.
func retryTransient(ctx context.Context, limit time.Duration, log *slog.Logger, what string, fn func() error) error {
	start := time.Now()
	backoff := 200 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := fn()
		if err == nil || storage.IsPermanent(err) || ctx.Err() != nil {
			return err
		}
		if time.Since(start)+backoff > limit {
			return fmt.Errorf("%w (gave up after %d attempts in %s)", err, attempt, time.Since(start).Round(time.Millisecond))
		}
		log.Warn("transient error, retrying", "op", what, "attempt", attempt, "err", err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}
