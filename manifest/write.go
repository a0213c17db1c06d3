package manifest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"
)

// Marshal writes m as a backup_manifest in the server's layout (one file
// per line, the Manifest-Checksum line last), computing its checksum, so
// that pg_verifybackup reads it as one of its own. Paths that are not
// valid UTF-8 are written as Encoded-Path, as the server does. m.Checksum
// is ignored and set.
func Marshal(m *Manifest) ([]byte, error) {
	if m.Version != 1 && m.Version != 2 {
		return nil, fmt.Errorf("backup_manifest: unsupported version %d", m.Version)
	}
	if len(m.WALRanges) == 0 {
		return nil, errors.New("backup_manifest: no WAL ranges")
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "{ \"PostgreSQL-Backup-Manifest-Version\": %d,\n", m.Version)
	if m.Version == 2 {
		fmt.Fprintf(&b, "\"System-Identifier\": %d,\n", m.SystemID)
	}
	b.WriteString("\"Files\": [")
	seen := make(map[string]bool, len(m.Files))
	for i, f := range m.Files {
		if !validManifestPath(f.Path) || seen[f.Path] {
			return nil, fmt.Errorf("backup_manifest: invalid or repeated path %q", f.Path)
		}
		seen[f.Path] = true
		if i > 0 {
			b.WriteByte(',')
		}
		if utf8.ValidString(f.Path) {
			b.WriteString("\n{ \"Path\": ")
			writeJSONString(&b, f.Path)
		} else {
			b.WriteString("\n{ \"Encoded-Path\": \"" + hex.EncodeToString([]byte(f.Path)) + "\"")
		}
		fmt.Fprintf(&b, ", \"Size\": %d, \"Last-Modified\": ", f.Size)
		writeJSONString(&b, f.LastModified)
		if f.ChecksumAlgorithm != "" {
			if len(f.Checksum) != checksumHexLen[f.ChecksumAlgorithm] || !isHex(f.Checksum) {
				return nil, fmt.Errorf("backup_manifest: file %q: bad %s checksum %q", f.Path, f.ChecksumAlgorithm, f.Checksum)
			}
			fmt.Fprintf(&b, ", \"Checksum-Algorithm\": \"%s\", \"Checksum\": \"%s\"", f.ChecksumAlgorithm, f.Checksum)
		}
		b.WriteString(" }")
	}
	b.WriteString(" ],\n\"WAL-Ranges\": [")
	for i, r := range m.WALRanges {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "\n{ \"Timeline\": %d, \"Start-LSN\": \"%s\", \"End-LSN\": \"%s\" }", r.Timeline, r.Start, r.End)
	}
	b.WriteString(" ],\n")
	sum := sha256.Sum256(b.Bytes())
	m.Checksum = hex.EncodeToString(sum[:])
	fmt.Fprintf(&b, "\"Manifest-Checksum\": \"%s\"}\n", m.Checksum)
	return b.Bytes(), nil
}

func writeJSONString(b *bytes.Buffer, s string) {
	e := json.NewEncoder(b)
	e.SetEscapeHTML(false)
	_ = e.Encode(s)         // a string always encodes
	b.Truncate(b.Len() - 1) // Encode's newline
}
