// edgewire-promcheck checks the chart's alerting rules and Grafana dashboard against what the Edgewire
// binaries really export:
//
//   - every PromQL expression (each rule's expr, each dashboard target and query variable) parses with
//     Prometheus' own PromQL parser, and every metric name it selects appears as a series in one of the
//     scrapes given (bodies of /metrics taken from running binaries, parsed with Prometheus' own
//     exposition parsers: the same names Prometheus would store);
//   - every alert has a runbook_url annotation ending in #<alert name, lowercased>, and the runbook file
//     has a heading with that anchor;
//   - every alert is unit-tested: the promtool test file has a case where it fires and one where it does
//     not.
//
// Usage:
//
//	edgewire-promcheck -rules RULES.yaml -dashboard DASHBOARD.json -rule-tests TESTS.yaml -runbooks RUNBOOKS.md SCRAPE...
//
// Each SCRAPE is a file with a /metrics body; SCRAPE.content-type holds the Content-Type it was served with.
// Prints what it checked and exits 1 naming every problem.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/model/textparse"
	"github.com/prometheus/prometheus/promql/parser"
	"sigs.k8s.io/yaml"
)

// An expression and where it came from.
type expr struct {
	where string
	text  string
}

var promql = parser.NewParser(parser.Options{})

func main() {
	rulesFile := flag.String("rules", "", "Prometheus rule file (the PrometheusRule's spec)")
	dashboardFile := flag.String("dashboard", "", "Grafana dashboard JSON")
	testsFile := flag.String("rule-tests", "", "promtool test file")
	runbooksFile := flag.String("runbooks", "", "the runbook Markdown file the alerts link to")
	flag.Parse()
	if *rulesFile == "" || *dashboardFile == "" || *testsFile == "" || *runbooksFile == "" || flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: edgewire-promcheck -rules FILE -dashboard FILE -rule-tests FILE -runbooks FILE SCRAPE...")
		os.Exit(2)
	}
	var problems []string
	fail := func(format string, a ...any) { problems = append(problems, fmt.Sprintf(format, a...)) }

	exported := map[string][]string{} // metric name -> scrapes that hold it
	for _, f := range flag.Args() {
		names, err := scrapedNames(f)
		if err != nil {
			fail("%v", err)
			continue
		}
		if len(names) == 0 {
			fail("%s: no series at all", f)
		}
		for n := range names {
			exported[n] = append(exported[n], scrapeName(f))
		}
	}

	groups, errs := rulefmt.ParseFile(*rulesFile, false, model.UTF8Validation, promql, slog.New(slog.NewTextHandler(io.Discard, nil)))
	for _, e := range errs {
		fail("rules: %v", e)
	}
	var exprs []expr
	var alerts []string
	if groups != nil {
		for _, g := range groups.Groups {
			for _, r := range g.Rules {
				name := r.Alert
				if name == "" {
					name = "record " + r.Record
				} else {
					alerts = append(alerts, r.Alert)
				}
				exprs = append(exprs, expr{fmt.Sprintf("rule %s (group %s)", name, g.Name), r.Expr})
			}
		}
	}
	ruleExprs := len(exprs)
	if ruleExprs == 0 {
		fail("rules: %s holds no rule", *rulesFile)
	}

	dash, err := dashboardExprs(*dashboardFile)
	if err != nil {
		fail("dashboard: %v", err)
	}
	if err == nil && len(dash) == 0 {
		fail("dashboard: %s holds no PromQL expression", *dashboardFile)
	}
	exprs = append(exprs, dash...)

	used := map[string][]string{} // metric name -> where
	for _, e := range exprs {
		names, err := metricNames(e.text)
		if err != nil {
			fail("%s: %v\n    %s", e.where, err, e.text)
			continue
		}
		for _, n := range names {
			used[n] = append(used[n], e.where)
		}
	}
	for _, n := range sortedKeys(used) {
		if _, ok := exported[n]; !ok {
			fail("%s is used by %s, but no binary exports it%s", n, strings.Join(dedup(used[n]), "; "), suggest(n, exported))
		}
	}

	runbooks, err := os.ReadFile(*runbooksFile)
	if err != nil {
		fail("runbooks: %v", err)
	}
	anchors := headingAnchors(string(runbooks))
	if groups != nil {
		for _, g := range groups.Groups {
			for _, r := range g.Rules {
				if r.Alert == "" {
					continue
				}
				want := "#" + strings.ToLower(r.Alert)
				url := r.Annotations["runbook_url"]
				if !strings.HasSuffix(url, want) {
					fail("alert %s: runbook_url %q does not end in %s", r.Alert, url, want)
				}
				if !anchors[strings.ToLower(r.Alert)] {
					fail("alert %s: %s has no heading %q (anchor %s)", r.Alert, *runbooksFile, r.Alert, want)
				}
				if r.Labels["severity"] == "" {
					fail("alert %s: no severity label", r.Alert)
				}
			}
		}
	}

	firing, quiet, err := testedAlerts(*testsFile)
	if err != nil {
		fail("rule tests: %v", err)
	}
	for _, a := range alerts {
		if !firing[a] {
			fail("alert %s: %s has no case where it fires", a, *testsFile)
		}
		if !quiet[a] {
			fail("alert %s: %s has no case where it stays quiet (empty exp_alerts)", a, *testsFile)
		}
	}

	fmt.Printf("promcheck: %d expressions (%d rules, %d dashboard queries) use %d metric names; the scrapes hold %d\n",
		len(exprs), ruleExprs, len(exprs)-ruleExprs, len(used), len(exported))
	for _, n := range sortedKeys(used) {
		if src, ok := exported[n]; ok {
			fmt.Printf("  %-58s exported by %s\n", n, strings.Join(dedup(src), ", "))
		}
	}
	fmt.Printf("promcheck: %d alerts, each with a runbook section and a firing and a quiet test case\n", len(alerts))
	if len(problems) > 0 {
		for _, p := range problems {
			fmt.Println("FAIL " + p)
		}
		fmt.Printf("promcheck: %d problems\n", len(problems))
		os.Exit(1)
	}
}

