package azure

import (
	"testing"
	"unicode"
)

func TestMetaKeyMapping(t *testing.T) {
	keys := []string{"pgark-sha256", "k", "1k", "-k", "--", "-1", "1-", "a-b-c", "0", "pgark-signature", "x--y"}
	seen := map[string]string{}
	for _, k := range keys {
		name := encodeMetaKey(k)
		for i, c := range name {
			ok := c == '_' || unicode.IsLetter(c) || (i > 0 && unicode.IsDigit(c))
			if !ok {
				t.Errorf("encodeMetaKey(%q) = %q: not a C# identifier", k, name)
			}
		}
		if other, dup := seen[name]; dup {
			t.Errorf("keys %q and %q both map to %q", other, k, name)
		}
		seen[name] = k
		if back := decodeMetaKey(name); back != k {
			t.Errorf("decodeMetaKey(encodeMetaKey(%q)) = %q", k, back)
		}
		// The SDK may hand names back with another case.
		if back := decodeMetaKey(string(unicode.ToUpper(rune(name[0]))) + name[1:]); back != k {
			t.Errorf("decodeMetaKey of %q with its first letter upper-cased = %q", name, back)
		}
	}
}

func TestParseURL(t *testing.T) {
	for _, tc := range []struct{ in, container, prefix string }{
		{"azure://backups", "backups", ""},
		{"azure://backups/", "backups", ""},
		{"azure://backups/db1/main/", "backups", "db1/main"},
	} {
		c, p, err := ParseURL(tc.in)
		if err != nil || c != tc.container || p != tc.prefix {
			t.Errorf("ParseURL(%q) = %q, %q, %v; want %q, %q", tc.in, c, p, err, tc.container, tc.prefix)
		}
	}
	for _, bad := range []string{"s3://x/y", "azure://", "azure://Backups", "azure://ab", "azure://a--b", "azure://-ab",
		"azure://backups/a//b", "azure://backups/../x", "azure://backups?sv=1", "azure://back_ups"} {
		if c, p, err := ParseURL(bad); err == nil {
			t.Errorf("ParseURL(%q) = %q, %q, nil; want an error", bad, c, p)
		}
	}
}

func TestBlockSizeFor(t *testing.T) {
	s := &Store{blockSize: DefaultBlockSize}
	// Unknown size: 50,000 blocks reach more than 100 TiB, each block
	// within the service's limit.
	var total int64
	for num := range maxBlocks {
		bs := s.blockSizeFor(-1, num)
		if bs < DefaultBlockSize || bs > MaxBlockSize {
			t.Fatalf("block %d: size %d", num, bs)
		}
		total += bs
	}
	if total < 100<<40 {
		t.Errorf("unknown size: 50,000 blocks hold only %d bytes", total)
	}
	if s.blockSizeFor(-1, 0) != DefaultBlockSize || s.blockSizeFor(-1, 999) != DefaultBlockSize || s.blockSizeFor(-1, 1000) != 2*DefaultBlockSize {
		t.Error("unknown size: the block size must double after every 1000 blocks")
	}
	// Known size: one size that fits the object in 50,000 blocks.
	for _, size := range []int64{0, 1, DefaultBlockSize, 1 << 40, 50 << 40} {
		bs := s.blockSizeFor(size, 0)
		if bs < DefaultBlockSize || bs > MaxBlockSize || (size+bs-1)/bs > maxBlocks {
			t.Errorf("size %d: block size %d", size, bs)
		}
	}
}
