// Package azure implements storage.Store on Azure Blob Storage (block
// blobs), with the official SDK (azblob).
//
// Keys of the Store are blob names below Config.Prefix in one container.
// How the promises of storage.Store are kept:
//
//   - Create-only: a Put goes up as one Put Blob, or, for objects larger
//     than one block, as staged blocks (Put Block) and a Put Block List that
//     commits them; both carry "If-None-Match: *", so the service refuses to
//     replace an existing blob (412, or 409 BlobAlreadyExists →
//     storage.ErrExists). Until the block list is committed no blob exists:
//     a failed or cancelled Put leaves nothing under its key (uncommitted
//     blocks expire after a week).
//   - Compare-and-swap: Swap is a Put Blob with "If-Match: <ETag>" (or
//     "If-None-Match: *" to create), and ReadSmall returns the blob's ETag.
//   - Not found: only the service's BlobNotFound (404) is storage.ErrNotFound.
//     A missing container, authentication and authorisation failures are
//     storage.PermanentError; throttling (429, 503), other 5xx answers and
//     connection failures are left for the retry decorator.
//   - Metadata: Azure metadata names must be C# identifiers, pgark's keys
//     hold '-': see encodeMetaKey for the reversible mapping.
//
// ProbeConditionalWrites checks at init that the service honours these
// conditions.
package azure
