package main

// Argo CD health checks run the way Argo CD runs them: the script of resource_customizations/<group>/<Kind>/
// health.lua in github.com/yuin/gopher-lua (the interpreter and the version Argo CD's go.mod pins), with the
// object as the global `obj` (JSON numbers become Lua numbers, as in Argo CD's decodeValue), a one-second
// deadline, and only the libraries Argo CD opens when `resource.customizations.useOpenLibs.<group>_<kind>` is
// not set (package, base, table; Argo CD adds os.time/os.date, which these checks do not use). No `string`
// library: a check that works here works in argocd-cm without useOpenLibs. The returned table's `status`
// must be one of Argo CD's health codes; `message` is shown beside it.
//
// health_test.yaml has Argo CD's format, so the directory can be proposed upstream as it is:
//
//	tests:
//	- healthStatus: {status: Healthy, message: "..."}
//	  inputPath: testdata/healthy.yaml

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// Health is what a health.lua returns.
type Health struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

var healthCodes = map[string]bool{
	"Healthy": true, "Progressing": true, "Degraded": true, "Suspended": true, "Missing": true, "Unknown": true,
}

// scriptPath is where Argo CD looks for the built-in check of an object: <group>/<Kind>/health.lua.
func scriptPath(dir string, u *unstructured.Unstructured) string {
	gvk := u.GroupVersionKind()
	group := gvk.Group
	if group == "" {
		group = "_"
	}
	return filepath.Join(dir, group, gvk.Kind, "health.lua")
}

func healthOf(dir string, u *unstructured.Unstructured) (Health, error) {
	path := scriptPath(dir, u)
	script, err := os.ReadFile(path)
	if err != nil {
		return Health{}, fmt.Errorf("no health check: %w", err)
	}
	return runHealth(string(script), u.Object)
}

// runHealth runs one health script on one object.
func runHealth(script string, obj map[string]any) (Health, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for _, lib := range []struct {
		name string
		open lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
	} {
		if err := l.CallByParam(lua.P{Fn: l.NewFunction(lib.open), NRet: 0, Protect: true}, lua.LString(lib.name)); err != nil {
			return Health{}, fmt.Errorf("opening the %s library: %w", lib.name, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	l.SetContext(ctx)
	l.SetGlobal("obj", toLua(l, obj))
	if err := l.DoString(script); err != nil {
		return Health{}, fmt.Errorf("health.lua: %w", err)
	}
	ret := l.Get(-1)
	switch v := ret.(type) {
	case *lua.LTable:
		h := Health{Status: luaString(v.RawGetString("status")), Message: luaString(v.RawGetString("message"))}
		if !healthCodes[h.Status] {
			return Health{Status: "Unknown", Message: "Lua returned an invalid health status"}, nil
		}
		return h, nil
	case *lua.LNilType:
		return Health{}, nil
	default:
		return Health{}, fmt.Errorf("health.lua returned a %s, not a table", ret.Type())
	}
}

func luaString(v lua.LValue) string {
	if v == lua.LNil {
		return ""
	}
	return v.String()
}

// toLua converts a decoded JSON/YAML value the way Argo CD's decodeValue does.
func toLua(l *lua.LState, value any) lua.LValue {
	switch v := value.(type) {
	case bool:
		return lua.LBool(v)
	case float64:
		return lua.LNumber(v)
	case int64:
		return lua.LNumber(v)
	case int:
		return lua.LNumber(v)
	case string:
		return lua.LString(v)
	case []any:
		t := l.CreateTable(len(v), 0)
		for _, item := range v {
			t.Append(toLua(l, item))
		}
		return t
	case map[string]any:
		t := l.CreateTable(0, len(v))
		for k, item := range v {
			t.RawSetH(lua.LString(k), toLua(l, item))
		}
		return t
	}
	return lua.LNil
}

type healthTests struct {
	Tests []struct {
		InputPath    string `json:"inputPath"`
		HealthStatus Health `json:"healthStatus"`
	} `json:"tests"`
}

// runArgoTest runs every case of every health_test.yaml under --dir and fails unless each gives the expected
// status and message, every check has cases, and every testdata file is some case's input.
func runArgoTest(args []string) error {
	fs := flag.NewFlagSet("argocd-test", flag.ExitOnError)
	dirFlag := fs.String("dir", "", "the resource_customizations directory")
	_ = fs.Parse(args)
	dir := *dirFlag
	if dir == "" {
		return errors.New("--dir is required")
	}
	var scripts []string
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && d.Name() == "health.lua" {
			scripts = append(scripts, path)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if len(scripts) == 0 {
		return fmt.Errorf("no health.lua under %s", dir)
	}
	sort.Strings(scripts)
	passed, failed := 0, 0
	for _, path := range scripts {
		check := filepath.Dir(path)
		name, _ := filepath.Rel(dir, check)
		script, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		raw, err := os.ReadFile(filepath.Join(check, "health_test.yaml"))
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		var tests healthTests
		if err := yaml.UnmarshalStrict(raw, &tests); err != nil {
			return fmt.Errorf("%s/health_test.yaml: %w", name, err)
		}
		if len(tests.Tests) == 0 {
			return fmt.Errorf("%s/health_test.yaml has no tests", name)
		}
		used := map[string]bool{}
		for _, tc := range tests.Tests {
			used[filepath.Clean(tc.InputPath)] = true
			label := name + " " + tc.InputPath
			input, err := os.ReadFile(filepath.Join(check, tc.InputPath))
			if err != nil {
				fmt.Printf("FAIL %s: %v\n", label, err)
				failed++
				continue
			}
			obj, err := decodeYAML(input)
			if err != nil {
				fmt.Printf("FAIL %s: %v\n", label, err)
				failed++
				continue
			}
			got, err := runHealth(string(script), obj)
			switch {
			case err != nil:
				fmt.Printf("FAIL %s: %v\n", label, err)
				failed++
			case got != tc.HealthStatus:
				fmt.Printf("FAIL %s:\n  want %s %q\n  got  %s %q\n", label, tc.HealthStatus.Status, tc.HealthStatus.Message, got.Status, got.Message)
				failed++
			default:
				fmt.Printf("ok   %s: %s %q\n", label, got.Status, got.Message)
				passed++
			}
		}
		files, _ := filepath.Glob(filepath.Join(check, "testdata", "*.yaml"))
		for _, f := range files {
			rel, _ := filepath.Rel(check, f)
			if !used[rel] {
				fmt.Printf("FAIL %s %s: no case in health_test.yaml uses it\n", name, rel)
				failed++
			}
		}
	}
	fmt.Printf("argocd health: %d passed, %d failed\n", passed, failed)
	if failed > 0 {
		return fmt.Errorf("%d case(s) failed", failed)
	}
	return nil
}
