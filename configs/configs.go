// Package configs holds the default configuration file, the documentation
// of every setting (`pipeline config` prints it). The defaults themselves are
// written in code (internal/config.Default, from each role's Config); a test
// holds this file to them key by key, so the two cannot drift apart.
package configs

import (
	"bytes"
	_ "embed"
)

//go:embed pipeline.yaml
var defaultYAML []byte

// Default returns configs/pipeline.yaml: every setting with its default value.
func Default() []byte { return bytes.Clone(defaultYAML) }
