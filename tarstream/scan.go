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
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
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

// IsSymlink reports whether the member is a symbolic link.
func (m Member) IsSymlink() bool { return m.Typeflag == '2' }

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

// ---------------------------------------------------------------- checksums

// CanonicalChecksum maps a manifest checksum algorithm name to the
// spelling backup_manifest uses; "" (and NONE) means no checksum.
func CanonicalChecksum(alg string) (string, error) {
	switch a := strings.ToUpper(strings.TrimSpace(alg)); a {
	case "", "NONE":
		return "", nil
	case "CRC32C", "SHA224", "SHA256", "SHA384", "SHA512":
		return a, nil
	}
	return "", fmt.Errorf("unknown checksum algorithm %q (want CRC32C, SHA224, SHA256, SHA384, SHA512 or NONE)", alg)
}

// NewChecksumHash returns a hash whose hex Sum matches backup_manifest's
// Checksum field for alg (canonical, non-empty).
func NewChecksumHash(alg string) hash.Hash {
	switch alg {
	case "CRC32C":
		return &crc32cManifest{h: crc32.New(crc32cTable)}
	case "SHA224":
		return sha256.New224()
	case "SHA256":
		return sha256.New()
	case "SHA384":
		return sha512.New384()
	case "SHA512":
		return sha512.New()
	}
	return nil
}

var crc32cTable = crc32.MakeTable(crc32.Castagnoli)

// crc32cManifest is CRC-32C with PostgreSQL's output byte order: the
// manifest prints the 4 bytes of the uint32 as they lie in memory (memcpy in
// checksum_helper.c), which is little-endian on every platform PostgreSQL
// builds for in practice; hash/crc32's Sum is big-endian.
type crc32cManifest struct{ h hash.Hash32 }

func (c *crc32cManifest) Write(p []byte) (int, error) { return c.h.Write(p) }
func (c *crc32cManifest) Sum(b []byte) []byte {
	return binary.LittleEndian.AppendUint32(b, c.h.Sum32())
}
func (c *crc32cManifest) Reset()         { c.h.Reset() }
func (c *crc32cManifest) Size() int      { return 4 }
func (c *crc32cManifest) BlockSize() int { return 1 }

// ---------------------------------------------------------------- scanner

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

// Algorithm is the scanner's checksum algorithm in canonical form ("" for none).
func (s *Scanner) Algorithm() string { return s.alg }

// Offset is the number of bytes written so far.
func (s *Scanner) Offset() int64 { return s.off }

// Boundary is the offset of the latest member boundary: the end of the last
// completed member (0 before the first). Cutting the stream at Boundary gives
// a prefix made of complete members.
func (s *Scanner) Boundary() int64 { return s.boundary }

// Members is the number of members completed so far.
func (s *Scanner) Members() int { return s.members }

// Ended reports whether the end-of-archive marker has been written.
func (s *Scanner) Ended() bool { return s.state == tsEnd }

// EndOffset is the offset of the end-of-archive marker, or -1 before it is seen.
func (s *Scanner) EndOffset() int64 { return s.endOff }

// Err returns the error that stopped the scanner, if any.
func (s *Scanner) Err() error { return s.err }

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

