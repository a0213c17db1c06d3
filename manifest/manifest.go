package manifest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"

	"github.com/pgark/pgark/tarstream"
	"github.com/pgark/pgark/wal"
)

// MaxBytes bounds the size of a backup_manifest pgark accepts. A
// manifest line is about 150 bytes per file, so this allows millions of files.
const MaxBytes = 1 << 30

// Manifest is a parsed backup_manifest.
type Manifest struct {
	Version   int    // 1 (PostgreSQL 13-16) or 2 (17+)
	SystemID  uint64 // System-Identifier (version 2), 0 in version 1
	Files     []File
	WALRanges []WALRange
	Checksum  string // Manifest-Checksum, lower-case hex SHA-256

	byPath map[string]int
}

// File is one entry of the manifest's Files list.
type File struct {
	Path              string // relative to PGDATA; decoded from Encoded-Path when the server used it
	Size              int64
	LastModified      string // as the server wrote it ("2025-05-01 10:00:00 GMT")
	ChecksumAlgorithm string // "" when the manifest has no checksums (NONE)
	Checksum          string // lower-case hex
}

// File returns the manifest entry for path.
func (m *Manifest) File(path string) (File, bool) {
	i, ok := m.byPath[path]
	if !ok {
		return File{}, false
	}
	return m.Files[i], true
}

// Read reads a whole backup_manifest from r (at most
// MaxBytes) and parses it; it returns the exact bytes too.
func Read(r io.Reader) ([]byte, *Manifest, error) {
	b, err := io.ReadAll(io.LimitReader(r, MaxBytes+1))
	if err != nil {
		return nil, nil, fmt.Errorf("reading backup_manifest: %w", err)
	}
	m, err := Parse(b)
	if err != nil {
		return b, nil, err
	}
	return b, m, nil
}

// VerifyChecksum checks the Manifest-Checksum of a backup_manifest as
// pg_verifybackup does: the last line must end with a newline, and the
// SHA-256 of everything up to and including the newline before the last line
// must equal the hex value of the Manifest-Checksum field on that last line.
func VerifyChecksum(b []byte) error {
	_, err := manifestChecksum(b)
	return err
}

func manifestChecksum(b []byte) (string, error) {
	if len(b) > MaxBytes {
		return "", fmt.Errorf("backup_manifest is larger than %d bytes", MaxBytes)
	}
	if len(b) == 0 || b[len(b)-1] != '\n' {
		return "", errors.New("backup_manifest: last line not newline-terminated")
	}
	pen := bytes.LastIndexByte(b[:len(b)-1], '\n')
	if pen < 0 {
		return "", errors.New("backup_manifest: expected at least 2 lines")
	}
	last := b[pen+1 : len(b)-1]
	const key = `"Manifest-Checksum"`
	if !bytes.HasPrefix(last, []byte(key)) {
		return "", errors.New("backup_manifest: the last line does not hold the Manifest-Checksum")
	}
	rest := bytes.TrimLeft(last[len(key):], " ")
	if len(rest) == 0 || rest[0] != ':' {
		return "", errors.New("backup_manifest: malformed Manifest-Checksum line")
	}
	rest = bytes.TrimLeft(rest[1:], " ")
	if len(rest) < 2 || rest[0] != '"' {
		return "", errors.New("backup_manifest: malformed Manifest-Checksum line")
	}
	end := bytes.IndexByte(rest[1:], '"')
	if end < 0 {
		return "", errors.New("backup_manifest: malformed Manifest-Checksum line")
	}
	want := string(rest[1 : 1+end])
	if len(want) != 2*sha256.Size || !isHex(want) {
		return "", fmt.Errorf("backup_manifest: Manifest-Checksum %q is not a SHA-256 hex digest", want)
	}
	sum := sha256.Sum256(b[:pen+1])
	got := hex.EncodeToString(sum[:])
	if !strings.EqualFold(got, want) {
		return "", fmt.Errorf("backup_manifest: manifest checksum mismatch: the file says %s, its content hashes to %s", strings.ToLower(want), got)
	}
	return got, nil
}

