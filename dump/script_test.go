package dump

import (
	"bytes"
	"strings"
	"testing"
)

func TestFilterScript(t *testing.T) {
	long := strings.Repeat("x", 200<<10) // longer than the reader's buffer
	in := "SET statement_timeout = 0;\n" +
		"SET transaction_timeout = 0;\n" +
		"SET lock_timeout = 0;\n" +
		"COPY public.notes (body) FROM stdin;\n" +
		"SET transaction_timeout = 0;\n" + // a row's text, kept
		long + "SET transaction_timeout = 0;\n" + // the end of a long row, kept
		"\\.\n" +
		"SET transaction_timeout = 0;\n" +
		"CREATE TABLE t (id int);\n" +
		"SELECT 1" // no final newline
	want := "SET statement_timeout = 0;\n" +
		"SET lock_timeout = 0;\n" +
		"COPY public.notes (body) FROM stdin;\n" +
		"SET transaction_timeout = 0;\n" +
		long + "SET transaction_timeout = 0;\n" +
		"\\.\n" +
		"CREATE TABLE t (id int);\n" +
		"SELECT 1"
	var out bytes.Buffer
	if err := filterScript(&out, strings.NewReader(in)); err != nil {
		t.Fatal(err)
	}
	if got := out.String(); got != want {
		t.Errorf("filtered script differs (%d bytes, want %d)", len(got), len(want))
	}
}

func TestScriptArgs(t *testing.T) {
	args, db, dropped := scriptArgs([]string{"--exit-on-error", "--jobs=4", "--use-list=/tmp/l", "--dbname=host=x dbname='shop'", "--clean"})
	if db != "host=x dbname='shop'" || len(dropped) != 1 {
		t.Errorf("dbname %q, dropped %v", db, dropped)
	}
	if strings.Join(args, " ") != "--exit-on-error --use-list=/tmp/l --clean --file=-" {
		t.Errorf("args %q", args)
	}
}
