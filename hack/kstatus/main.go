// Command edgewire-kstatus reads Kubernetes objects and says what GitOps tools make of them, with the tools'
// own code: Flux's kstatus library and the Lua interpreter Argo CD embeds.
//
//	edgewire-kstatus status                 objects on stdin -> status.Compute of sigs.k8s.io/cli-utils
//	edgewire-kstatus argocd-health --dir D  objects on stdin -> the Argo CD health.lua of D/<group>/<Kind>/
//	edgewire-kstatus argocd-test --dir D    every health_test.yaml under D, each case compared (status, message)
//
// Objects are JSON or YAML on stdin: one object, a `kind: List` (what `kubectl get -o json` prints for several),
// or several documents. status and argocd-health print one JSON line per object:
//
//	{"apiVersion":"edgewire.dev/v1alpha1","kind":"EventBroker","namespace":"factory","name":"events","status":"Current","message":"Resource is Ready"}
//
// hack/kstatus/build.sh builds it (make deps links it into ~/.cache/edgewire/bin); the e2e suite
// (e2e/tests/cluster/kstatus.rs) runs it on live objects and on the committed Argo CD testdata.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/yaml"
)

// Verdict is what a tool says about one object.
type Verdict struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Namespace  string `json:"namespace,omitempty"`
	Name       string `json:"name"`
	Status     string `json:"status"`
	Message    string `json:"message"`
}

func usage() {
	fmt.Fprint(os.Stderr, `usage:
  edgewire-kstatus status                  < objects   kstatus (sigs.k8s.io/cli-utils status.Compute) of each object
  edgewire-kstatus argocd-health --dir DIR < objects   Argo CD health of each object from DIR/<group>/<Kind>/health.lua
  edgewire-kstatus argocd-test --dir DIR               run every DIR/<group>/<Kind>/health_test.yaml case
objects: JSON or YAML, one object, a List, or several documents
`)
	os.Exit(2)
}

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	cmd, args := os.Args[1], os.Args[2:]
	var err error
	switch cmd {
	case "status":
		err = runStatus(args)
	case "argocd-health":
		err = runArgoHealth(args)
	case "argocd-test":
		err = runArgoTest(args)
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "edgewire-kstatus %s: %v\n", cmd, err)
		os.Exit(1)
	}
}

func runStatus(args []string) error {
	fs := flag.NewFlagSet("status", flag.ExitOnError)
	_ = fs.Parse(args)
	objs, err := readObjects(os.Stdin)
	if err != nil {
		return err
	}
	for _, u := range objs {
		res, err := status.Compute(u)
		if err != nil {
			return fmt.Errorf("%s %s/%s: %w", u.GetKind(), u.GetNamespace(), u.GetName(), err)
		}
		if err := emit(u, string(res.Status), res.Message); err != nil {
			return err
		}
	}
	return nil
}

func runArgoHealth(args []string) error {
	fs := flag.NewFlagSet("argocd-health", flag.ExitOnError)
	dir := fs.String("dir", "", "the resource_customizations directory")
	_ = fs.Parse(args)
	if *dir == "" {
		return errors.New("--dir is required")
	}
	objs, err := readObjects(os.Stdin)
	if err != nil {
		return err
	}
	for _, u := range objs {
		h, err := healthOf(*dir, u)
		if err != nil {
			return fmt.Errorf("%s %s/%s: %w", u.GetKind(), u.GetNamespace(), u.GetName(), err)
		}
		if err := emit(u, h.Status, h.Message); err != nil {
			return err
		}
	}
	return nil
}

func emit(u *unstructured.Unstructured, st, msg string) error {
	line, err := json.Marshal(Verdict{
		APIVersion: u.GetAPIVersion(),
		Kind:       u.GetKind(),
		Namespace:  u.GetNamespace(),
		Name:       u.GetName(),
		Status:     st,
		Message:    msg,
	})
	if err != nil {
		return err
	}
	_, err = fmt.Printf("%s\n", line)
	return err
}

// readObjects reads JSON or YAML documents (YAML separated by `---` lines, JSON concatenated), flattening Lists.
func readObjects(r io.Reader) ([]*unstructured.Unstructured, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	var docs []map[string]any
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) > 0 && trimmed[0] == '{' {
		dec := json.NewDecoder(bytes.NewReader(trimmed))
		for {
			var raw json.RawMessage
			err := dec.Decode(&raw)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("reading JSON: %w", err)
			}
			m, err := decode(raw)
			if err != nil {
				return nil, err
			}
			docs = append(docs, m)
		}
	} else {
		for _, doc := range splitYAML(data) {
			m, err := decodeYAML(doc)
			if err != nil {
				return nil, err
			}
			if m != nil {
				docs = append(docs, m)
			}
		}
	}
	var out []*unstructured.Unstructured
	for _, m := range docs {
		if items, ok := m["items"].([]any); ok && isListKind(m) {
			for i, it := range items {
				obj, ok := it.(map[string]any)
				if !ok {
					return nil, fmt.Errorf("item %d of the List is not an object", i)
				}
				out = append(out, &unstructured.Unstructured{Object: obj})
			}
			continue
		}
		out = append(out, &unstructured.Unstructured{Object: m})
	}
	if len(out) == 0 {
		return nil, errors.New("no objects on stdin")
	}
	return out, nil
}

// decode reads one JSON object the way client-go reads an unstructured object: whole numbers become int64
// (kstatus reads metadata.generation as an int64).
func decode(raw []byte) (map[string]any, error) {
	var m map[string]any
	if err := utiljson.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("reading JSON: %w", err)
	}
	return m, nil
}

// decodeYAML reads one YAML document like decode (nil for an empty document).
func decodeYAML(doc []byte) (map[string]any, error) {
	raw, err := yaml.YAMLToJSON(doc)
	if err != nil {
		return nil, fmt.Errorf("reading YAML: %w", err)
	}
	if bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return nil, nil
	}
	return decode(raw)
}

// isListKind: `kind: List` (`kubectl get` of several objects), or `<Kind>List` (a list call of one type).
func isListKind(m map[string]any) bool {
	k, _ := m["kind"].(string)
	return strings.HasSuffix(k, "List")
}

// splitYAML splits a YAML stream at `---` lines.
func splitYAML(data []byte) [][]byte {
	var docs [][]byte
	var cur []byte
	for _, line := range bytes.SplitAfter(data, []byte("\n")) {
		if t := bytes.TrimRight(line, " \t\r\n"); bytes.Equal(t, []byte("---")) {
			docs = append(docs, cur)
			cur = nil
			continue
		}
		cur = append(cur, line...)
	}
	return append(docs, cur)
}
