package main

// The image map (images.yaml): what local command stands in for each container image.
// An entry describes an image the way its Dockerfile would (ENTRYPOINT, CMD, ENV, WORKDIR,
// the user's home) plus how container paths of executables map to local programs.
// README.md documents the rules; images.yaml is the reference example.

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"sigs.k8s.io/yaml"
)

type imageEnv struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

type imageSpec struct {
	// Name is matched against the image reference without tag or digest; it also
	// matches any reference ending in "/"+Name (a registry or project prefix).
	Name        string     `json:"name"`
	Home        string     `json:"home"`
	WorkingDir  string     `json:"workingDir"`
	Ports       []int32    `json:"ports"`
	Entrypoint  []string   `json:"entrypoint"`
	Cmd         []string   `json:"cmd"`
	Env         []imageEnv `json:"env"`
	PullSeconds float64    `json:"pullSeconds"`
	// Executables maps a path (or bare name) inside the image to the local argv prefix
	// that replaces it.
	Executables map[string][]string `json:"executables"`
	// HostExecutables lets any other argv[0] be found on the host's PATH (for the
	// generic sim/* images); otherwise such a command fails like a missing binary.
	HostExecutables bool `json:"hostExecutables"`
}

type imageMap struct {
	Images []*imageSpec `json:"images"`
}

// loadImageMap reads FILE and replaces ${REPO} (the repository root, two levels above the
// file) in every command and value, so the map works from any checkout.
func loadImageMap(path string) (*imageMap, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var m imageMap
	if err := yaml.UnmarshalStrict(data, &m); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	repo := filepath.Clean(filepath.Join(filepath.Dir(path), "..", ".."))
	sub := func(s string) string { return strings.ReplaceAll(s, "${REPO}", repo) }
	subAll := func(v []string) {
		for i := range v {
			v[i] = sub(v[i])
		}
	}
	for i, im := range m.Images {
		if im.Name == "" {
			return nil, fmt.Errorf("%s: image %d has no name", path, i)
		}
		subAll(im.Entrypoint)
		subAll(im.Cmd)
		for j := range im.Env {
			im.Env[j].Value = sub(im.Env[j].Value)
		}
		for _, v := range im.Executables {
			subAll(v)
		}
		if im.Home == "" {
			im.Home = "/root"
		}
	}
	return &m, nil
}

// imageRepository strips the tag and digest: "reg:5000/a/b:1.2@sha256:.." -> "reg:5000/a/b".
func imageRepository(ref string) string {
	if i := strings.IndexByte(ref, '@'); i >= 0 {
		ref = ref[:i]
	}
	slash := strings.LastIndexByte(ref, '/')
	if i := strings.LastIndexByte(ref, ':'); i > slash {
		ref = ref[:i]
	}
	return ref
}

// lookup returns the entry for an image reference, or nil when the image "does not exist".
func (m *imageMap) lookup(ref string) *imageSpec {
	repo := imageRepository(ref)
	for _, im := range m.Images {
		if repo == im.Name || strings.HasSuffix(repo, "/"+im.Name) {
			return im
		}
	}
	return nil
}

// containerArgv applies Docker's rules: a pod's command replaces ENTRYPOINT and drops CMD;
// args replace CMD. The result is still in the container's terms.
func (im *imageSpec) containerArgv(command, args []string) ([]string, error) {
	var argv []string
	switch {
	case len(command) > 0:
		argv = append(append(argv, command...), args...)
	case len(args) > 0:
		argv = append(append(argv, im.Entrypoint...), args...)
	default:
		argv = append(append(argv, im.Entrypoint...), im.Cmd...)
	}
	if len(argv) == 0 {
		return nil, fmt.Errorf("no command specified")
	}
	return argv, nil
}

// executable maps a container's argv[0] to a local argv prefix: the image map's entry for
// it, or (for images with hostExecutables) the program found on the container's PATH
// (searched on the host). It fails like the runtime does when the image has no such file.
func (im *imageSpec) executable(argv0, pathEnv string) ([]string, error) {
	if prefix, ok := im.Executables[argv0]; ok && len(prefix) > 0 {
		return append([]string{}, prefix...), nil
	}
	if im.HostExecutables {
		if strings.Contains(argv0, "/") {
			if isExecutable(argv0) {
				return []string{argv0}, nil
			}
		} else {
			for _, d := range filepath.SplitList(pathEnv) {
				if p := filepath.Join(d, argv0); d != "" && isExecutable(p) {
					return []string{p}, nil
				}
			}
		}
	}
	return nil, fmt.Errorf("exec: %q: executable file not found in $PATH", argv0)
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}
