// Command edgewire-image assembles and reads the OCI image archives of `make image` without a container
// engine (hack/image/build.sh drives it; docs/images.md describes the images).
//
//	edgewire-image build   --rootfs DIR --out FILE.oci.tar --name REPO --tag TAG --epoch SECONDS [config flags]
//	edgewire-image inspect FILE.oci.tar
//
// build packs DIR into one gzip layer whose entries are sorted, owned by 0:0 unless --chown says otherwise, and
// stamped with --epoch, so the same inputs give the same bytes and so the same digest. It writes an OCI image
// layout (index.json naming the image by its tag and by its full name for containerd) and packs that layout into
// an OCI archive (a tar of the layout, what `skopeo copy oci-archive:` and `ctr import` read), then prints
// `NAME:TAG sha256:...`.
//
// inspect reads an archive back, validates every blob against its digest, size and diff ID with
// go-containerregistry's validate package (what `crane validate` runs), and prints a JSON summary: the index
// annotations, the manifest digest, the image config, the layers and the sizes.
package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

// Annotations on the index entry: the tag (OCI's ref.name, what `skopeo ... oci-archive:F:TAG` and
// `umoci --image DIR:TAG` select) and the full name containerd gives the image on import
// (`kind load image-archive`, `k3d image import`, `ctr images import`).
const (
	refNameAnnotation    = "org.opencontainers.image.ref.name"
	containerdAnnotation = "io.containerd.image.name"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "build":
		err = build(os.Args[2:])
	case "inspect":
		err = inspect(os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "edgewire-image %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: edgewire-image build --rootfs DIR --out FILE --name REPO --tag TAG --epoch SECONDS [...]\n       edgewire-image inspect FILE")
	os.Exit(2)
}

// multi is a repeatable string flag.
type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(s string) error { *m = append(*m, s); return nil }

