package tarstream

// Scanner and Splitter are io.Writers fed with the raw tar stream as it arrives (for example
// io.Copy(splitter, archiveReader)); neither buffers member data: only header
// blocks (and the data of PAX / GNU long-name headers, at most
// maxHeaderPhase bytes per member) are held. They parse the stream the way
// Go's archive/tar reader does (so that what they report agrees with what an
// extractor built on archive/tar will see), with these differences: sparse
// files are refused, and the stream must end with the end-of-archive marker
// (two zero blocks; only zero bytes may follow it).

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"math"
	"strconv"
	"strings"
)

const (
	BlockSize = 512
	// maxExtHeader bounds the data of one PAX ('x', 'g') or GNU long name
	// ('L', 'K') header, as archive/tar does.
	maxExtHeader = 1 << 20
	// maxHeaderPhase bounds all the header blocks and extended header data
	// that precede one member's data.
	maxHeaderPhase = 4 << 20
)

// Member is one tar member as a Scanner reports it. Extended headers (PAX
// 'x', GNU 'L' and 'K') are folded into the member they describe; a PAX
// global header ('g') is reported as a member of its own, as archive/tar does.
type Member struct {
	Name     string // full name: ustar prefix + name, or PAX path, or GNU long name
	Linkname string // symlink or hard link target
	Typeflag byte   // as archive/tar reports it: '\x00' becomes '0' (or '5' for names ending in "/")
	Mode     int64  // permission and mode bits from the header
	Size     int64  // declared size (PAX size if given); header-only types carry no data whatever it says
	ModTime  int64  // seconds since the epoch (PAX mtime truncated)

	Offset    int64 // stream offset of the member's first header block (including extended headers)
	DataStart int64 // stream offset of its data (after its last header block)
	DataEnd   int64 // stream offset after its padded data: the next member's Offset

	// Checksum is the hex digest of a regular member's content with the
	// scanner's algorithm, in the form backup_manifest uses; "" for other
	// members or when the scanner computes no checksum.
	Checksum string
}

// IsRegular reports whether the member is a regular file (it has content).
func (m Member) IsRegular() bool { return m.Typeflag == '0' || m.Typeflag == '7' }

// IsDir reports whether the member is a directory.
func (m Member) IsDir() bool { return m.Typeflag == '5' }

// TypeName describes a tar type flag for messages ("regular file", "symbolic link", ...).
func TypeName(t byte) string {
	switch t {
	case '0', '7':
		return "regular file"
	case '1':
		return "hard link"
	case '2':
		return "symbolic link"
	case '3':
		return "character device"
	case '4':
		return "block device"
	case '5':
		return "directory"
	case '6':
		return "FIFO"
	}
	if t >= 0x20 && t < 0x7f {
		return fmt.Sprintf("member of type %q", string(rune(t)))
	}
	return fmt.Sprintf("member of type 0x%02x", t)
}

// headerOnly reports the types whose size field describes no data (as archive/tar).
func headerOnly(t byte) bool {
	switch t {
	case '1', '2', '3', '4', '5', '6':
		return true
	}
	return false
}

type scanState uint8

const (
	tsHeader scanState = iota // collecting a header block
	tsExt                     // collecting an extended header's data and padding
	tsZero2                   // one zero block seen, collecting the second
	tsData                    // streaming a member's data and padding
	tsEnd                     // after the end-of-archive marker: only zero bytes
)

type event uint8

const (
	teNone   event = iota
	teHeader       // the current member's headers are complete (its extent is known)
	teMember       // the current member is complete (data and padding)
	teEnd          // the end-of-archive marker is complete
)

