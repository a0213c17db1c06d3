package tarstream

import (
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"fmt"
	"hash"
	"hash/crc32"
	"strings"
)

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
