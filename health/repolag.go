package health

import (
	"fmt"
	"time"

	"github.com/pgark/pgark/walinventory"
)

// CheckRepositoryArchive is the name of the check that compares one of two
// repositories' newest segment with the server's last archived one.
const CheckRepositoryArchive = "repository_archive"

// Backlog is what wal-push queued in its spool for a repository that did
// not take a file in time (zero when the check does not run on the
// archiving host).
type Backlog struct {
	Queued int
	Oldest time.Duration
}

// RepositoryArchive checks how far repository idx's archive is behind the
// server's last archived segment: warning above maxLag segments, critical
// above 4*maxLag. The queued backlog is reported with it: it is what a later
// wal-push delivers.
func RepositoryArchive(idx int, srv *Server, rep *walinventory.Report, b Backlog, maxLag int) Check {
	c := Check{Name: CheckRepositoryArchive, Details: map[string]any{"repository_index": idx, "queued": b.Queued,
		"oldest_queued_seconds": b.Oldest.Round(time.Second).Seconds(), "max_archive_lag": maxLag}}
	if srv == nil || srv.Archiver == nil || srv.Archiver.LastArchivedWAL == "" {
		c.Message = fmt.Sprintf("not compared: the server has no last archived segment; %d queued for this repository", b.Queued)
		return c
	}
	last := srv.Archiver.LastArchivedWAL
	newest := ""
	if rep != nil {
		newest = rep.To
	}
	c.Details["server_last_archived"], c.Details["repository_newest"] = last, newest
	if newest == "" {
		c.Status, c.Message = Critical, fmt.Sprintf("repository %d holds no segment; the server archived up to %s; %d queued", idx, last, b.Queued)
		return c
	}
	d, err := SegmentDistance(newest, last, srv.WALSegmentSize)
	if err != nil {
		c.Message = fmt.Sprintf("not compared: %v", err)
		return c
	}
	lag := max(d, 0)
	c.Details["lag_segments"] = lag
	c.Message = fmt.Sprintf("repository %d: newest segment %s, %d behind the server's last archived %s; %d queued for it", idx, newest, lag, last, b.Queued)
	if b.Queued > 0 {
		c.Message += fmt.Sprintf(" (oldest %s ago)", b.Oldest.Round(time.Second))
	}
	switch {
	case lag > 4*int64(maxLag):
		c.Status = Critical
		c.Message += fmt.Sprintf(": more than 4 x --max-archive-lag %d", maxLag)
	case lag > int64(maxLag):
		c.Status = Warning
		c.Message += fmt.Sprintf(": more than --max-archive-lag %d", maxLag)
	}
	return c
}
