package rules

import (
	"os"
	"strings"

	"go.yaml.in/yaml/v3"
)

// KeepSettings are the settings an implicit keep uses: where a message
// goes when the rules file has errors. Each is "" when the file does not
// set it, or sets it to something that is not a plain string.
type KeepSettings struct {
	Maildir, Default, Log string
}

// ReadKeepSettings reads the maildir, default and log settings of a
// rules file that Load refused for its errors, so that mail still goes
// where the user keeps it, as procmail and Sieve keep mail when the
// filter is broken. A file that does not parse as YAML, or is insecure,
// yields nothing: only settings that stand on their own are used, and
// only from a file the user alone controls.
func ReadKeepSettings(path string) KeepSettings {
	if CheckSecurity(path) != nil {
		return KeepSettings{}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return KeepSettings{}
	}
	var doc yaml.Node
	if yaml.Unmarshal(data, &doc) != nil || len(doc.Content) == 0 {
		return KeepSettings{}
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return KeepSettings{}
	}
	var ks KeepSettings
	seen := make(map[string]bool)
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		var dst *string
		switch k.Value {
		case "maildir":
			dst = &ks.Maildir
		case "default":
			dst = &ks.Default
		case "log":
			dst = &ks.Log
		default:
			continue
		}
		if seen[k.Value] {
			// Defined twice: neither is clearly the user's intent.
			*dst = ""
			continue
		}
		seen[k.Value] = true
		if v.Kind == yaml.ScalarNode && v.Tag == "!!str" && v.Value != "" && !strings.ContainsRune(v.Value, 0) {
			*dst = v.Value
		}
	}
	return ks
}
