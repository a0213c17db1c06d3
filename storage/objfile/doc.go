// Package objfile is the on-disk format of an object file, shared by the
// stores that keep objects as files (storage/local and storage/sftp), so that
// a repository copied from an SFTP server to a local disk (or back) stays
// valid.
//
// Each object file starts with a small header that holds the object's
// metadata, followed by the payload:
//
//	magic   8 bytes  "PGARKOB\x01"
//	length  4 bytes  big-endian length of the JSON that follows (<= 64 KiB)
//	meta    length bytes of JSON: {"key":"value",...}
//	payload
//
// An object and its metadata are thus written, and made visible, at once.
package objfile
