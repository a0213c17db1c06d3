package dump

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/pgark/pgark/repo"
	"github.com/pgark/pgark/storage/local"
)

// ReadMeta goes through repo.ReadMeta: a missing dump.json wraps ErrNoDump,
// and one that is inconsistent wraps repo.ErrDamaged (exit 3, as for
// backup.json) and names the object.
func TestReadMetaDamaged(t *testing.T) {
	ctx := context.Background()
	s, err := local.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	const id = "20261124T154500Z"
	if _, err := ReadMeta(ctx, s, id); !errors.Is(err, ErrNoDump) || !strings.Contains(err.Error(), "see pgark list --dumps") {
		t.Fatalf("missing: %v", err)
	}
	sum := strings.Repeat("a", 64)
	good := &Meta{Format: MetaFormat, ID: id, StartTime: time.Unix(0, 0).UTC(),
		Globals: Object{Key: GlobalsKey(id), SHA256: sum}}
	if err := repo.PutJSON(ctx, s, MetaKey(id), good); err != nil {
		t.Fatal(err)
	}
	if m, err := ReadMeta(ctx, s, id); err != nil || m.ID != id {
		t.Fatalf("good: %+v %v", m, err)
	}
	const other = "20261124T154501Z"
	// A copy of the good run's metadata planted under another run's key.
	if err := repo.PutJSON(ctx, s, MetaKey(other), good); err != nil {
		t.Fatal(err)
	}
	_, err = ReadMeta(ctx, s, other)
	if !errors.Is(err, repo.ErrDamaged) || !strings.Contains(err.Error(), MetaName) || !strings.Contains(err.Error(), "names run") {
		t.Fatalf("other id: %v", err)
	}
}

// oneLine folds a statement onto one line and cuts it at 120 bytes without
// splitting a character.
func TestOneLineCut(t *testing.T) {
	if got := oneLine("CREATE ROLE\n\t alice"); got != "CREATE ROLE alice" {
		t.Errorf("oneLine folded to %q", got)
	}
	long := strings.Repeat("a", 119) + "é" + strings.Repeat("b", 10) // é spans bytes 119-120
	got := oneLine(long)
	if !utf8.ValidString(got) || got != strings.Repeat("a", 119)+"..." {
		t.Errorf("oneLine cut to %q", got)
	}
}
