// Package incremental reads the INCREMENTAL.* files of PostgreSQL 17+
// block-level incremental backups and applies them, in chain order, to the
// files a restore has already written: the rebuild of a relation segment
// happens in place, one block at a time, with memory bounded by the block
// map of one segment (at most 512 KiB) and one block.
//
// Applying each backup of a chain forward (truncate to the file's
// truncation length, then write the blocks the backup holds) gives the
// file pg_combinebackup rebuilds from the same backups, and is stricter in
// one corner: a block that an intermediate backup truncated away and that
// no later backup holds comes back as zeros, never as the stale bytes of an
// older backup.
//
// It also reads and strips the INCREMENTAL FROM lines of backup_label,
// which link a backup to its parent.
package incremental
