package azure

import "strings"

// Azure metadata names must be C# identifiers (letters, digits and '_', not
// starting with a digit) and are case-insensitive; pgark's metadata keys
// are lower-case letters, digits and '-' (storage.ValidMeta). The mapping:
// '-' becomes '_', and a key that starts with a digit or '-' gets a leading
// '_'. pgark keys never hold '_', so it is reversible: "pgark-sha256" is
// stored as "pgark_sha256", "1k" as "_1k" and "-k" as "__k".

// encodeMetaKey maps a pgark metadata key to an Azure metadata name.
func encodeMetaKey(k string) string {
	name := strings.ReplaceAll(k, "-", "_")
	if k != "" && (k[0] >= '0' && k[0] <= '9' || k[0] == '-') {
		name = "_" + name
	}
	return name
}

// decodeMetaKey is the inverse of encodeMetaKey; names are lower-cased
// first (the service and the SDK may change their case).
func decodeMetaKey(name string) string {
	name = strings.TrimPrefix(strings.ToLower(name), "_")
	return strings.ReplaceAll(name, "_", "-")
}

func encodeMeta(meta map[string]string) map[string]*string {
	if len(meta) == 0 {
		return nil
	}
	out := make(map[string]*string, len(meta))
	for k, v := range meta {
		out[encodeMetaKey(k)] = ptr(v)
	}
	return out
}

func decodeMeta(meta map[string]*string) map[string]string {
	out := make(map[string]string, len(meta))
	for k, v := range meta {
		out[decodeMetaKey(k)] = deref(v)
	}
	return out
}