// Scanner parses a tar stream written to it in pieces of any size, hashes
// the content of regular members, and reports each member when its last byte
// (padding included) has been written.
//
// Offsets are stream offsets: the number of bytes written before the byte in
// question. Boundary reports the latest member boundary; for cutting a
// stream into parts at boundaries, use Splitter, which builds on the
// scanner and knows each member's extent before writing its first byte.
//
// Why a second tar parser beside archive/tar: archive/tar pulls from a
// reader, and the scanner's callers hold a writer. Fed over an io.Pipe
// through a byte-counting reader, archive/tar does find the member
// boundaries (count before Next: a member's first header block; after it:
// its data; padding from the size), but (1) basebackup must know after every
// CopyData message whether the end-of-archive marker went by, which a pipe
// only tells through a handshake per Write; (2) the Splitter must hold a
// member's header blocks back until its extent is known, and archive/tar
// consumes member n's padding inside the Next that reads member n+1, so the
// bytes would need routing by count across a part boundary; (3) archive/tar
// accepts a stream that ends without the marker, or after one zero block,
// and reads sparse files, which pgark refuses; (4) it costs a goroutine per
// stream and, measured (BenchmarkScanner and BenchmarkArchiveTarPipe in
// bench_test.go: a 64 MiB data-directory-like stream of 4128 members in
// 32 KiB writes, 2 shared cores, go test -bench . -count 2 -cpu 1,2), the
// pipe variant in its best case (no handshake, no holding back) runs
// boundaries only at 2.1-2.8 GB/s against the scanner's 14-28 GB/s, with
// CRC32C (backup's manifest checksums) at 1.1-2.0 against 2.8-4.1 GB/s, and
// with SHA256 at the same 0.6-0.9 GB/s (the hash dominates); it allocates
// 1.65 MB in 53,700 allocations per run against 67 kB in 4,131. The tests and
// FuzzTarScan check that the scanner reads every stream as archive/tar does.
type Scanner struct {
	alg      string
	onMember func(Member) error

	state scanState
	off   int64 // bytes consumed
	err   error

	blk  [BlockSize]byte
	blkN int

	// Extended header being collected (state tsExt).
	extType byte
	ext     []byte
	extNeed int64 // data bytes still to collect
	extPad  int64 // padding bytes still to skip
	gHdr    Member

	// Extended values pending for the next member.
	memberStart int64 // offset of the first header block of the member being parsed, -1 if none
	pax         map[string]string
	longName    string
	longLink    string

	// The member whose data is streaming (state tsData).
	cur    Member
	remain int64
	pad    int64
	hash   hash.Hash

	boundary int64
	members  int
	endOff   int64
}

// NewScanner returns a scanner that hashes regular members with alg
// ("CRC32C", "SHA224", "SHA256", "SHA384", "SHA512"; "" or "NONE" for no
// checksum) and calls onMember (if not nil) for every completed member, in
// stream order, from within Write. An error from onMember stops the scanner:
// Write returns it.
func NewScanner(alg string, onMember func(Member) error) (*Scanner, error) {
	a, err := CanonicalChecksum(alg)
	if err != nil {
		return nil, err
	}
	return &Scanner{alg: a, onMember: onMember, memberStart: -1, endOff: -1}, nil
}

// Offset is the number of bytes written so far.
func (s *Scanner) Offset() int64 { return s.off }

// Boundary is the offset of the latest member boundary: the end of the last
// completed member (0 before the first). Cutting the stream at Boundary gives
// a prefix made of complete members.
func (s *Scanner) Boundary() int64 { return s.boundary }

// Ended reports whether the end-of-archive marker has been written.
func (s *Scanner) Ended() bool { return s.state == tsEnd }

// EndOffset is the offset of the end-of-archive marker, or -1 before it is seen.
func (s *Scanner) EndOffset() int64 { return s.endOff }

// Write parses p. It returns an error (and stops for good) on malformed input,
// or when the onMember callback fails.
func (s *Scanner) Write(p []byte) (int, error) {
	total := 0
	for {
		n, ev, _, err := s.step(p[total:])
		total += n
		if err != nil {
			return total, err
		}
		if ev == teNone {
			if total == len(p) {
				return total, nil
			}
			if n == 0 {
				s.err = errors.New("tar scanner: internal error: no progress")
				return total, s.err
			}
		}
	}
}

// Close checks that the stream ended cleanly: after the end-of-archive
// marker. It returns the scanner's error, or describes the truncation.
func (s *Scanner) Close() error {
	if s.err != nil {
		return s.err
	}
	switch s.state {
	case tsEnd:
		return nil
	case tsData:
		if s.remain > 0 {
			return fmt.Errorf("tar stream truncated inside member %q: %d bytes of its data missing (stream ended at offset %d)", s.cur.Name, s.remain, s.off)
		}
		if s.pad > 0 {
			return fmt.Errorf("tar stream truncated in the padding of member %q (stream ended at offset %d)", s.cur.Name, s.off)
		}
	case tsExt:
		return fmt.Errorf("tar stream truncated inside an extended header (stream ended at offset %d)", s.off)
	case tsZero2:
		return fmt.Errorf("tar stream truncated inside the end-of-archive marker (stream ended at offset %d)", s.off)
	case tsHeader:
		if s.blkN > 0 || s.memberStart >= 0 {
			return fmt.Errorf("tar stream truncated inside a member header (stream ended at offset %d)", s.off)
		}
	}
	return fmt.Errorf("tar stream ended at offset %d without the end-of-archive marker (after %d members)", s.off, s.members)
}