// validManifestPath accepts the paths PostgreSQL writes: relative, clean
// (no empty, "." or ".." component), no NUL.
func validManifestPath(p string) bool {
	if p == "" || strings.ContainsRune(p, 0) {
		return false
	}
	for _, c := range strings.Split(p, "/") {
		if c == "" || c == "." || c == ".." {
			return false
		}
	}
	return true
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return false
		}
	}
	return true
}

// WALRange is a stretch of WAL on one timeline that a backup needs (the
// manifest's WAL-Ranges).
type WALRange struct {
	Timeline   uint32
	Start, End wal.LSN
}

type rawManifest struct {
	Version   *int               `json:"PostgreSQL-Backup-Manifest-Version"`
	SystemID  *uint64            `json:"System-Identifier"`
	Files     *[]rawManifestFile `json:"Files"`
	WALRanges *[]rawWALRange     `json:"WAL-Ranges"`
	Checksum  *string            `json:"Manifest-Checksum"`
}

type rawManifestFile struct {
	Path         *string `json:"Path"`
	EncodedPath  *string `json:"Encoded-Path"`
	Size         *int64  `json:"Size"`
	LastModified *string `json:"Last-Modified"`
	Algorithm    *string `json:"Checksum-Algorithm"`
	Checksum     *string `json:"Checksum"`
}

type rawWALRange struct {
	Timeline *uint32 `json:"Timeline"`
	Start    *string `json:"Start-LSN"`
	End      *string `json:"End-LSN"`
}

// checksumHexLen is the length of a checksum in hex per algorithm.
var checksumHexLen = map[string]int{"CRC32C": 8, "SHA224": 56, "SHA256": 64, "SHA384": 96, "SHA512": 128}

// Parse parses a backup_manifest and verifies its Manifest-Checksum.
func Parse(b []byte) (*Manifest, error) {
	sum, err := manifestChecksum(b)
	if err != nil {
		return nil, err
	}
	var raw rawManifest
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("backup_manifest: %w", err)
	}
	bad := func(format string, args ...any) (*Manifest, error) {
		return nil, fmt.Errorf("backup_manifest: "+format, args...)
	}
	if raw.Version == nil {
		return bad("no PostgreSQL-Backup-Manifest-Version")
	}
	m := &Manifest{Version: *raw.Version, Checksum: sum}
	switch m.Version {
	case 1:
		if raw.SystemID != nil {
			return bad("version 1 manifest with a System-Identifier")
		}
	case 2:
		if raw.SystemID == nil {
			return bad("version 2 manifest without System-Identifier")
		}
		m.SystemID = *raw.SystemID
	default:
		return bad("unsupported manifest version %d", m.Version)
	}
	if raw.Files == nil {
		return bad("no Files list")
	}
	if raw.WALRanges == nil {
		return bad("no WAL-Ranges list")
	}
	if raw.Checksum == nil {
		return bad("no Manifest-Checksum")
	}
	if !strings.EqualFold(*raw.Checksum, sum) {
		// The line-based check above read the last line; a different value in
		// the JSON means a duplicate or misplaced key.
		return bad("Manifest-Checksum field %q does not match the checksum line", *raw.Checksum)
	}
	m.Files = make([]File, 0, len(*raw.Files))
	m.byPath = make(map[string]int, len(*raw.Files))
	for i, rf := range *raw.Files {
		var f File
		switch {
		case rf.Path != nil && rf.EncodedPath != nil:
			return bad("file %d has both Path and Encoded-Path", i)
		case rf.Path != nil:
			f.Path = *rf.Path
		case rf.EncodedPath != nil:
			p, err := hex.DecodeString(*rf.EncodedPath)
			if err != nil {
				return bad("file %d: bad Encoded-Path: %v", i, err)
			}
			f.Path = string(p)
		default:
			return bad("file %d has no Path", i)
		}
		if !validManifestPath(f.Path) {
			return bad("file %d has an invalid path %q", i, f.Path)
		}
		if rf.Size == nil || *rf.Size < 0 {
			return bad("file %q has no valid Size", f.Path)
		}
		f.Size = *rf.Size
		if rf.LastModified != nil {
			f.LastModified = *rf.LastModified
		}
		if rf.Algorithm != nil {
			alg, err := tarstream.CanonicalChecksum(*rf.Algorithm)
			if err != nil {
				return bad("file %q: %v", f.Path, err)
			}
			f.ChecksumAlgorithm = alg
		}
		if rf.Checksum != nil {
			f.Checksum = strings.ToLower(*rf.Checksum)
		}
		switch {
		case f.ChecksumAlgorithm == "" && f.Checksum != "":
			return bad("file %q has a Checksum but no Checksum-Algorithm", f.Path)
		case f.ChecksumAlgorithm != "" && (len(f.Checksum) != checksumHexLen[f.ChecksumAlgorithm] || !isHex(f.Checksum)):
			return bad("file %q: bad %s checksum %q", f.Path, f.ChecksumAlgorithm, f.Checksum)
		}
		if _, dup := m.byPath[f.Path]; dup {
			return bad("file %q listed twice", f.Path)
		}
		m.byPath[f.Path] = len(m.Files)
		m.Files = append(m.Files, f)
	}
	for i, rr := range *raw.WALRanges {
		if rr.Timeline == nil || rr.Start == nil || rr.End == nil {
			return bad("WAL range %d is incomplete", i)
		}
		start, err := wal.ParseLSN(*rr.Start)
		if err != nil {
			return bad("WAL range %d: %v", i, err)
		}
		end, err := wal.ParseLSN(*rr.End)
		if err != nil {
			return bad("WAL range %d: %v", i, err)
		}
		if *rr.Timeline == 0 || end < start {
			return bad("WAL range %d is invalid (timeline %d, %s to %s)", i, *rr.Timeline, start, end)
		}
		m.WALRanges = append(m.WALRanges, WALRange{Timeline: *rr.Timeline, Start: start, End: end})
	}
	if len(m.WALRanges) == 0 {
		return bad("no WAL ranges")
	}
	return m, nil
}

