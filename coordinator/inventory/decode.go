package inventory

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

const (
	// maxDepth bounds the nesting of values and of merge keys (and so
	// recursive aliases).
	maxDepth = 64
	// maxNodes bounds the nodes visited, counting every alias expansion, so
	// that a small file cannot expand into a huge one.
	maxNodes = 1 << 20
)

// decoder turns the YAML node tree into an Inventory, collecting every
// problem with its path instead of stopping at the first.
type decoder struct {
	problems
	dir      string
	nodes    int
	tooLarge bool
	refs     []reference
	defaults []configDefault
	uidLines []int // line of each record's uid, by record index
}

// reference is a uid found in the file, checked once all records are known.
type reference struct {
	path string
	line int
	uid  string
	kind refKind
}

type refKind int

const (
	refAdmin refKind = iota
	refResource
	refConfiguration
	refAdditional
)

// configDefault is a rotation whose configuration was omitted.
type configDefault struct {
	path     string
	line     int
	rotation *Rotation
}

// parseYAML parses the first document; a second document is a problem.
func parseYAML(data []byte) (root *yaml.Node, problem *Problem) {
	defer func() {
		if r := recover(); r != nil {
			root, problem = nil, &Problem{Message: "malformed YAML"}
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &Problem{Message: "empty inventory: want version and records"}
		}
		return nil, &Problem{Message: yamlMessage(err)}
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case errors.Is(err, io.EOF):
	case err != nil:
		return nil, &Problem{Message: yamlMessage(err)}
	default:
		return nil, &Problem{Message: fmt.Sprintf("line %d: more than one YAML document", extra.Line), Line: 0}
	}
	if p := checkExpansion(&doc); p != nil {
		return nil, p
	}
	return &doc, nil
}

// checkExpansion refuses, before any decoding, a document that aliases make
// recursive or too large once expanded (a "billion laughs").
func checkExpansion(doc *yaml.Node) *Problem {
	memo := make(map[*yaml.Node]int)
	active := make(map[*yaml.Node]bool)
	var cycle *yaml.Node
	var size func(n *yaml.Node) int
	size = func(n *yaml.Node) int {
		if n == nil || cycle != nil {
			return 0
		}
		if s, ok := memo[n]; ok {
			return s
		}
		if active[n] {
			cycle = n
			return 0
		}
		active[n] = true
		total := 1
		if n.Kind == yaml.AliasNode {
			total += size(n.Alias)
		}
		for _, c := range n.Content {
			total += size(c)
			if total > maxNodes {
				total = maxNodes + 1 // saturate
			}
		}
		active[n] = false
		memo[n] = total
		return total
	}
	total := size(doc)
	switch {
	case cycle != nil:
		return &Problem{Message: fmt.Sprintf("line %d: an alias refers to a node that contains it", cycle.Line)}
	case total > maxNodes:
		return &Problem{Message: fmt.Sprintf("the document is too large once aliases are expanded (more than %d nodes)", maxNodes)}
	}
	return nil
}

func yamlMessage(err error) string {
	return strings.TrimPrefix(err.Error(), "yaml: ")
}

func (d *decoder) count() bool {
	if d.tooLarge {
		return false
	}
	d.nodes++
	if d.nodes > maxNodes {
		d.tooLarge = true
		d.addf("", 0, "the document is too large once aliases are expanded (more than %d nodes)", maxNodes)
		return false
	}
	return true
}

// resolve follows an alias to its anchored node.
func resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode; i++ {
		if i > maxDepth {
			return nil
		}
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	n = resolve(n)
	return n == nil || n.Kind == 0 || (n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null")
}

func line(n *yaml.Node) int {
	if n == nil {
		return 0
	}
	return n.Line
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func index(path string, i int) string { return fmt.Sprintf("%s[%d]", path, i) }

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!null":
			return "null"
		case "!!str":
			return "a string"
		case "!!int":
			return "an integer"
		case "!!float":
			return "a number"
		case "!!bool":
			return "a boolean"
		}
		return "a scalar"
	}
	return "nothing"
}

type pair struct {
	key       string
	keyNode   *yaml.Node
	valueNode *yaml.Node
}

// pairs returns the entries of a mapping (merge keys "<<" applied, explicit
// keys first), reporting keys that are not strings and duplicate keys. With
// hide, key names are left out of messages (they may be misplaced values).
func (d *decoder) pairs(n *yaml.Node, path string, hide bool, depth int) []pair {
	if depth > maxDepth {
		d.addf(path, line(n), "merge keys nested too deeply")
		return nil
	}
	var explicit, merged []pair
	seen := make(map[string]int)
	for i := 0; i+1 < len(n.Content); i += 2 {
		if !d.count() {
			return nil
		}
		k, v := resolve(n.Content[i]), n.Content[i+1]
		if k == nil || k.Kind != yaml.ScalarNode {
			d.addf(path, line(n.Content[i]), "a key must be a string")
			continue
		}
		if k.ShortTag() == "!!merge" {
			merged = append(merged, d.mergeSource(v, path, hide, depth+1)...)
			continue
		}
		if first, dup := seen[k.Value]; dup {
			if hide {
				d.addf(path, k.Line, "duplicate key (first at line %d)", first)
			} else {
				d.addf(join(path, k.Value), k.Line, "duplicate key (first at line %d)", first)
			}
			continue
		}
		seen[k.Value] = k.Line
		explicit = append(explicit, pair{key: k.Value, keyNode: k, valueNode: v})
	}
	for _, p := range merged {
		if _, ok := seen[p.key]; !ok {
			seen[p.key] = p.keyNode.Line
			explicit = append(explicit, p)
		}
	}
	return explicit
}