func (s *Scanner) fail(format string, args ...any) error {
	s.err = fmt.Errorf("malformed tar stream: "+format, args...)
	return s.err
}

// step consumes bytes of p belonging to the current state and returns how
// many, the event that happened at that point (if any), and whether the bytes
// belong to a member's header phase (their member's extent is not known yet).
// It consumes at least one byte of a non-empty p or returns an event.
func (s *Scanner) step(p []byte) (n int, ev event, held bool, err error) {
	if s.err != nil {
		return 0, teNone, false, s.err
	}
	switch s.state {
	case tsData:
		if s.remain > 0 && len(p) > 0 {
			k := int(min(int64(len(p)), s.remain))
			if s.hash != nil {
				s.hash.Write(p[:k])
			}
			s.remain -= int64(k)
			n = k
		}
		if s.remain == 0 && s.pad > 0 && n < len(p) {
			k := int(min(int64(len(p)-n), s.pad))
			s.pad -= int64(k)
			n += k
		}
		s.off += int64(n)
		if s.remain == 0 && s.pad == 0 {
			return n, s.finishMember(), false, s.err
		}
		return n, teNone, false, nil

	case tsHeader, tsZero2:
		k := copy(s.blk[s.blkN:], p)
		s.blkN += k
		s.off += int64(k)
		if s.blkN < BlockSize {
			return k, teNone, true, nil
		}
		s.blkN = 0
		ev, err := s.block()
		return k, ev, true, err

	case tsExt:
		if s.extNeed > 0 && len(p) > 0 {
			k := int(min(int64(len(p)), s.extNeed))
			s.ext = append(s.ext, p[:k]...)
			s.extNeed -= int64(k)
			n = k
		}
		if s.extNeed == 0 && s.extPad > 0 && n < len(p) {
			k := int(min(int64(len(p)-n), s.extPad))
			s.extPad -= int64(k)
			n += k
		}
		s.off += int64(n)
		if s.extNeed == 0 && s.extPad == 0 {
			ev, err := s.extDone()
			return n, ev, true, err
		}
		return n, teNone, true, nil

	case tsEnd:
		for i, c := range p {
			if c != 0 {
				s.off += int64(i)
				return i, teNone, false, s.fail("non-zero byte at offset %d after the end-of-archive marker", s.off)
			}
		}
		s.off += int64(len(p))
		return len(p), teNone, false, nil
	}
	return 0, teNone, false, s.fail("internal error: bad state %d", s.state)
}

func (s *Scanner) finishMember() event {
	s.boundary = s.off
	s.members++
	if s.hash != nil {
		s.cur.Checksum = hex.EncodeToString(s.hash.Sum(nil))
		s.hash = nil
	}
	s.state = tsHeader
	if s.onMember != nil {
		if err := s.onMember(s.cur); err != nil {
			s.err = err
		}
	}
	return teMember
}

var zeroBlock [BlockSize]byte

func padding(n int64) int64 { return -n & (BlockSize - 1) }

// block processes the complete block in s.blk: half of an end-of-archive
// marker, or a header block, which starts an extended header (tsExt) or
// completes a member's headers (tsData).
func (s *Scanner) block() (event, error) {
	blkOff := s.off - BlockSize
	if s.state == tsZero2 || s.blk == zeroBlock {
		return s.endMarkerBlock(blkOff)
	}
	if !validChecksum(&s.blk) {
		return teNone, s.fail("bad header checksum at offset %d (not a tar header)", blkOff)
	}
	if s.memberStart < 0 {
		s.memberStart = blkOff
	}
	if s.off-s.memberStart > maxHeaderPhase {
		return teNone, s.fail("extended headers at offset %d exceed %d bytes", s.memberStart, maxHeaderPhase)
	}
	h, ok := parseHeader(&s.blk)
	if !ok {
		return teNone, s.fail("bad numeric field in the header at offset %d", blkOff)
	}
	if h.Size < 0 {
		return teNone, s.fail("negative size in the header at offset %d", blkOff)
	}
	switch h.Typeflag {
	case 'x', 'g', 'L', 'K':
		return s.startExt(h, blkOff)
	case 'S':
		return teNone, s.fail("GNU sparse member %q at offset %d is not supported", h.Name, blkOff)
	}
	return s.startMember(h)
}

// endMarkerBlock handles a zero block, or the block after one: two zero
// blocks end the archive.
func (s *Scanner) endMarkerBlock(blkOff int64) (event, error) {
	if s.state == tsZero2 {
		if s.blk != zeroBlock {
			return teNone, s.fail("a zero block followed by a non-zero block at offset %d", blkOff)
		}
		s.state = tsEnd
		s.endOff = blkOff - BlockSize
		return teEnd, nil
	}
	if s.memberStart >= 0 {
		return teNone, s.fail("end-of-archive marker at offset %d after an extended header", blkOff)
	}
	s.state = tsZero2
	return teNone, nil
}