// ---------------------------------------------------------------- checking

// Files collects the members of a backup's tar streams, by their path
// relative to PGDATA, for checking against the manifest (which arrives after
// all archives). Members of base.tar keep their names; members of <oid>.tar
// become pg_tblspc/<oid>/<name>.
type Files struct {
	alg   string
	files map[string]seenFile
	dups  []string
	n     int
}

type seenFile struct {
	typ      byte
	size     int64
	checksum string
	archive  string
}

// NewFiles returns an empty collection whose members were hashed with
// alg (the tarstream.Scanner's algorithm; "" when they were not hashed: then
// checksums are not compared).
func NewFiles(alg string) (*Files, error) {
	a, err := tarstream.CanonicalChecksum(alg)
	if err != nil {
		return nil, err
	}
	return &Files{alg: a, files: make(map[string]seenFile)}, nil
}

// Len is the number of members added.
func (f *Files) Len() int { return f.n }

// BackupPath returns the path relative to PGDATA of a member of archive
// ("base.tar" or "<oid>.tar").
func BackupPath(archive, member string) (string, error) {
	member = strings.TrimSuffix(member, "/")
	if archive == "base.tar" {
		return member, nil
	}
	oid, ok := strings.CutSuffix(archive, ".tar")
	if n, err := strconv.ParseUint(oid, 10, 32); !ok || err != nil || n == 0 || strconv.FormatUint(n, 10) != oid {
		return "", fmt.Errorf("archive name %q is neither base.tar nor <oid>.tar", archive)
	}
	return "pg_tblspc/" + oid + "/" + member, nil
}

// Add records a member of archive ("base.tar" or "<oid>.tar").
func (f *Files) Add(archive string, m tarstream.Member) error {
	p, err := BackupPath(archive, m.Name)
	if err != nil {
		return err
	}
	f.n++
	if _, dup := f.files[p]; dup {
		if len(f.dups) < 1000 {
			f.dups = append(f.dups, p)
		}
		return nil
	}
	f.files[p] = seenFile{typ: m.Typeflag, size: m.Size, checksum: m.Checksum, archive: archive}
	return nil
}

// MismatchKind classifies a Mismatch.
type MismatchKind string