// block processes the complete block in s.blk.
func (s *Scanner) block() (event, error) {
	blkOff := s.off - BlockSize
	if s.state == tsZero2 {
		if s.blk != zeroBlock {
			return teNone, s.fail("a zero block followed by a non-zero block at offset %d", blkOff)
		}
		s.state = tsEnd
		s.endOff = blkOff - BlockSize
		return teEnd, nil
	}
	if s.blk == zeroBlock {
		if s.memberStart >= 0 {
			return teNone, s.fail("end-of-archive marker at offset %d after an extended header", blkOff)
		}
		s.state = tsZero2
		return teNone, nil
	}
	b := &s.blk
	// Checksum: the sum of the header bytes with the checksum field taken as
	// spaces, unsigned or (old tars) signed.
	want, ok := parseOctal(b[148:156])
	var uns, sig int64
	for i, c := range b {
		if i >= 148 && i < 156 {
			c = ' '
		}
		uns += int64(c)
		sig += int64(int8(c))
	}
	if !ok || (want != uns && want != sig) {
		return teNone, s.fail("bad header checksum at offset %d (not a tar header)", blkOff)
	}
	if s.memberStart < 0 {
		s.memberStart = blkOff
	}
	if s.off-s.memberStart > maxHeaderPhase {
		return teNone, s.fail("extended headers at offset %d exceed %d bytes", s.memberStart, maxHeaderPhase)
	}

	magic, version := string(b[257:263]), string(b[263:265])
	var prefix string
	switch {
	case magic == "ustar\x00" && string(b[508:512]) == "tar\x00": // star
		prefix = cString(b[345:476])
	case magic == "ustar\x00": // POSIX ustar / pax
		prefix = cString(b[345:500])
	case magic == "ustar " && version == " \x00": // GNU: no prefix field
	}
	name := cString(b[0:100])
	if prefix != "" {
		name = prefix + "/" + name
	}
	typ := b[156]
	size, ok1 := parseNumeric(b[124:136])
	mode, ok2 := parseNumeric(b[100:108])
	mtime, ok3 := parseNumeric(b[136:148])
	_, ok4 := parseNumeric(b[108:116])
	_, ok5 := parseNumeric(b[116:124])
	if !(ok1 && ok2 && ok3 && ok4 && ok5) {
		return teNone, s.fail("bad numeric field in the header at offset %d", blkOff)
	}
	if size < 0 {
		return teNone, s.fail("negative size in the header at offset %d", blkOff)
	}

	switch typ {
	case 'x', 'g', 'L', 'K':
		if size > maxExtHeader {
			return teNone, s.fail("extended header at offset %d declares %d bytes (limit %d)", blkOff, size, maxExtHeader)
		}
		if s.off-s.memberStart+size > maxHeaderPhase {
			return teNone, s.fail("extended headers at offset %d exceed %d bytes", s.memberStart, maxHeaderPhase)
		}
		s.extType = typ
		s.ext = make([]byte, 0, size)
		s.extNeed = size
		s.extPad = padding(size)
		if typ == 'g' {
			s.gHdr = Member{Name: name, Typeflag: typ, ModTime: mtime, DataStart: s.off} // archive/tar reports no size or mode
		}
		s.state = tsExt
		if size == 0 {
			return s.extDone()
		}
		return teNone, nil
	case 'S':
		return teNone, s.fail("GNU sparse member %q at offset %d is not supported", name, blkOff)
	}

	m := Member{
		Name:     name,
		Linkname: cString(b[157:257]),
		Typeflag: typ,
		Mode:     mode,
		Size:     size,
		ModTime:  mtime,
		Offset:   s.memberStart,
	}
	for k, v := range s.pax {
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
				return teNone, s.fail("bad PAX size %q for the member at offset %d", v, s.memberStart)
			}
			m.Size = n
		case "mtime":
			sec, _, _ := strings.Cut(v, ".")
			n, err := strconv.ParseInt(sec, 10, 64)
			if err != nil && sec != "" && sec != "-" {
				return teNone, s.fail("bad PAX mtime %q for the member at offset %d", v, s.memberStart)
			}
			m.ModTime = n
		}
		if strings.HasPrefix(k, "GNU.sparse.") {
			return teNone, s.fail("GNU sparse member at offset %d is not supported", s.memberStart)
		}
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

// ---------------------------------------------------------------- splitter

// Part describes one part of a tar stream cut by a Splitter.
type Part struct {
	Index       int    // 0, 1, ...
	Offset      int64  // stream offset of its first byte
	Bytes       int64  // its size
	Members     int    // complete members in it
	FirstMember string // name of its first member ("" if none)
	Last        bool   // it holds the end-of-archive marker (the stream's last part)
}

// SplitOptions configures a Splitter.
type SplitOptions struct {
	// Limit is the maximum size of a part. A part holds as many complete
	// members as fit; a member larger than Limit gets a part of its own, and
	// the end-of-archive marker (1024 bytes, and any zero bytes after it)
	// always joins the last member's part. So a part exceeds Limit only when
	// it holds a single member larger than Limit, or by the marker.
	Limit int64
	// Checksum is the algorithm for Member.Checksum (see NewScanner).
	Checksum string
	// NewPart is called before the first byte of part n is written; the
	// part's bytes are then written to the writer it returns.
	NewPart func(n int, offset int64) (io.Writer, error)
	// EndPart is called when part p is complete: when the next part starts,
	// or from Close for the last part.
	EndPart func(p Part) error
	// Member, if set, is called for every completed member, after its last
	// byte was written to its part.
	Member func(Member) error
}

// Splitter is an io.Writer that cuts the tar stream written to it into
// consecutive parts at member boundaries, without changing a byte:
// concatenating the parts gives the stream, and each part is a sequence of
// complete tar members (the last one followed by the end-of-archive marker).
//
// It holds back only a member's header blocks until the member's extent is
// known, then decides whether the member still fits the current part, and
// streams the member's data straight into the part's writer.
//
// Use: io.Copy(splitter, r); then Close, which checks that the stream ended
// with the end-of-archive marker and ends the last part. After an error the
// current part is left as it is (neither ended nor closed): abort it. In a
// basebackup.Handler (package backup does this):
//
//	func (h *handler) Archive(name, location string, r io.Reader) error {
//		sp, err := NewSplitter(SplitOptions{
//			Limit:    h.partLimit,
//			Checksum: h.manifestChecksums, // as sent in MANIFEST_CHECKSUMS
//			NewPart: func(n int, off int64) (io.Writer, error) {
//				return h.startObject(catalog.PartKey(h.id, name, n)) // streams to the store
//			},
//			EndPart: func(p Part) error {
//				return h.finishObject(p) // p.Bytes, p.Members, p.FirstMember -> ObjectRef
//			},
//			Member: func(m Member) error { return h.files.Add(name, m) },  // *manifest.Files
//		})
//		if err != nil {
//			return err
//		}
//		if _, err := io.Copy(sp, r); err != nil {
//			return err
//		}
//		return sp.Close()
//	}
//
// and when the manifest has arrived: h.manifest.Check(h.files).
type Splitter struct {
	o      SplitOptions
	sc     *Scanner
	hold   []byte
	part   io.Writer
	cur    Part
	nparts int
	closed bool
	err    error
}

