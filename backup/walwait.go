package backup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/pgark/pgark/manifest"
	"github.com/pgark/pgark/storage"
	"github.com/pgark/pgark/wal"
)

// RequiredWAL lists the WAL files a backup needs in the archive: every
// segment of every range (end exclusive: the segment holding End-1), the
// history file of each timeline above 1, and, for a backup from a primary,
// the backup history file written at the backup's start.
func RequiredWAL(ranges []manifest.WALRange, segSize uint32, start wal.LSN, startTLI uint32, fromPrimary bool) ([]string, error) {
	if len(ranges) == 0 {
		return nil, errors.New("the manifest lists no WAL range")
	}
	var names []string
	for _, r := range ranges {
		if r.End < r.Start || r.Timeline == 0 {
			return nil, fmt.Errorf("bad WAL range %d %s-%s", r.Timeline, r.Start, r.End)
		}
		if r.Timeline > 1 {
			names = append(names, fmt.Sprintf("%08X.history", r.Timeline))
		}
		first := uint64(r.Start) / uint64(segSize)
		last := first
		if r.End > r.Start {
			last = (uint64(r.End) - 1) / uint64(segSize)
		}
		for no := first; no <= last; no++ {
			names = append(names, wal.SegmentFileName(r.Timeline, no, segSize))
		}
	}
	if fromPrimary {
		seg := wal.SegmentFileName(startTLI, uint64(start)/uint64(segSize), segSize)
		names = append(names, fmt.Sprintf("%s.%08X.backup", seg, uint64(start)%uint64(segSize)))
	}
	return names, nil
}

// WaitArchived waits until every named WAL file is in the repository,
// checking each with a HEAD, until timeout. The error names the first file
// still missing.
func WaitArchived(ctx context.Context, s storage.Store, names []string, timeout time.Duration, log *slog.Logger) error {
	deadline := time.Now().Add(timeout)
	confirmed := 0
	lastLog := time.Now()
	for {
		for confirmed < len(names) {
			n, err := wal.ParseName(names[confirmed])
			if err != nil {
				return err
			}
			_, err = s.Stat(ctx, wal.ObjectKey(n))
			if storage.IsNotFound(err) {
				break
			}
			if err != nil {
				return fmt.Errorf("check %s in the repository: %w", names[confirmed], err)
			}
			confirmed++
		}
		if confirmed == len(names) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("WAL file %s is not in the repository after %s (%d of %d needed files confirmed): check that archive_command runs pgark wal-push into this repository and that pg_stat_archiver shows no failures; from a standby, the primary must switch WAL (--primary-dsn)",
				names[confirmed], timeout, confirmed, len(names))
		}
		if time.Since(lastLog) > 10*time.Second {
			log.Info("waiting for WAL archiving", "missing", names[confirmed], "confirmed", confirmed, "needed", len(names))
			lastLog = time.Now()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}