// The kinds of mismatch between a manifest and the tar streams.
const (
	MismatchMissing   MismatchKind = "missing"   // in the manifest, not in the archives
	MismatchExtra     MismatchKind = "extra"     // a file in the archives, not in the manifest
	MismatchSize      MismatchKind = "size"      // sizes differ
	MismatchChecksum  MismatchKind = "checksum"  // content checksums differ
	MismatchAlgorithm MismatchKind = "algorithm" // the manifest's algorithm is not the one the members were hashed with
	MismatchType      MismatchKind = "type"      // in the manifest, but not a regular file in the archives; or an unexpected member type
	MismatchDuplicate MismatchKind = "duplicate" // the same path twice in the archives
)

// Mismatch is one difference between the manifest and the tar streams.
type Mismatch struct {
	Kind MismatchKind
	Path string
	Want string // the manifest's value, when it has one
	Got  string // the archives' value
}

func (m Mismatch) String() string {
	switch m.Kind {
	case MismatchMissing:
		return fmt.Sprintf("%s: in the manifest but not in the backup", m.Path)
	case MismatchExtra:
		return fmt.Sprintf("%s: in the backup (%s) but not in the manifest", m.Path, m.Got)
	case MismatchDuplicate:
		return fmt.Sprintf("%s: appears more than once in the backup", m.Path)
	case MismatchType:
		return fmt.Sprintf("%s: %s", m.Path, m.Got)
	}
	return fmt.Sprintf("%s: %s differs: manifest %s, backup %s", m.Path, m.Kind, m.Want, m.Got)
}

// Check compares the collected members with the manifest and returns every
// mismatch, sorted by path. What is legitimately absent from a manifest (and
// so ignored here): directories and symbolic links (the manifest lists
// regular files only; tablespace links are symlinks in pg_tblspc without
// TABLESPACE_MAP), and backup_manifest itself (never in a tar stream).
// Every regular file in the archives must be in the manifest with the same
// size and checksum, and every manifest file must be a regular file in them.
func (m *Manifest) Check(f *Files) []Mismatch {
	var out []Mismatch
	for _, mf := range m.Files {
		s, ok := f.files[mf.Path]
		if !ok {
			out = append(out, Mismatch{Kind: MismatchMissing, Path: mf.Path})
			continue
		}
		if s.typ != '0' && s.typ != '7' {
			out = append(out, Mismatch{Kind: MismatchType, Path: mf.Path, Got: "listed in the manifest, but a " + tarstream.TypeName(s.typ) + " in the backup"})
			continue
		}
		if s.size != mf.Size {
			out = append(out, Mismatch{Kind: MismatchSize, Path: mf.Path, Want: strconv.FormatInt(mf.Size, 10), Got: strconv.FormatInt(s.size, 10)})
			continue
		}
		if mf.ChecksumAlgorithm == "" || f.alg == "" {
			continue
		}
		if mf.ChecksumAlgorithm != f.alg {
			out = append(out, Mismatch{Kind: MismatchAlgorithm, Path: mf.Path, Want: mf.ChecksumAlgorithm, Got: f.alg})
			continue
		}
		if !strings.EqualFold(s.checksum, mf.Checksum) {
			out = append(out, Mismatch{Kind: MismatchChecksum, Path: mf.Path, Want: mf.ChecksumAlgorithm + ":" + mf.Checksum, Got: f.alg + ":" + s.checksum})
		}
	}
	for p, s := range f.files {
		if _, ok := m.byPath[p]; ok {
			continue
		}
		switch s.typ {
		case '5', '2', 'g':
			continue // directories, symlinks, PAX global headers: never in a manifest
		case '0', '7':
			out = append(out, Mismatch{Kind: MismatchExtra, Path: p, Got: fmt.Sprintf("a %d-byte file in %s", s.size, s.archive)})
		default:
			out = append(out, Mismatch{Kind: MismatchType, Path: p, Got: "unexpected " + tarstream.TypeName(s.typ) + " in " + s.archive})
		}
	}
	for _, p := range f.dups {
		out = append(out, Mismatch{Kind: MismatchDuplicate, Path: p})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out
}
