// Package configs holds the default configuration file. The file is the
// documentation of every setting and the source of the defaults: the binary
// embeds it, so the two cannot drift apart.
package configs

import (
	"bytes"
	_ "embed"
)

//go:embed pipeline.yaml
var defaultYAML []byte

// Default returns configs/pipeline.yaml: every setting with its default value.
func Default() []byte { return bytes.Clone(defaultYAML) }
