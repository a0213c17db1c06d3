package main

import (
	"encoding/json"
	"fmt"
	"runtime"
	"runtime/debug"

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

// currentBuild is what the linker stamped in; what it did not, the Go
// toolchain's build information supplies where it can: the module version
// of `go install ...@v1.2.3`, the commit and time of a build in a git
// checkout (`go build`).
func currentBuild() buildInfo {
	b := buildInfo{Version: version, Commit: commit, BuildDate: buildDate,
		Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if b.Version == "dev" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			b.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch {
			case s.Key == "vcs.revision" && b.Commit == "":
				b.Commit = s.Value
			case s.Key == "vcs.time" && b.BuildDate == "":
				b.BuildDate = s.Value + " (commit time)"
			}
		}
	}
	b.Commit, b.BuildDate = orUnknown(b.Commit), orUnknown(b.BuildDate)
	return b
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
