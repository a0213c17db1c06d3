// Package restore restores a base backup from the repository into a data
// directory: it plans (which backup, which timeline, for which recovery
// target), extracts the backup's tar parts in parallel into PGDATA and the
// tablespace locations under strict safety rules (see extract.go), and
// finally writes the recovery configuration (package recoveryconf).
//
// It sits on catalog (what to restore), walinventory (timeline histories),
// repo (verified reads) and archive/tar; it never writes to the repository.
package restore