func (d *decoder) mergeSource(v *yaml.Node, path string, hide bool, depth int) []pair {
	r := resolve(v)
	if r != nil && r.Kind == yaml.MappingNode {
		return d.pairs(r, path, hide, depth)
	}
	if r != nil && r.Kind == yaml.SequenceNode {
		var out []pair
		for _, item := range r.Content {
			if m := resolve(item); m != nil && m.Kind == yaml.MappingNode {
				out = append(out, d.pairs(m, path, hide, depth)...)
				continue
			}
			d.addf(path, line(item), "a merge key (<<) takes a mapping or a list of mappings")
		}
		return out
	}
	d.addf(path, line(v), "a merge key (<<) takes a mapping or a list of mappings")
	return nil
}

// object returns the values of the known keys of the mapping n, reporting
// unknown keys. It returns nil when n is not a mapping (a problem) or null
// (no problem: the caller decides whether it is required).
func (d *decoder) object(n *yaml.Node, path string, known []string, hide bool) map[string]*yaml.Node {
	r := resolve(n)
	if isNull(r) {
		return nil
	}
	if r.Kind != yaml.MappingNode {
		d.addf(path, line(n), "must be a mapping, not %s", kindName(r))
		return nil
	}
	out := make(map[string]*yaml.Node)
	for _, p := range d.pairs(r, path, hide, 0) {
		if !slices.Contains(known, p.key) {
			if hide {
				d.addf(path, p.keyNode.Line, "unknown key (allowed: %s); the key is not shown in case it is a misplaced value", strings.Join(known, ", "))
			} else {
				d.addf(join(path, p.key), p.keyNode.Line, "unknown key (allowed: %s)", strings.Join(known, ", "))
			}
			continue
		}
		out[p.key] = p.valueNode
	}
	return out
}

// list returns the items of a sequence; null gives none.
func (d *decoder) list(n *yaml.Node, path string) []*yaml.Node {
	r := resolve(n)
	if isNull(r) {
		return nil
	}
	if r.Kind != yaml.SequenceNode {
		d.addf(path, line(n), "must be a list, not %s", kindName(r))
		return nil
	}
	return r.Content
}

// str returns a scalar as text; absent or null gives "".
func (d *decoder) str(n *yaml.Node, path string) string {
	r := resolve(n)
	if isNull(r) {
		return ""
	}
	if r.Kind != yaml.ScalarNode {
		d.addf(path, line(n), "must be a string, not %s", kindName(r))
		return ""
	}
	return r.Value
}

// integer returns an integer; absent or null gives 0.
func (d *decoder) integer(n *yaml.Node, path string) int {
	r := resolve(n)
	if isNull(r) {
		return 0
	}
	if r.Kind != yaml.ScalarNode || r.ShortTag() != "!!int" {
		d.addf(path, line(n), "must be an integer, not %s", kindName(r))
		return 0
	}
	var v int
	if err := r.Decode(&v); err != nil {
		d.addf(path, line(n), "must be an integer that fits in 64 bits")
		return 0
	}
	return v
}

// boolean returns a boolean; absent or null gives false.
func (d *decoder) boolean(n *yaml.Node, path string) bool {
	r := resolve(n)
	if isNull(r) {
		return false
	}
	var v bool
	if r.Kind != yaml.ScalarNode || r.ShortTag() != "!!bool" || r.Decode(&v) != nil {
		d.addf(path, line(n), "must be true or false, not %s", kindName(r))
		return false
	}
	return v
}

// value converts a field value. Messages never show the value itself.
//
// With asText, scalars other than null are kept as the text written (secret
// fields: a password written 12345678 stays the string "12345678").
func (d *decoder) value(n *yaml.Node, path string, depth int, asText bool) any {
	if !d.count() {
		return nil
	}
	if depth > maxDepth {
		d.addf(path, line(n), "nested more than %d levels deep", maxDepth)
		return nil
	}
	r := resolve(n)
	if r == nil {
		d.addf(path, line(n), "alias chain too long")
		return nil
	}
	switch r.Kind {
	case yaml.SequenceNode:
		out := make([]any, 0, len(r.Content))
		for _, item := range r.Content {
			out = append(out, d.value(item, path, depth+1, asText))
		}
		return out
	case yaml.MappingNode:
		out := make(map[string]any)
		for _, p := range d.pairs(r, path, true, 0) {
			out[p.key] = d.value(p.valueNode, path, depth+1, asText)
		}
		return out
	case yaml.ScalarNode:
		if asText && r.ShortTag() != "!!null" {
			return r.Value
		}
		return d.scalar(r, path)
	}
	d.addf(path, line(n), "unsupported value")
	return nil
}

func (d *decoder) scalar(n *yaml.Node, path string) any {
	switch tag := n.ShortTag(); tag {
	case "!!null":
		return nil
	case "!!str", "!!timestamp":
		return n.Value
	case "!!bool":
		var v bool
		if n.Decode(&v) == nil {
			return v
		}
	case "!!int":
		var v any
		if n.Decode(&v) == nil {
			switch v.(type) {
			case int, int64, uint64:
				return v
			}
		}
	case "!!float":
		var v float64
		if n.Decode(&v) == nil {
			if math.IsInf(v, 0) || math.IsNaN(v) {
				d.addf(path, n.Line, "must be a finite number")
				return nil
			}
			return v
		}
	case "!!binary":
		var v string
		if n.Decode(&v) == nil {
			if !utf8.ValidString(v) {
				d.addf(path, n.Line, "binary value is not valid UTF-8 text")
				return nil
			}
			return v
		}
	default:
		d.addf(path, n.Line, "unsupported tag %q", tag)
		return nil
	}
	d.addf(path, n.Line, "invalid %s value", n.ShortTag())
	return nil
}
