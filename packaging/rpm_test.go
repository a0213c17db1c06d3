package packaging

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
)

// A dependency-free reader of an .rpm's file list, so that the package's
// content is checked where rpm(8) is not installed. Format: a 96-byte lead,
// the signature header (padded to 8 bytes), then the main header; each
// header is a magic, an index of (tag, type, offset, count) entries and a
// data store.

const (
	rpmTagName          = 1000
	rpmTagArch          = 1022
	rpmTagFileModes     = 1030
	rpmTagFileFlags     = 1037
	rpmTagFileUserName  = 1039
	rpmTagFileGroupName = 1040
	rpmTagDirIndexes    = 1116
	rpmTagBaseNames     = 1117
	rpmTagDirNames      = 1118

	rpmFileConfig    = 1 << 0
	rpmFileNoReplace = 1 << 4
)

type rpmFile struct {
	Path        string
	Mode        uint16
	User, Group string
	Flags       uint32
}

type rpmHeader struct {
	entries map[uint32][4]uint32 // tag -> type, offset, count, index
	store   []byte
}

func readRPMHeader(b []byte, off int) (*rpmHeader, int, error) {
	if len(b) < off+16 || !bytes.Equal(b[off:off+4], []byte{0x8e, 0xad, 0xe8, 0x01}) {
		return nil, 0, fmt.Errorf("no header magic at offset %d", off)
	}
	n := int(binary.BigEndian.Uint32(b[off+8:]))
	size := int(binary.BigEndian.Uint32(b[off+12:]))
	idx := off + 16
	storeAt := idx + 16*n
	if n > 1<<16 || size > 1<<28 || len(b) < storeAt+size {
		return nil, 0, fmt.Errorf("header at %d: %d entries, %d bytes: truncated", off, n, size)
	}
	h := &rpmHeader{entries: map[uint32][4]uint32{}, store: b[storeAt : storeAt+size]}
	for i := 0; i < n; i++ {
		e := b[idx+16*i:]
		h.entries[binary.BigEndian.Uint32(e)] = [4]uint32{binary.BigEndian.Uint32(e[4:]), binary.BigEndian.Uint32(e[8:]), binary.BigEndian.Uint32(e[12:])}
	}
	return h, storeAt + size, nil
}

func (h *rpmHeader) strings(tag uint32) ([]string, error) {
	e, ok := h.entries[tag]
	if !ok {
		return nil, fmt.Errorf("tag %d missing", tag)
	}
	if e[0] != 6 && e[0] != 8 && e[0] != 9 {
		return nil, fmt.Errorf("tag %d has type %d, not a string", tag, e[0])
	}
	var out []string
	p := int(e[1])
	for i := uint32(0); i < e[2]; i++ {
		if p >= len(h.store) {
			return nil, fmt.Errorf("tag %d: out of the store", tag)
		}
		end := bytes.IndexByte(h.store[p:], 0)
		if end < 0 {
			return nil, fmt.Errorf("tag %d: unterminated string", tag)
		}
		out = append(out, string(h.store[p:p+end]))
		p += end + 1
	}
	return out, nil
}

func (h *rpmHeader) ints(tag uint32) ([]uint32, error) {
	e, ok := h.entries[tag]
	if !ok {
		return nil, fmt.Errorf("tag %d missing", tag)
	}
	size := map[uint32]int{3: 2, 4: 4}[e[0]]
	if size == 0 {
		return nil, fmt.Errorf("tag %d has type %d, not INT16 or INT32", tag, e[0])
	}
	p := int(e[1])
	if p+size*int(e[2]) > len(h.store) {
		return nil, fmt.Errorf("tag %d: out of the store", tag)
	}
	out := make([]uint32, e[2])
	for i := range out {
		if size == 2 {
			out[i] = uint32(binary.BigEndian.Uint16(h.store[p+2*i:]))
		} else {
			out[i] = binary.BigEndian.Uint32(h.store[p+4*i:])
		}
	}
	return out, nil
}

// readRPM returns the package's name, architecture and files.
func readRPM(path string) (name, arch string, files []rpmFile, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", "", nil, err
	}
	if len(b) < 96 || !bytes.Equal(b[:4], []byte{0xed, 0xab, 0xee, 0xdb}) {
		return "", "", nil, fmt.Errorf("%s: not an rpm (no lead)", path)
	}
	_, end, err := readRPMHeader(b, 96)
	if err != nil {
		return "", "", nil, fmt.Errorf("%s: signature: %w", path, err)
	}
	h, _, err := readRPMHeader(b, (end+7)&^7)
	if err != nil {
		return "", "", nil, fmt.Errorf("%s: header: %w", path, err)
	}
	fail := func(e error) (string, string, []rpmFile, error) { return "", "", nil, fmt.Errorf("%s: %w", path, e) }
	names, err := h.strings(rpmTagName)
	if err != nil {
		return fail(err)
	}
	arches, err := h.strings(rpmTagArch)
	if err != nil {
		return fail(err)
	}
	base, err := h.strings(rpmTagBaseNames)
	if err != nil {
		return fail(err)
	}
	dirs, err := h.strings(rpmTagDirNames)
	if err != nil {
		return fail(err)
	}
	dirIdx, err := h.ints(rpmTagDirIndexes)
	if err != nil {
		return fail(err)
	}
	modes, err := h.ints(rpmTagFileModes)
	if err != nil {
		return fail(err)
	}
	flags, err := h.ints(rpmTagFileFlags)
	if err != nil {
		return fail(err)
	}
	users, err := h.strings(rpmTagFileUserName)
	if err != nil {
		return fail(err)
	}
	groups, err := h.strings(rpmTagFileGroupName)
	if err != nil {
		return fail(err)
	}
	for _, l := range []int{len(dirIdx), len(modes), len(flags), len(users), len(groups)} {
		if l != len(base) {
			return fail(fmt.Errorf("file tags of different lengths"))
		}
	}
	for i, bn := range base {
		if int(dirIdx[i]) >= len(dirs) {
			return fail(fmt.Errorf("dir index %d out of range", dirIdx[i]))
		}
		files = append(files, rpmFile{Path: dirs[dirIdx[i]] + bn, Mode: uint16(modes[i]), User: users[i], Group: groups[i], Flags: flags[i]})
	}
	return names[0], arches[0], files, nil
}
