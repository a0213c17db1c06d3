package backup

import (
	"fmt"
	"io"
	"time"

	"github.com/pgark/pgark/catalog"
	"github.com/pgark/pgark/manifest"
	"github.com/pgark/pgark/tarstream"
)

// File-level incremental backups (PostgreSQL 13-16, and 17+ without WAL
// summaries): the server streams every file; a file whose size and
// modification time equal the parent's record, and that was last modified
// before the parent backup started, is left out of the stored stream. Its
// CRC-32C, computed as it streams by, must then equal the parent's: a file
// that changed without a new modification time abandons the backup (a full
// one is taken instead), so that a reference never stands for other bytes.
// The files left out are listed in the backup's references object.

// FileChangedError is a file whose content changed since the parent backup
// while its size and modification time stayed the same.
type FileChangedError struct{ Path string }

func (e *FileChangedError) Error() string {
	return fmt.Sprintf("%s changed since the parent backup without a new modification time", e.Path)
}

// lastModifiedLayout is backup_manifest's Last-Modified.
const lastModifiedLayout = "2006-01-02 15:04:05 GMT"

// neverReferenced are files a backup always stores: they describe the
// backup itself.
var neverReferenced = map[string]bool{"backup_label": true, "tablespace_map": true, "global/pg_control": true, "backup_manifest": true}

// fileLevel prepares a file-level incremental backup on parent.
func (h *handler) fileLevel(parent parentChoice) error {
	m, err := manifest.Parse(parent.manifest)
	if err != nil {
		return fmt.Errorf("the backup_manifest of backup %s: %w", parent.meta.ID, err)
	}
	h.fileParent = m
	// The parent started on the server's clock at about its stop time less
	// its duration; a file modified from then on may have been copied
	// half-changed, and is stored again whatever its time says.
	p := parent.meta
	start := p.StopTime.Add(-p.EndTime.Sub(p.StartTime))
	h.parentSince = start.Add(-2 * time.Second).Unix()
	return nil
}

// skip reports whether member m of archive may be left out.
func (h *handler) skip(archive string, m tarstream.Member) bool {
	if !m.IsRegular() || m.Size == 0 || m.ModTime >= h.parentSince {
		return false
	}
	path, err := manifest.BackupPath(archive, m.Name)
	if err != nil || neverReferenced[path] {
		return false
	}
	f, ok := h.fileParent.File(path)
	if !ok || f.Size != m.Size || f.ChecksumAlgorithm != "CRC32C" || f.Checksum == "" {
		return false
	}
	t, err := time.Parse(lastModifiedLayout, f.LastModified)
	return err == nil && t.Unix() == m.ModTime
}

// copyFiltered streams r into the splitter, leaving out the members skip
// chooses once their checksum proved them unchanged; every member is
// checked against the manifest.
func (h *handler) copyFiltered(archive string, spl io.Writer, r io.Reader) error {
	f, err := tarstream.NewFilter(spl, tarstream.FilterOptions{
		Checksum: "CRC32C",
		Skip:     func(m tarstream.Member) bool { return h.skip(archive, m) },
		Skipped: func(m tarstream.Member) error {
			path, _ := manifest.BackupPath(archive, m.Name)
			if pf, _ := h.fileParent.File(path); pf.Checksum != m.Checksum {
				return &FileChangedError{Path: path}
			}
			h.refs = append(h.refs, path)
			return nil
		},
		Member: func(m tarstream.Member) error { return h.files.Add(archive, m) },
	})
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	h.log.Info("unchanged files left out", "backup", h.id, "archive", archive, "bytes", f.SkippedBytes())
	return nil
}

// storeReferences writes the list of files taken from the parent.
func (h *handler) storeReferences() error {
	key := catalog.ReferencesKey(h.id)
	h.written = append(h.written, key)
	u := startPartUpload(h.ctx, h.c.Repo.Store, key, h.c.Codec)
	if _, err := u.Write(catalog.FormatReferences(h.refs)); err != nil {
		u.abort(err)
		return fmt.Errorf("store the references list: %w", err)
	}
	ref, err := u.finish()
	if err != nil {
		return fmt.Errorf("references list: %w", err)
	}
	h.meta.References = &ref
	h.meta.StoredBytes += ref.StoredBytes
	return nil
}