// validChecksum checks a header block's checksum: the sum of its bytes with
// the checksum field taken as spaces, unsigned or (old tars) signed.
func validChecksum(b *[BlockSize]byte) bool {
	want, ok := parseOctal(b[148:156])
	var uns, sig int64
	for i, c := range b {
		if i >= 148 && i < 156 {
			c = ' '
		}
		uns += int64(c)
		sig += int64(int8(c))
	}
	return ok && (want == uns || want == sig)
}

// parseHeader reads the fields of a header block (checksum already
// checked) as archive/tar does: the name with the ustar or star prefix, and
// the numeric fields in octal or base-256. ok is false when a numeric field
// (size, mode, mtime, uid, gid) is malformed. Offsets are left to the caller.
func parseHeader(b *[BlockSize]byte) (h Member, ok bool) {
	magic, version := string(b[257:263]), string(b[263:265])
	var prefix string
	switch {
	case magic == "ustar\x00" && string(b[508:512]) == "tar\x00": // star
		prefix = cString(b[345:476])
	case magic == "ustar\x00": // POSIX ustar / pax
		prefix = cString(b[345:500])
	case magic == "ustar " && version == " \x00": // GNU: no prefix field
	}
	h.Name = cString(b[0:100])
	if prefix != "" {
		h.Name = prefix + "/" + h.Name
	}
	h.Linkname = cString(b[157:257])
	h.Typeflag = b[156]
	var ok1, ok2, ok3, ok4, ok5 bool
	h.Size, ok1 = parseNumeric(b[124:136])
	h.Mode, ok2 = parseNumeric(b[100:108])
	h.ModTime, ok3 = parseNumeric(b[136:148])
	_, ok4 = parseNumeric(b[108:116])
	_, ok5 = parseNumeric(b[116:124])
	return h, ok1 && ok2 && ok3 && ok4 && ok5
}

// startExt starts collecting the data of an extended header h (PAX 'x' or
// 'g', GNU 'L' or 'K') whose header block is at blkOff.
func (s *Scanner) startExt(h Member, blkOff int64) (event, error) {
	size := h.Size
	if size > maxExtHeader {
		return teNone, s.fail("extended header at offset %d declares %d bytes (limit %d)", blkOff, size, maxExtHeader)
	}
	if s.off-s.memberStart+size > maxHeaderPhase {
		return teNone, s.fail("extended headers at offset %d exceed %d bytes", s.memberStart, maxHeaderPhase)
	}
	s.extType = h.Typeflag
	s.ext = make([]byte, 0, size)
	s.extNeed = size
	s.extPad = padding(size)
	if h.Typeflag == 'g' {
		s.gHdr = Member{Name: h.Name, Typeflag: h.Typeflag, ModTime: h.ModTime, DataStart: s.off} // archive/tar reports no size or mode
	}
	s.state = tsExt
	if size == 0 {
		return s.extDone()
	}
	return teNone, nil
}

// startMember completes the member whose last header block was just read:
// it folds in the pending extended values, fixes the member's extent, and
// starts streaming its data.
func (s *Scanner) startMember(m Member) (event, error) {
	m.Offset = s.memberStart
	if err := applyPAX(&m, s.pax); err == errPAXSparse {
		return teNone, s.fail("GNU sparse member at offset %d is not supported", s.memberStart)
	} else if err != nil {
		return teNone, s.fail("%v for the member at offset %d", err, s.memberStart)
	}
	if s.longName != "" {
		m.Name = s.longName
	}
	if s.longLink != "" {
		m.Linkname = s.longLink
	}
	if m.Typeflag == 0 {
		if strings.HasSuffix(m.Name, "/") {
			m.Typeflag = '5'
		} else {
			m.Typeflag = '0'
		}
	}
	nb := m.Size
	if headerOnly(m.Typeflag) {
		nb = 0
	}
	if nb > math.MaxInt64-s.off-2*BlockSize {
		return teNone, s.fail("member %q at offset %d declares an impossible size %d", m.Name, s.memberStart, nb)
	}
	m.DataStart = s.off
	m.DataEnd = s.off + nb + padding(nb)

	s.memberStart = -1
	s.pax, s.longName, s.longLink = nil, "", ""
	s.cur = m
	s.remain, s.pad = nb, padding(nb)
	s.hash = nil
	if s.alg != "" && m.IsRegular() {
		s.hash = NewChecksumHash(s.alg)
	}
	s.state = tsData
	return teHeader, nil
}

