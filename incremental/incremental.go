package incremental

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"path"
	"strconv"
	"strings"
)

// Magic starts every INCREMENTAL.* file (host byte order on the server;
// little-endian on every platform PostgreSQL 17+ backs up from in practice).
const Magic = 0xd3ae1f0d

// Prefix names an incremental file: INCREMENTAL.<relfilenode>[.<segno>]
// stands for the relation segment <relfilenode>[.<segno>] in the same
// directory.
const Prefix = "INCREMENTAL."

// DefaultSegmentBlocks is RELSEG_SIZE of a default PostgreSQL build (1 GiB
// segments of 8 KiB blocks): the most blocks one segment file holds.
const DefaultSegmentBlocks = 131072

// ErrFormat marks an incremental file that does not follow the format.
var ErrFormat = errors.New("malformed incremental file")

// Header is the head of an incremental file.
type Header struct {
	// Blocks are the segment-relative numbers of the blocks the file holds,
	// ascending; their contents follow the header in that order.
	Blocks []uint32
	// TruncateBlocks is the length, in blocks, the rebuilt file has at
	// least: blocks below it that the file does not hold come from the
	// parent; blocks at or above it exist only if the file holds them.
	TruncateBlocks uint32
	// Length is the byte length of the header, padding included: where
	// the first block starts.
	Length int64
}

// FileBlocks is the length in blocks of the rebuilt file.
func (h *Header) FileBlocks() uint32 {
	n := h.TruncateBlocks
	if len(h.Blocks) > 0 && h.Blocks[len(h.Blocks)-1] >= n {
		n = h.Blocks[len(h.Blocks)-1] + 1
	}
	return n
}

// Size is the byte length of the whole incremental file.
func (h *Header) Size(blockSize int) int64 {
	return h.Length + int64(len(h.Blocks))*int64(blockSize)
}

// Limits are the build constants a file is checked against (from
// pg_control: BLCKSZ and RELSEG_SIZE).
type Limits struct {
	BlockSize     int    // bytes per block, a power of two from 1 KiB to 32 KiB
	SegmentBlocks uint32 // blocks per segment file
}

func (l Limits) check() error {
	if l.BlockSize < 1024 || l.BlockSize > 32768 || l.BlockSize&(l.BlockSize-1) != 0 {
		return fmt.Errorf("block size %d is not a power of two from 1024 to 32768", l.BlockSize)
	}
	if l.SegmentBlocks == 0 {
		return errors.New("segment size of 0 blocks")
	}
	return nil
}

