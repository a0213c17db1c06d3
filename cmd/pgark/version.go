package main

import (
	"encoding/json"
	"fmt"
	"runtime"

	"github.com/spf13/cobra"
)

// commit and buildDate are stamped in by the linker (make build, make dist:
// -ldflags "-X main.commit=... -X main.buildDate=..."), like version.
var (
	commit    = ""
	buildDate = ""
)

// buildInfo is what `pgark version` prints.
type buildInfo struct {
	Version   string `json:"version"`
	Commit    string `json:"commit"`
	BuildDate string `json:"build_date"`
	Go        string `json:"go"`
	Platform  string `json:"platform"`
}

func currentBuild() buildInfo {
	return buildInfo{Version: version, Commit: orUnknown(commit), BuildDate: orUnknown(buildDate),
		Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
}

// versionCommand is `pgark version [--json]`. Its output is printed by our
// code, never through cobra's version template (see newRoot).
func (c *cli) versionCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "version [--json]",
		Short: "print pgark's version, commit, build date, Go version and platform",
		Args:  cobra.NoArgs,
	}
	asJSON := cmd.Flags().Bool("json", false, "print JSON")
	cmd.RunE = func(*cobra.Command, []string) error {
		b := currentBuild()
		if *asJSON {
			out, err := json.Marshal(b)
			if err != nil {
				return fmt.Errorf("version: %w", err)
			}
			fmt.Fprintf(c.stdout, "%s\n", out)
			return nil
		}
		fmt.Fprintf(c.stdout, "pgark %s\ncommit:     %s\nbuilt:      %s\ngo:         %s\nplatform:   %s\n",
			b.Version, b.Commit, b.BuildDate, b.Go, b.Platform)
		return nil
	}
	return cmd
}