var errPAXSparse = errors.New("GNU sparse member")

// applyPAX overrides m's fields with the PAX records that archive/tar
// honours for them (path, linkpath, size, mtime; empty values are ignored)
// and refuses PAX sparse files (errPAXSparse).
func applyPAX(m *Member, pax map[string]string) error {
	for k, v := range pax {
		if v == "" {
			continue
		}
		switch k {
		case "path":
			m.Name = v
		case "linkpath":
			m.Linkname = v
		case "size":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				return fmt.Errorf("bad PAX size %q", v)
			}
			m.Size = n
		case "mtime":
			sec, _, _ := strings.Cut(v, ".")
			n, err := strconv.ParseInt(sec, 10, 64)
			if err != nil && sec != "" && sec != "-" {
				return fmt.Errorf("bad PAX mtime %q", v)
			}
			m.ModTime = n
		}
		if strings.HasPrefix(k, "GNU.sparse.") {
			return errPAXSparse
		}
	}
	return nil
}

// extDone handles a completely collected extended header.
func (s *Scanner) extDone() (event, error) {
	data := s.ext
	s.ext = nil
	s.state = tsHeader
	switch s.extType {
	case 'x', 'g':
		recs, err := parsePAX(data)
		if err != nil {
			return teNone, s.fail("bad PAX header at offset %d: %v", s.memberStart, err)
		}
		if s.extType == 'x' {
			s.pax = recs
			return teNone, nil
		}
		// A global header is a member of its own (as archive/tar reports it);
		// pending extended values are dropped, as archive/tar does.
		m := s.gHdr
		if v := recs["path"]; v != "" {
			m.Name = v
		}
		m.Offset = s.memberStart
		m.DataEnd = s.off
		s.memberStart = -1
		s.pax, s.longName, s.longLink = nil, "", ""
		s.cur = m
		s.remain, s.pad, s.hash = 0, 0, nil
		s.state = tsData // completes (teMember) at the next step
		return teHeader, nil
	case 'L':
		s.longName = cString(data)
	case 'K':
		s.longLink = cString(data)
	}
	return teNone, nil
}

// cString returns b up to its first NUL.
func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// parseOctal parses an octal field (spaces and NULs around it ignored;
// empty is 0).
func parseOctal(b []byte) (int64, bool) {
	b = bytes.Trim(b, " \x00")
	if len(b) == 0 {
		return 0, true
	}
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	x, err := strconv.ParseUint(string(b), 8, 63)
	if err != nil {
		return 0, false
	}
	return int64(x), true
}

// parseNumeric parses an octal or GNU base-256 numeric field (PostgreSQL
// writes sizes of 8 GiB and more in base-256).
func parseNumeric(b []byte) (int64, bool) {
	if len(b) > 0 && b[0]&0x80 != 0 {
		var inv byte
		if b[0]&0x40 != 0 {
			inv = 0xff
		}
		var x uint64
		for i, c := range b {
			c ^= inv
			if i == 0 {
				c &= 0x7f
			}
			if x>>56 > 0 {
				return 0, false
			}
			x = x<<8 | uint64(c)
		}
		if x>>63 > 0 {
			return 0, false
		}
		if inv == 0xff {
			return ^int64(x), true
		}
		return int64(x), true
	}
	return parseOctal(b)
}

// parsePAX parses PAX records ("%d %s=%s\n").
func parsePAX(b []byte) (map[string]string, error) {
	recs := make(map[string]string)
	s := string(b)
	for len(s) > 0 {
		nStr, rest, ok := strings.Cut(s, " ")
		if !ok {
			return nil, errors.New("record without length")
		}
		n, err := strconv.ParseInt(nStr, 10, 0)
		if err != nil || n < 5 || n > int64(len(s)) {
			return nil, errors.New("bad record length")
		}
		n -= int64(len(nStr) + 1)
		if n <= 0 {
			return nil, errors.New("bad record length")
		}
		rec, nl, rem := rest[:n-1], rest[n-1:n], rest[n:]
		if nl != "\n" {
			return nil, errors.New("record not terminated by a newline")
		}
		k, v, ok := strings.Cut(rec, "=")
		if !ok || k == "" || strings.ContainsRune(k, 0) {
			return nil, errors.New("bad record key")
		}
		switch k {
		case "path", "linkpath", "uname", "gname":
			if strings.ContainsRune(v, 0) {
				return nil, fmt.Errorf("NUL in %s", k)
			}
		}
		recs[k] = v
		s = rem
	}
	return recs, nil
}