// NewSplitter returns a splitter; Limit must be positive and NewPart and
// EndPart set.
func NewSplitter(o SplitOptions) (*Splitter, error) {
	if o.Limit <= 0 {
		return nil, fmt.Errorf("tar splitter: part limit %d must be positive", o.Limit)
	}
	if o.NewPart == nil || o.EndPart == nil {
		return nil, errors.New("tar splitter: NewPart and EndPart are required")
	}
	sc, err := NewScanner(o.Checksum, o.Member)
	if err != nil {
		return nil, err
	}
	return &Splitter{o: o, sc: sc}, nil
}

// Scanner gives access to the underlying scanner (offsets, member count).
func (t *Splitter) Scanner() *Scanner { return t.sc }

// Parts is the number of parts started so far.
func (t *Splitter) Parts() int { return t.nparts }

// Write consumes p (see Splitter).
func (t *Splitter) Write(p []byte) (int, error) {
	if t.err != nil {
		return 0, t.err
	}
	if t.closed {
		return 0, errors.New("tar splitter: write after Close")
	}
	total := 0
	for {
		n, ev, held, err := t.sc.step(p[total:])
		chunk := p[total : total+n]
		total += n
		if n > 0 {
			if held {
				t.hold = append(t.hold, chunk...)
			} else if werr := t.emit(chunk); werr != nil {
				return total, werr
			}
		}
		if err != nil {
			t.err = err
			return total, err
		}
		switch ev {
		case teHeader:
			m := t.sc.cur
			if t.part != nil && t.cur.Bytes > 0 && t.cur.Bytes+(m.DataEnd-m.Offset) > t.o.Limit {
				if err := t.endPart(); err != nil {
					return total, err
				}
			}
			if err := t.ensurePart(m.Offset); err != nil {
				return total, err
			}
			t.cur.Members++
			if t.cur.Members == 1 {
				t.cur.FirstMember = m.Name
			}
			if err := t.flushHold(); err != nil {
				return total, err
			}
		case teEnd:
			if err := t.ensurePart(t.sc.EndOffset()); err != nil {
				return total, err
			}
			t.cur.Last = true
			if err := t.flushHold(); err != nil {
				return total, err
			}
		case teNone:
			if total == len(p) {
				return total, nil
			}
			if n == 0 {
				t.err = errors.New("tar splitter: internal error: no progress")
				return total, t.err
			}
		}
	}
}

func (t *Splitter) ensurePart(off int64) error {
	if t.part != nil {
		return nil
	}
	w, err := t.o.NewPart(t.nparts, off)
	if err != nil {
		t.err = err
		return err
	}
	if w == nil {
		t.err = errors.New("tar splitter: NewPart returned no writer")
		return t.err
	}
	t.part = w
	t.cur = Part{Index: t.nparts, Offset: off}
	t.nparts++
	return nil
}

func (t *Splitter) endPart() error {
	p := t.cur
	t.part = nil
	if err := t.o.EndPart(p); err != nil {
		t.err = err
		return err
	}
	return nil
}

func (t *Splitter) flushHold() error {
	err := t.emit(t.hold)
	if cap(t.hold) > 64<<10 {
		t.hold = nil
	} else {
		t.hold = t.hold[:0]
	}
	return err
}

func (t *Splitter) emit(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	if t.part == nil {
		t.err = errors.New("tar splitter: internal error: data outside a part")
		return t.err
	}
	n, err := t.part.Write(b)
	t.cur.Bytes += int64(n)
	if err == nil && n != len(b) {
		err = io.ErrShortWrite
	}
	if err != nil {
		t.err = fmt.Errorf("writing part %d: %w", t.cur.Index, err)
		return t.err
	}
	return nil
}

// Close checks that the stream ended after the end-of-archive marker and
// ends the last part. It does not close the parts' writers (EndPart does
// what the caller wants).
func (t *Splitter) Close() error {
	if t.err != nil {
		return t.err
	}
	if t.closed {
		return nil
	}
	if err := t.sc.Close(); err != nil {
		t.err = err
		return err
	}
	t.closed = true
	return t.endPart()
}
