package config

import (
	"bytes"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/pipeline-dev/pipeline/configs"
)

// documentedElsewhere are settings configs/pipeline.yaml leaves to a
// complete example of their own (configs/auth/pipeline-auth.yaml).
var documentedElsewhere = []string{
	"nats.auth.admin", "nats.auth.executor", "nats.auth.runtime", "nats.auth.caller", "nats.auth.origins",
}

// TestShippedYAMLMatchesCodeDefaults holds configs/pipeline.yaml (printed by
// `pipeline config`) to Default(), key by key: every setting appears in the
// file, with the value the code uses when it is absent.
func TestShippedYAMLMatchesCodeDefaults(t *testing.T) {
	data := configs.Default()
	var fromFile Config
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true) // a key the code does not know fails here
	if err := dec.Decode(&fromFile); err != nil {
		t.Fatalf("configs/pipeline.yaml: %v", err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	keys := map[string]bool{}
	collectKeys(doc.Content[0], "", keys)

	def := Default()
	n := 0
	walkLeaves(reflect.ValueOf(def), reflect.ValueOf(fromFile), "", func(path string, code, file reflect.Value) {
		for _, p := range documentedElsewhere {
			if path == p || strings.HasPrefix(path, p+".") {
				return
			}
		}
		n++
		if !keys[path] {
			t.Errorf("%s: missing from configs/pipeline.yaml (code default %v)", path, show(code))
			return
		}
		if !sameValue(code, file) {
			t.Errorf("%s: configs/pipeline.yaml says %v, the code default is %v", path, show(file), show(code))
		}
	})
	if n < 70 {
		t.Fatalf("checked only %d settings; the walk is broken", n)
	}
}

// collectKeys records the dotted path of every mapping key under node.
func collectKeys(node *yaml.Node, prefix string, keys map[string]bool) {
	if node.Kind != yaml.MappingNode {
		return
	}
	for i := 0; i+1 < len(node.Content); i += 2 {
		p := node.Content[i].Value
		if prefix != "" {
			p = prefix + "." + p
		}
		keys[p] = true
		collectKeys(node.Content[i+1], p, keys)
	}
}

var durationType = reflect.TypeOf(time.Duration(0))

// walkLeaves visits every yaml-tagged leaf setting of two values of the same
// struct type, following inline structs, with its dotted key path.
func walkLeaves(a, b reflect.Value, prefix string, visit func(path string, a, b reflect.Value)) {
	t := a.Type()
	for i := 0; i < t.NumField(); i++ {
		tag := t.Field(i).Tag.Get("yaml")
		fa, fb := a.Field(i), b.Field(i)
		switch {
		case tag == "" || tag == "-":
			continue
		case tag == ",inline":
			walkLeaves(fa, fb, prefix, visit)
			continue
		}
		path := tag
		if prefix != "" {
			path = prefix + "." + tag
		}
		if fa.Kind() == reflect.Struct && fa.Type() != durationType {
			walkLeaves(fa, fb, path, visit)
			continue
		}
		visit(path, fa, fb)
	}
}

// sameValue compares two settings, an empty list equalling a missing one.
func sameValue(a, b reflect.Value) bool {
	if a.Kind() == reflect.Slice || a.Kind() == reflect.Map {
		if a.Len() == 0 && b.Len() == 0 {
			return true
		}
	}
	return reflect.DeepEqual(a.Interface(), b.Interface())
}

func show(v reflect.Value) string { return fmt.Sprintf("%v", v.Interface()) }
