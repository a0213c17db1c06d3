package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"context"

	"github.com/pgark/pgark/internal/testenv"
)

// TestDemo runs `make demo`'s script with the binary under test: the README's first
// command must keep doing what it says, down to the dropped table's rows brought back.
func TestDemo(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	script := filepath.Join(filepath.Dir(filepath.Dir(file)), "scripts", "demo.sh")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", script)
	cmd.Env = append(os.Environ(), "PGARK_BIN="+pgarkBin, "PG_BIN="+testenv.ClientBinDir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out)
	}
	for _, want := range []string{"PGARK CHECK OK", "recovery stopping before commit", "the orders are back", "    300 |"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the demo's output lacks %q:\n%s", want, out)
		}
	}
}