func build(args []string) error {
	fl := flag.NewFlagSet("build", flag.ExitOnError)
	rootfs := fl.String("rootfs", "", "directory holding the image's root filesystem")
	out := fl.String("out", "", "OCI archive to write")
	name := fl.String("name", "", "repository, e.g. ghcr.io/edgewire/edgewire-operator")
	tag := fl.String("tag", "", "tag, e.g. 0.1.0")
	epoch := fl.Int64("epoch", -1, "SOURCE_DATE_EPOCH: mtime of every file and the image's creation time")
	arch := fl.String("arch", "amd64", "GOARCH-style architecture of the binaries")
	user := fl.String("user", "", "config User, e.g. 65532:65532")
	workdir := fl.String("workdir", "/", "config WorkingDir")
	createdBy := fl.String("created-by", "hack/image/build.sh", "history entry")
	var entrypoint, env, labels, chown multi
	fl.Var(&entrypoint, "entrypoint", "config Entrypoint element (repeat)")
	fl.Var(&env, "env", "config Env entry K=V (repeat)")
	fl.Var(&labels, "label", "config label K=V (repeat)")
	fl.Var(&chown, "chown", "owner of one path in the layer, PATH=UID:GID (repeat); others are 0:0")
	_ = fl.Parse(args)
	if *rootfs == "" || *out == "" || *name == "" || *tag == "" || *epoch < 0 || len(entrypoint) == 0 {
		return errors.New("--rootfs, --out, --name, --tag, --epoch and --entrypoint are required")
	}
	created := time.Unix(*epoch, 0).UTC()

	owners := map[string][2]int{}
	for _, c := range chown {
		path, ids, ok := strings.Cut(c, "=")
		u, g, ok2 := strings.Cut(ids, ":")
		uid, err1 := strconv.Atoi(u)
		gid, err2 := strconv.Atoi(g)
		if !ok || !ok2 || err1 != nil || err2 != nil {
			return fmt.Errorf("--chown %q: want PATH=UID:GID", c)
		}
		owners[strings.Trim(path, "/")] = [2]int{uid, gid}
	}
	layerTar, err := tarDir(*rootfs, created, owners)
	if err != nil {
		return err
	}
	var gz bytes.Buffer
	zw, err := gzip.NewWriterLevel(&gz, gzip.DefaultCompression)
	if err != nil {
		return err
	}
	if _, err := zw.Write(layerTar); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	compressed := gz.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(compressed)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return err
	}

	base := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	base = mutate.ConfigMediaType(base, types.OCIConfigJSON)
	img, err := mutate.Append(base, mutate.Addendum{
		Layer:     layer,
		MediaType: types.OCILayer,
		History:   v1.History{Created: v1.Time{Time: created}, CreatedBy: *createdBy},
	})
	if err != nil {
		return err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cf = cf.DeepCopy()
	cf.Architecture = *arch
	cf.OS = "linux"
	cf.Created = v1.Time{Time: created}
	cf.Config.User = *user
	cf.Config.Entrypoint = entrypoint
	cf.Config.Cmd = nil
	cf.Config.WorkingDir = *workdir
	cf.Config.Env = env
	cf.Config.Labels = map[string]string{}
	for _, l := range labels {
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			return fmt.Errorf("--label %q: want K=V", l)
		}
		cf.Config.Labels[k] = v
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return err
	}
	digest, err := img.Digest()
	if err != nil {
		return err
	}

	dir, err := os.MkdirTemp(filepath.Dir(*out), ".layout-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{
		refNameAnnotation:    *tag,
		containerdAnnotation: *name + ":" + *tag,
	}), layout.WithPlatform(v1.Platform{OS: "linux", Architecture: *arch})); err != nil {
		return err
	}
	// Read back what was written and check every blob against its digest, size and diff ID.
	written, err := p.Image(digest)
	if err != nil {
		return err
	}
	if err := validate.Image(written); err != nil {
		return fmt.Errorf("the written image does not validate: %w", err)
	}
	archive, err := tarDir(dir, created, nil)
	if err != nil {
		return err
	}
	tmp := *out + ".tmp"
	if err := os.WriteFile(tmp, archive, 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, *out); err != nil {
		return err
	}
	fmt.Printf("%s:%s %s\n", *name, *tag, digest)
	return nil
}