// scrapeName is the scrape's file name without its extension (the binary it came from).
func scrapeName(path string) string {
	base := filepath.Base(path)
	return strings.TrimSuffix(base, filepath.Ext(base))
}

// scrapedNames parses a /metrics body as Prometheus would (by its Content-Type) and returns the metric
// name of every series in it.
func scrapedNames(path string) (map[string]bool, error) {
	body, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	ct, err := os.ReadFile(path + ".content-type")
	if err != nil {
		return nil, fmt.Errorf("%s: its Content-Type: %w", path, err)
	}
	p, err := textparse.New(body, strings.TrimSpace(string(ct)), nil, textparse.ParserOptions{})
	if err != nil {
		return nil, fmt.Errorf("%s: Content-Type %q: %w", path, strings.TrimSpace(string(ct)), err)
	}
	names := map[string]bool{}
	var lset labels.Labels
	for {
		entry, err := p.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if entry == textparse.EntrySeries || entry == textparse.EntryHistogram {
			p.Labels(&lset)
			names[lset.Get(labels.MetricName)] = true
		}
	}
	return names, nil
}

// Grafana's interval variables, replaced by a duration so that the expression parses.
var intervalVars = regexp.MustCompile(`\$\{?__(rate_interval|interval|range)\}?`)

// dashboardExprs collects every target expression of every panel (rows' nested panels too) and the
// queries of query variables.
func dashboardExprs(path string) ([]expr, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var dash struct {
		Panels     []panel `json:"panels"`
		Templating struct {
			List []struct {
				Name  string          `json:"name"`
				Type  string          `json:"type"`
				Query json.RawMessage `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	if err := dec.Decode(&dash); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var out []expr
	var walk func(ps []panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			if p.Type != "row" && len(p.Targets) == 0 {
				out = append(out, expr{fmt.Sprintf("panel %q", p.Title), ""})
			}
			for _, t := range p.Targets {
				out = append(out, expr{fmt.Sprintf("panel %q target %s", p.Title, t.RefID), intervalVars.ReplaceAllString(t.Expr, "5m")})
			}
			walk(p.Panels)
		}
	}
	walk(dash.Panels)
	for _, v := range dash.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q string
		if err := json.Unmarshal(v.Query, &q); err != nil {
			var obj struct {
				Query string `json:"query"`
			}
			if err := json.Unmarshal(v.Query, &obj); err != nil {
				return nil, fmt.Errorf("variable %s: query is neither a string nor {query}", v.Name)
			}
			q = obj.Query
		}
		e, err := variableExpr(q)
		if err != nil {
			return nil, fmt.Errorf("variable %s: %w", v.Name, err)
		}
		if e != "" {
			out = append(out, expr{"variable " + v.Name, e})
		}
	}
	return out, nil
}

type panel struct {
	Type    string  `json:"type"`
	Title   string  `json:"title"`
	Panels  []panel `json:"panels"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
}

var labelValues = regexp.MustCompile(`^label_values\((.*)\)$`)

// variableExpr is the PromQL inside a Grafana Prometheus variable query: label_values(SELECTOR, LABEL)
// gives SELECTOR, label_values(LABEL) none, query_result(EXPR) gives EXPR.
func variableExpr(q string) (string, error) {
	q = strings.TrimSpace(q)
	if m := labelValues.FindStringSubmatch(q); m != nil {
		inner := m[1]
		i := strings.LastIndex(inner, ",")
		if i < 0 {
			return "", nil
		}
		return strings.TrimSpace(inner[:i]), nil
	}
	if strings.HasPrefix(q, "query_result(") && strings.HasSuffix(q, ")") {
		return intervalVars.ReplaceAllString(q[len("query_result("):len(q)-1], "5m"), nil
	}
	return "", fmt.Errorf("unsupported variable query %q (label_values or query_result)", q)
}

// metricNames parses a PromQL expression and returns the metric name of every selector in it. A selector
// without a literal name cannot be checked and is an error.
func metricNames(text string) ([]string, error) {
	if strings.TrimSpace(text) == "" {
		return nil, fmt.Errorf("empty expression")
	}
	e, err := promql.ParseExpr(text)
	if err != nil {
		return nil, err
	}
	var names []string
	var bad error
	parser.Inspect(e, func(node parser.Node, _ []parser.Node) error {
		vs, ok := node.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		name := vs.Name
		if name == "" {
			for _, m := range vs.LabelMatchers {
				if m.Name == labels.MetricName && m.Type == labels.MatchEqual {
					name = m.Value
				}
			}
		}
		if name == "" {
			bad = fmt.Errorf("selector %s names no metric literally: it cannot be checked", vs)
			return nil
		}
		names = append(names, name)
		return nil
	})
	return names, bad
}

// headingAnchors are the GitHub anchors of the Markdown headings (lowercased, spaces to dashes,
// punctuation other than - and _ dropped).
func headingAnchors(md string) map[string]bool {
	out := map[string]bool{}
	drop := regexp.MustCompile(`[^a-z0-9 _-]`)
	for _, line := range strings.Split(md, "\n") {
		if !strings.HasPrefix(line, "#") {
			continue
		}
		h := strings.TrimSpace(strings.TrimLeft(line, "#"))
		a := strings.ReplaceAll(drop.ReplaceAllString(strings.ToLower(h), ""), " ", "-")
		out[a] = true
	}
	return out
}

// testedAlerts reads a promtool test file: the alerts some case expects to fire, and those some case
// expects to stay quiet.
func testedAlerts(path string) (firing, quiet map[string]bool, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	var f struct {
		Tests []struct {
			AlertRuleTests []struct {
				Alertname string           `json:"alertname"`
				ExpAlerts []map[string]any `json:"exp_alerts"`
			} `json:"alert_rule_test"`
		} `json:"tests"`
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	firing, quiet = map[string]bool{}, map[string]bool{}
	for _, t := range f.Tests {
		for _, c := range t.AlertRuleTests {
			if len(c.ExpAlerts) > 0 {
				firing[c.Alertname] = true
			} else {
				quiet[c.Alertname] = true
			}
		}
	}
	return firing, quiet, nil
}

// suggest names exported metrics that share the longest prefix with a missing one.
func suggest(name string, exported map[string][]string) string {
	best, bestLen := []string{}, 0
	for n := range exported {
		l := 0
		for l < len(n) && l < len(name) && n[l] == name[l] {
			l++
		}
		switch {
		case l > bestLen:
			best, bestLen = []string{n}, l
		case l == bestLen:
			best = append(best, n)
		}
	}
	if bestLen < len("edgewire_x") || len(best) > 5 {
		return ""
	}
	sort.Strings(best)
	return " (exported with the same prefix: " + strings.Join(best, ", ") + ")"
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func dedup(s []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, x := range s {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}
