package wire

// Frame types (PROTOCOL.md §1, §1.1).
const (
	TypeHello      = "hello"
	TypeStartFetch = "start-fetch"
	TypeGetResult  = "get-result"
	TypeCancel     = "cancel"
	TypeEnqueued   = "enqueued"
	TypePending    = "pending"
	TypeResult     = "result"
	TypeError      = "error"
	TypeCanceled   = "canceled"
)

// Body encodings of result frames (and, optionally, start-fetch frames).
const (
	EncodingUTF8   = "utf8"
	EncodingBase64 = "base64"
)

// MaxIDLen is the longest frame id or key the origin accepts (1..128
// printable ASCII characters).
const MaxIDLen = 128

// ValidID reports whether s is a valid frame id or key: 1..128 printable
// ASCII characters.
func ValidID(s string) bool {
	if len(s) == 0 || len(s) > MaxIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}