// tarDir packs dir into an uncompressed tar: entries in lexical order, modes as on disk (permission, setgid and
// sticky bits), owners from owners or 0:0, every mtime = created, no user or group names, no atime/ctime.
func tarDir(dir string, created time.Time, owners map[string][2]int) ([]byte, error) {
	var paths []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if path != dir {
			paths = append(paths, path)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sort.Strings(paths)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, path := range paths {
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return nil, err
		}
		rel = filepath.ToSlash(rel)
		fi, err := os.Lstat(path)
		if err != nil {
			return nil, err
		}
		hdr := &tar.Header{
			Name:    rel,
			Mode:    int64(fi.Mode().Perm()),
			ModTime: created,
			Format:  tar.FormatPAX,
		}
		if fi.Mode()&fs.ModeSetgid != 0 {
			hdr.Mode |= 0o2000
		}
		if fi.Mode()&fs.ModeSticky != 0 {
			hdr.Mode |= 0o1000
		}
		if fi.Mode()&fs.ModeSetuid != 0 {
			return nil, fmt.Errorf("%s: setuid files are not allowed in the image", rel)
		}
		if o, ok := owners[rel]; ok {
			hdr.Uid, hdr.Gid = o[0], o[1]
		}
		switch {
		case fi.Mode().IsDir():
			hdr.Typeflag = tar.TypeDir
			hdr.Name += "/"
		case fi.Mode()&fs.ModeSymlink != 0:
			hdr.Typeflag = tar.TypeSymlink
			if hdr.Linkname, err = os.Readlink(path); err != nil {
				return nil, err
			}
		case fi.Mode().IsRegular():
			hdr.Typeflag = tar.TypeReg
			hdr.Size = fi.Size()
		default:
			return nil, fmt.Errorf("%s: unsupported file type %v", rel, fi.Mode().Type())
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if hdr.Typeflag == tar.TypeReg {
			f, err := os.Open(path)
			if err != nil {
				return nil, err
			}
			_, err = io.Copy(tw, f)
			f.Close()
			if err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

type summary struct {
	Annotations     map[string]string `json:"annotations"`
	Digest          string            `json:"digest"`
	MediaType       string            `json:"mediaType"`
	Platform        string            `json:"platform"`
	Created         string            `json:"created"`
	User            string            `json:"user"`
	Entrypoint      []string          `json:"entrypoint"`
	Cmd             []string          `json:"cmd"`
	WorkingDir      string            `json:"workingDir"`
	Env             []string          `json:"env"`
	Labels          map[string]string `json:"labels"`
	Layers          []layerSummary    `json:"layers"`
	CompressedSize  int64             `json:"compressedSize"`
	UncompressedTar int64             `json:"uncompressedLayerSize"`
}

type layerSummary struct {
	Digest    string `json:"digest"`
	DiffID    string `json:"diffID"`
	MediaType string `json:"mediaType"`
	Size      int64  `json:"size"`
}

func inspect(args []string) error {
	if len(args) != 1 {
		return errors.New("want one archive")
	}
	dir, err := os.MkdirTemp("", "edgewire-image-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := untar(args[0], dir); err != nil {
		return err
	}
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return err
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return err
	}
	if len(im.Manifests) != 1 {
		return fmt.Errorf("index.json lists %d manifests, want 1", len(im.Manifests))
	}
	desc := im.Manifests[0]
	img, err := idx.Image(desc.Digest)
	if err != nil {
		return err
	}
	if err := validate.Image(img); err != nil {
		return fmt.Errorf("image %s does not validate: %w", desc.Digest, err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	s := summary{
		Annotations: desc.Annotations,
		Digest:      desc.Digest.String(),
		MediaType:   string(desc.MediaType),
		Platform:    cf.OS + "/" + cf.Architecture,
		Created:     cf.Created.UTC().Format(time.RFC3339),
		User:        cf.Config.User,
		Entrypoint:  cf.Config.Entrypoint,
		Cmd:         cf.Config.Cmd,
		WorkingDir:  cf.Config.WorkingDir,
		Env:         cf.Config.Env,
		Labels:      cf.Config.Labels,
	}
	m, err := img.Manifest()
	if err != nil {
		return err
	}
	s.CompressedSize = m.Config.Size
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	for _, l := range layers {
		d, _ := l.Digest()
		diff, _ := l.DiffID()
		mt, _ := l.MediaType()
		size, err := l.Size()
		if err != nil {
			return err
		}
		rc, err := l.Uncompressed()
		if err != nil {
			return err
		}
		n, err := io.Copy(io.Discard, rc)
		rc.Close()
		if err != nil {
			return err
		}
		s.Layers = append(s.Layers, layerSummary{Digest: d.String(), DiffID: diff.String(), MediaType: string(mt), Size: size})
		s.CompressedSize += size
		s.UncompressedTar += n
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(s)
}

// untar extracts an OCI archive (regular files and directories only, no path leaving dir).
func untar(archive, dir string) error {
	f, err := os.Open(archive)
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: %w", archive, err)
		}
		name := filepath.Clean(hdr.Name)
		if !filepath.IsLocal(name) {
			return fmt.Errorf("%s: entry %q leaves the archive", archive, hdr.Name)
		}
		target := filepath.Join(dir, name)
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				return err
			}
			out, err := os.Create(target)
			if err != nil {
				return err
			}
			_, err = io.Copy(out, tr)
			out.Close()
			if err != nil {
				return err
			}
		default:
			return fmt.Errorf("%s: entry %q has type %q, an OCI layout holds files and directories", archive, hdr.Name, hdr.Typeflag)
		}
	}
}
