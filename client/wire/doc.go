// Package wire is the one implementation of the client side of the
// origin's WebSocket protocol (PROTOCOL.md §1 and §1.1): the frame types,
// a fast decoder for origin → client frames and the encoders for client →
// origin frames. Package client and the load generator both use it.
//
// The decoder reads the fields a client acts on without decoding bodies or
// headers: a Frame's byte fields alias the buffer they were parsed from and
// are valid only until that buffer is reused. It allocates only for string
// values that contain escape sequences.
//
// Everything here is safe for concurrent use except a Frame, which belongs
// to the goroutine that parses into it.
package wire
