// Package asof is a read-only storage decorator that shows a versioned store
// as it was at a past time: for each key, the newest version written at or
// before that time, unless it is a delete marker. Versions written and
// deletions made afterwards are invisible, so a repository whose objects
// were deleted or overwritten by an attacker reads as it was before the
// attack (pgark's --repo-target-time).
//
// The wrapped store must keep versions (Versioned: an S3 bucket with
// versioning enabled). Writes through the decorator (Put, Swap, Delete) are
// refused with ErrReadOnly. A Get, GetRange or Stat resolves its key with a
// version listing of that key alone, never of the whole store, and
// remembers found versions for the rest of the process (the past does not
// change); "not found" is never remembered.
//
// Times are compared with the store's LastModified, whose resolution is one
// second on S3: a version written in the same second as the target time
// counts as written before it.
package asof
