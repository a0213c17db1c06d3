// Package drill is the record and the checks of a restore drill (`pgark drill`): a backup
// restored into a scratch server (package scratch), replayed to the end of the archive or a
// target, promoted and checked.
//
// The record of each drill is a plaintext JSON metadata object, drills/<id>.json, written
// create-only (and signed when a signing key is configured) by Put; List reads them all,
// Latest picks the last drill and the last successful one (what `pgark check` judges as
// last_drill). The checks are VerifyBackup (pg_verifybackup -n before the first start),
// ReachedEnd (did recovery reach the end of the archive), CheckSQL (queries that must
// return true) and AmCheck (pg_amcheck on every database). WriteText and WritePrometheus
// print a record.
//
// It never writes to the repository except the drill's own record.
package drill
