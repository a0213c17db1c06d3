package storage

import "testing"

func TestValidKey(t *testing.T) {
	for _, key := range []string{"a", "a/b/c", "wal/0000000100000000/000000010000000000000001", ".pgark-probe-1", "a/.tmp", "a/x.tmp-1", "a/tmp-x", "..a", "a.."} {
		if err := ValidKey(key); err != nil {
			t.Errorf("ValidKey(%q): %v", key, err)
		}
	}
	for _, key := range []string{"", "/a", "a/", "a//b", ".", "..", "a/./b", "a/../b", "a\x00b", ".tmp-", ".tmp-x", "a/.tmp-x/b", "a/.tmp-swap-lock.json"} {
		err := ValidKey(key)
		if err == nil {
			t.Errorf("ValidKey(%q) accepted it", key)
			continue
		}
		if !IsPermanent(err) || IsNotFound(err) || IsExists(err) {
			t.Errorf("ValidKey(%q): %v is not a plain permanent error", key, err)
		}
	}
}

func TestValidMeta(t *testing.T) {
	if err := ValidMeta(map[string]string{MetaSHA256: "ab", "x-1": "Any printable: ~!@#$%^&*()"}); err != nil {
		t.Errorf("valid metadata: %v", err)
	}
	if err := ValidMeta(nil); err != nil {
		t.Errorf("nil metadata: %v", err)
	}
	for _, m := range []map[string]string{{"": "x"}, {"A": "x"}, {"a_b": "x"}, {"a b": "x"}, {"k": "tab\t"}, {"k": "é"}, {"k": "\x7f"}} {
		if err := ValidMeta(m); err == nil || !IsPermanent(err) {
			t.Errorf("ValidMeta(%q): %v, want a permanent error", m, err)
		}
	}
}
