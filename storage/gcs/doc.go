// Package gcs implements storage.Store on Google Cloud Storage, with a
// small client of the JSON API over net/http (api.go) and OAuth 2
// credentials from golang.org/x/oauth2/google (transport.go). Google's
// client library would triple the start-up time of every pgark process and
// the size of the binary (see docs/gcs.md).
//
// Keys of the Store live below Config.Prefix in the bucket. Every promise of
// storage.Store rests on object generations:
//
//   - Put is create-only: the upload carries the precondition
//     ifGenerationMatch=0 ("the object does not exist"), so the store refuses
//     to replace an existing object (412 → storage.ErrExists). Objects that
//     fit in one chunk go up in one request; larger ones in a resumable
//     upload of Config.ChunkSize chunks, whose precondition is checked when
//     the upload is finalised. A Put that fails (the reader fails, the
//     context is cancelled, the size is wrong) leaves the upload
//     unfinished, so nothing appears under the key.
//   - ReadSmall returns the object's generation as its version, and Swap
//     replaces an object only with ifGenerationMatch=<generation>: a real
//     compare-and-swap (412 → storage.ErrChanged).
//   - "Not found" is only the store's answer that the object does not exist
//     (a 404 on the object). A missing bucket, a 401 or a 403 is a
//     storage.PermanentError.
//   - Metadata travels as the object's custom metadata.
//
// Transient errors (408, 429, 5xx, connection failures) are returned as
// plain errors for the retry decorator (storage/retry); the client itself
// also tries each request up to maxAttempts times (all of pgark's writes
// are conditional, hence idempotent), and sends a failed chunk of a
// resumable upload again within the same upload (GCS ignores the bytes it
// already holds). Uploads carry the data's CRC-32C; reads of a whole object
// check the one GCS stored.
package gcs
