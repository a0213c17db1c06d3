package storage

import "testing"

func TestOneLine(t *testing.T) {
	for in, want := range map[string]string{
		"":                                   "",
		"plain":                              "plain",
		"  ERROR:  relation\n\tmissing \r\n": "ERROR: relation missing",
		"a\n\nb   c":                         "a b c",
	} {
		if got := OneLine(in); got != want {
			t.Errorf("OneLine(%q) = %q, want %q", in, got, want)
		}
	}
}
