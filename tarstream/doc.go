// Package tarstream reads tar streams as they arrive: a push-mode Scanner
// (an io.Writer) that reports every member with its exact byte extent in the
// stream and the checksum of its content in backup_manifest's form, and a
// Splitter that cuts a stream into parts at member boundaries without
// changing a byte. Neither holds member data in memory.
//
// It sits on the standard library only. basebackup uses the Scanner to find
// the end of each archive in the replication stream, backup uses the
// Splitter to store archives as parts, catalog.Verify uses the Scanner to
// walk stored parts; restore extracts with archive/tar, which the Scanner
// agrees with (the tests and FuzzTarScan compare them member by member).
// Why it does not use archive/tar itself, with figures: see Scanner.
package tarstream
