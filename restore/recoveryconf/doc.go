// Package recoveryconf writes the recovery configuration of a restored data
// directory: pgark's block of recovery settings in postgresql.auto.conf
// (replacing those an earlier restore or the source server left),
// recovery.signal or standby.signal, and the backup_manifest. It validates
// the recovery options (targets, timeline, action) before any restore starts.
//
// It sits on the standard library only; package restore calls it last.
package recoveryconf
