package helm

import (
	"encoding"
	"encoding/json"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/stowage/stowage/config"
)

type schemaNode struct {
	Type                 any                    `json:"type"`
	Properties           map[string]*schemaNode `json:"properties"`
	AdditionalProperties json.RawMessage        `json:"additionalProperties"`
	Items                *schemaNode            `json:"items"`
}

// TestSchemaMirrorsConfig keeps the `config` part of values.schema.json in
// step with the Go config tree: every YAML field of config.Config is in the
// schema and the schema has no field the binary would reject.
func TestSchemaMirrorsConfig(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile("stowage/values.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	var root schemaNode
	if err := json.Unmarshal(data, &root); err != nil {
		t.Fatal(err)
	}
	compare(t, "config", reflect.TypeFor[config.Config](), root.Properties["config"])
}

func compare(t *testing.T, path string, typ reflect.Type, node *schemaNode) {
	t.Helper()
	if node == nil {
		t.Errorf("schema lacks %s", path)
		return
	}
	if decodesItself(typ) {
		// A size ("200GiB"), a percentage or a duration that may also be
		// written as a bare number: a string in the schema, or string and
		// integer.
		if !typeIncludes(node.Type, "string") {
			t.Errorf("schema %s: type %v, want string (Go %s decodes itself from text)", path, node.Type, typ)
		}
		return
	}
	switch typ.Kind() {
	case reflect.Struct:
		if typ.PkgPath() == "time" {
			return
		}
		if string(node.AdditionalProperties) != "false" {
			t.Errorf("schema %s: additionalProperties must be false", path)
		}
		fields := map[string]bool{}
		for i := range typ.NumField() {
			f := typ.Field(i)
			tag := strings.Split(f.Tag.Get("yaml"), ",")[0]
			if tag == "" || tag == "-" {
				continue
			}
			fields[tag] = true
			compare(t, path+"."+tag, f.Type, node.Properties[tag])
		}
		for name := range node.Properties {
			if !fields[name] {
				t.Errorf("schema has %s.%s, which config.Config does not", path, name)
			}
		}
	case reflect.Map:
		var elem schemaNode
		if err := json.Unmarshal(node.AdditionalProperties, &elem); err != nil {
			t.Errorf("schema %s: additionalProperties must describe the map values: %v", path, err)
			return
		}
		compare(t, path+".*", typ.Elem(), &elem)
	case reflect.Slice:
		if node.Items == nil {
			t.Errorf("schema %s: array without items", path)
		}
	default:
		want := map[reflect.Kind]string{reflect.String: "string", reflect.Bool: "boolean",
			reflect.Int: "integer", reflect.Int64: "integer"}[typ.Kind()]
		if typ.PkgPath() == "time" && typ.Name() == "Duration" {
			want = "string"
		}
		if reflect.PointerTo(typ).Implements(reflect.TypeFor[encoding.TextUnmarshaler]()) {
			// Written as text ("4MB/s", "30%"); the schema may also allow
			// a bare number.
			want = "string"
			if types, ok := node.Type.([]any); ok && slices.Contains(types, any("string")) {
				return
			}
		}
		got, _ := node.Type.(string)
		if want != "" && got != want {
			t.Errorf("schema %s: type %v, want %s (Go %s)", path, node.Type, want, typ)
		}
	}
}

// decodesItself reports whether a config type parses its own YAML scalar
// (encoding.TextUnmarshaler or yaml.Unmarshaler on its pointer).
func decodesItself(typ reflect.Type) bool {
	p := reflect.PointerTo(typ)
	_, yamlSelf := p.MethodByName("UnmarshalYAML")
	return yamlSelf || p.Implements(reflect.TypeFor[encoding.TextUnmarshaler]())
}

// typeIncludes reports whether a schema "type" (a name or a list) has want.
func typeIncludes(t any, want string) bool {
	switch v := t.(type) {
	case string:
		return v == want
	case []any:
		for _, x := range v {
			if x == want {
				return true
			}
		}
	}
	return false
}