// ReadHeader reads the header of an incremental file, padding included,
// and checks it against the limits.
func ReadHeader(r io.Reader, l Limits) (*Header, error) {
	if err := l.check(); err != nil {
		return nil, err
	}
	var fixed [12]byte
	if _, err := io.ReadFull(r, fixed[:]); err != nil {
		return nil, fmt.Errorf("%w: header: %w", ErrFormat, noEOF(err))
	}
	if m := binary.LittleEndian.Uint32(fixed[0:]); m != Magic {
		return nil, fmt.Errorf("%w: magic number %#x, want %#x", ErrFormat, m, uint32(Magic))
	}
	n := binary.LittleEndian.Uint32(fixed[4:])
	h := &Header{TruncateBlocks: binary.LittleEndian.Uint32(fixed[8:])}
	if n > l.SegmentBlocks {
		return nil, fmt.Errorf("%w: %d blocks, more than a segment's %d", ErrFormat, n, l.SegmentBlocks)
	}
	if h.TruncateBlocks > l.SegmentBlocks {
		return nil, fmt.Errorf("%w: truncation length of %d blocks, more than a segment's %d", ErrFormat, h.TruncateBlocks, l.SegmentBlocks)
	}
	h.Length = 12 + 4*int64(n)
	if n == 0 {
		return h, nil
	}
	raw := make([]byte, 4*int64(n))
	if _, err := io.ReadFull(r, raw); err != nil {
		return nil, fmt.Errorf("%w: block numbers: %w", ErrFormat, noEOF(err))
	}
	h.Blocks = make([]uint32, n)
	for i := range h.Blocks {
		b := binary.LittleEndian.Uint32(raw[4*i:])
		if b >= l.SegmentBlocks {
			return nil, fmt.Errorf("%w: block %d beyond a segment's %d blocks", ErrFormat, b, l.SegmentBlocks)
		}
		if i > 0 && b <= h.Blocks[i-1] {
			return nil, fmt.Errorf("%w: block numbers not ascending (%d after %d)", ErrFormat, b, h.Blocks[i-1])
		}
		h.Blocks[i] = b
	}
	// The blocks start at the next multiple of the block size.
	if pad := (int64(l.BlockSize) - h.Length%int64(l.BlockSize)) % int64(l.BlockSize); pad > 0 {
		if _, err := io.CopyN(io.Discard, r, pad); err != nil {
			return nil, fmt.Errorf("%w: header padding: %w", ErrFormat, noEOF(err))
		}
		h.Length += pad
	}
	return h, nil
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// File is the restored file an incremental file is applied to.
type File interface {
	io.WriterAt
	Truncate(size int64) error
}

// Apply reads a whole incremental file of size bytes from r and applies it
// to f, which holds the same file as of the parent backup: f is cut or
// extended (with zeros) to the truncation length, then every block the
// incremental file holds is written at its place. buf is scratch space of
// at least one block. A size that does not match the header is an error
// before f is touched.
func Apply(f File, r io.Reader, size int64, l Limits, buf []byte) (*Header, error) {
	h, err := ReadHeader(r, l)
	if err != nil {
		return nil, err
	}
	if want := h.Size(l.BlockSize); size != want {
		return nil, fmt.Errorf("%w: %d bytes, but its header describes %d", ErrFormat, size, want)
	}
	if len(buf) < l.BlockSize {
		buf = make([]byte, l.BlockSize)
	}
	buf = buf[:l.BlockSize]
	bs := int64(l.BlockSize)
	if err := f.Truncate(int64(h.TruncateBlocks) * bs); err != nil {
		return nil, fmt.Errorf("truncate to %d blocks: %w", h.TruncateBlocks, err)
	}
	for _, b := range h.Blocks {
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, fmt.Errorf("%w: block %d: %w", ErrFormat, b, noEOF(err))
		}
		if _, err := f.WriteAt(buf, int64(b)*bs); err != nil {
			return nil, fmt.Errorf("write block %d: %w", b, err)
		}
	}
	return h, nil
}

// Target returns the name of the file an incremental file stands for
// (INCREMENTAL.16384.1 → 16384.1, in the same directory) and whether name
// is an incremental file at all.
func Target(name string) (string, bool) {
	dir, base := path.Split(name)
	rest, ok := strings.CutPrefix(base, Prefix)
	if !ok || rest == "" {
		return name, false
	}
	return dir + rest, true
}

// From is the INCREMENTAL FROM part of a backup_label: the start of the
// parent backup.
type From struct {
	LSN      string // as written: %X/%08X or %X/%X
	Timeline uint32
}

// StripLabel returns backup_label without its INCREMENTAL FROM lines (what
// a rebuilt data directory must carry: PostgreSQL refuses to start on an
// incremental backup's label) and the parent's start those lines named
// (ok false for the label of a full backup).
func StripLabel(label []byte) (out []byte, from From, ok bool, err error) {
	var b bytes.Buffer
	var haveLSN, haveTLI bool
	sc := bufio.NewScanner(bytes.NewReader(label))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if v, found := strings.CutPrefix(line, "INCREMENTAL FROM LSN: "); found {
			from.LSN, haveLSN = strings.TrimSpace(v), true
			continue
		}
		if v, found := strings.CutPrefix(line, "INCREMENTAL FROM TLI: "); found {
			tli, perr := strconv.ParseUint(strings.TrimSpace(v), 10, 32)
			if perr != nil || tli == 0 {
				return nil, From{}, false, fmt.Errorf("backup_label: bad INCREMENTAL FROM TLI %q", v)
			}
			from.Timeline, haveTLI = uint32(tli), true
			continue
		}
		b.WriteString(line)
		b.WriteByte('\n')
	}
	if err := sc.Err(); err != nil {
		return nil, From{}, false, fmt.Errorf("backup_label: %w", err)
	}
	if haveLSN != haveTLI {
		return nil, From{}, false, errors.New("backup_label: INCREMENTAL FROM LSN and TLI must come together")
	}
	return b.Bytes(), from, haveLSN, nil
}
