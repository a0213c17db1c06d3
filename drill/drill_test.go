package drill

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/pgark/pgark/repo"
	"github.com/pgark/pgark/storage/mem"
	"github.com/pgark/pgark/wal"
)

func TestParseCheckSQL(t *testing.T) {
	in := `-- checks for the drill
SELECT count(*) > 0 FROM orders;

-- database: shop
SELECT max(at) > now() - interval '1 day'
  FROM orders;
-- database: other
SELECT true;
`
	q, err := ParseCheckSQL(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(q) != 3 || q[0].Database != "" || q[1].Database != "shop" || q[2].Database != "other" ||
		q[1].Line != 5 || !strings.Contains(q[1].SQL, "FROM orders;") {
		t.Fatalf("queries %+v", q)
	}
	for _, bad := range []string{"", "-- only a comment\n", "SELECT true\n", "-- database:\nSELECT true;\n"} {
		if _, err := ParseCheckSQL(strings.NewReader(bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

func TestReachedEnd(t *testing.T) {
	const seg = 16 << 20
	// Recovery ended in the last archived segment (0x10): passed.
	if c := ReachedEnd(wal.LSN(0x10*seg+100), 1, 0x10, seg); c.Status != Passed {
		t.Fatalf("%+v", c)
	}
	// Ended exactly at the end of segment 0x0F (a record boundary): passed.
	if c := ReachedEnd(wal.LSN(0x10*seg), 1, 0x10, seg); c.Status != Passed {
		t.Fatalf("%+v", c)
	}
	// Ended in 0x0C while the archive goes on to 0x10: 0x0D is missing.
	c := ReachedEnd(wal.LSN(0x0C*seg+5000), 1, 0x10, seg)
	if c.Status != Failed || !strings.Contains(c.Message, "segment 00000001000000000000000D is missing") {
		t.Fatalf("%+v", c)
	}
	if c := ReachedEnd(0, 1, 0x10, seg); c.Status != Failed {
		t.Fatalf("%+v", c)
	}
}

func TestLatestAndRecordCheck(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	a := &Record{Format: 1, ID: "20261201T000000Z", Status: Passed, FinishedAt: t0}
	b := &Record{Format: 1, ID: "20261202T000000Z", Status: Failed, FinishedAt: t0.Add(24 * time.Hour)}
	last, lastPassed := Latest([]*Record{b, a})
	if last != b || lastPassed != a {
		t.Fatalf("Latest = %v, %v", last.ID, lastPassed.ID)
	}
	if last, lp := Latest(nil); last != nil || lp != nil {
		t.Fatal("Latest of nothing")
	}
	if err := a.Check(a.ID); err != nil {
		t.Fatal(err)
	}
	for _, r := range []Record{{Format: 1, ID: "x", Status: Passed, FinishedAt: t0}, {Format: 1, ID: a.ID, Status: "maybe", FinishedAt: t0}, {Format: 0, ID: a.ID, Status: Passed, FinishedAt: t0}} {
		if err := r.Check(a.ID); err == nil {
			t.Errorf("Check accepted %+v", r)
		}
	}
}

func TestOutputs(t *testing.T) {
	reached := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	r := &Record{Format: 1, ID: "20261207T100000Z", Status: Passed, Backup: "20261206T000000Z", Target: "end of archive",
		ReachedLSN: "0/5000100", ReachedTime: &reached, WALSegments: 4, DataBytes: 30 << 20, RestoreSeconds: 1.5, ReplaySeconds: 2,
		RecoverySeconds: 3.5, TotalSeconds: 5, FinishedAt: reached, Checks: []Check{{Name: CheckSQL, Status: Passed, Message: "2 queries returned true"}}}
	var text, prom bytes.Buffer
	if err := WriteText(&text, r); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(text.String(), "DRILL PASSED - backup 20261206T000000Z") || !strings.Contains(text.String(), "PASSED    check_sql") {
		t.Fatalf("text:\n%s", text.String())
	}
	if err := WritePrometheus(&prom, r); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"pgark_drill_success 1\n", "pgark_drill_recovery_seconds 3.5\n", "pgark_drill_wal_segments 4\n", "# TYPE pgark_drill_data_bytes gauge\n"} {
		if !strings.Contains(prom.String(), want) {
			t.Errorf("metrics lack %q:\n%s", want, prom.String())
		}
	}
}

func TestPutMovesOnWhenTheIDExists(t *testing.T) {
	ctx := context.Background()
	s := mem.New("drills")
	t0 := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	var ids []string
	for i := 0; i < 3; i++ {
		r := &Record{Format: 1, ID: "20261207T100000Z", Status: Passed, FinishedAt: t0}
		if err := Put(ctx, s, r, nil); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, r.ID)
	}
	if want := []string{"20261207T100000Z", "20261207T100001Z", "20261207T100002Z"}; strings.Join(ids, " ") != strings.Join(want, " ") {
		t.Fatalf("ids %v, want %v", ids, want)
	}
	rp := &repo.Repo{Store: s}
	recs, bad, err := List(ctx, rp)
	if err != nil || len(recs) != 3 || len(bad) != 0 {
		t.Fatalf("List: %d records, bad %v, %v", len(recs), bad, err)
	}
	if err := Put(ctx, s, &Record{Format: 1, ID: "nope", Status: Passed, FinishedAt: t0}, nil); err == nil {
		t.Fatal("a bad id was accepted")
	}
}
