package vm

import (
	"slices"
	"strings"
	"testing"
)

// Trimmed apt-cache show output recorded from bookworm-backports and sid.
const showMetas = `Package: linux-image-amd64
Source: linux-signed-amd64 (6.12.95+1~bpo12+1)
Version: 6.12.95-1~bpo12+1
Provides: linux-image-generic, linux-latest-modules-6.12.95+deb12-amd64, wireguard-modules (= 1.0.0)
Depends: linux-image-6.12.95+deb12-amd64 (= 6.12.95-1~bpo12+1)
Description: Linux for 64-bit PCs (meta-package)
 This package depends on the latest Linux kernel and modules for use on PCs
 with AMD64, Intel 64 or VIA Nano processors.

Package: linux-headers-amd64
Version: 6.12.95-1~bpo12+1
Depends: linux-headers-6.12.95+deb12-amd64 (= 6.12.95-1~bpo12+1)

`

const showSid = `Package: linux-image-7.2.13+deb14-amd64
Version: 7.2.13-1
Depends: dracut | initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool, linux-base-7.2.13+deb14-amd64 (= 7.2.13-1), linux-binary-7.2.13+deb14-amd64 (= 7.2.13-1), linux-modules-7.2.13+deb14-amd64 (= 7.2.13-1)

Package: linux-headers-7.2.13+deb14-amd64
Version: 7.2.13-1
Depends: gcc-16-for-host, linux-base (>= 4.12~), linux-base-7.2.13+deb14-amd64 (= 7.2.13-1), linux-headers-7.2.13+deb14-common (= 7.2.13-1), linux-kbuild-7.2.13+deb14
`

func TestParseStanzas(t *testing.T) {
	st := parseStanzas([]byte(showMetas))
	if len(st) != 2 {
		t.Fatalf("got %d stanzas, want 2", len(st))
	}
	if st[0]["Version"] != "6.12.95-1~bpo12+1" || st[1]["Package"] != "linux-headers-amd64" {
		t.Errorf("fields wrong: %v", st)
	}
	if d := st[0]["Description"]; !strings.Contains(d, "\nwith AMD64") {
		t.Errorf("continuation lines not joined: %q", d)
	}
}

func TestParseDepends(t *testing.T) {
	got := parseDepends("dracut | initramfs-tools (>= 0.120+deb8u2), libc6:amd64 (>= 2.36), foo [amd64]")
	want := [][]Dep{
		{{Name: "dracut"}, {Name: "initramfs-tools", Op: ">=", Version: "0.120+deb8u2"}},
		{{Name: "libc6", Op: ">=", Version: "2.36"}},
		{{Name: "foo"}},
	}
	if len(got) != len(want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	for i := range want {
		if !slices.Equal(got[i], want[i]) {
			t.Errorf("group %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestResolveFromMetas(t *testing.T) {
	image, headers, err := pickFromMetas(parseStanzas([]byte(showMetas)))
	if err != nil {
		t.Fatal(err)
	}
	if image.Name != "linux-image-6.12.95+deb12-amd64" || image.Version != "6.12.95-1~bpo12+1" {
		t.Errorf("image = %+v", image)
	}
	if headers.Name != "linux-headers-6.12.95+deb12-amd64" {
		t.Errorf("headers = %+v", headers)
	}
	if _, _, err := pickFromMetas(parseStanzas([]byte("Package: linux-image-amd64\nVersion: 1\n"))); err == nil {
		t.Error("metapackage without dependencies accepted")
	}
}

func TestKernelPackagesSid(t *testing.T) {
	image := Dep{Name: "linux-image-7.2.13+deb14-amd64", Op: "=", Version: "7.2.13-1"}
	headers := Dep{Name: "linux-headers-7.2.13+deb14-amd64", Op: "=", Version: "7.2.13-1"}
	got := kernelPackages("7.2.13+deb14-amd64", "sid", image, headers, parseStanzas([]byte(showSid)))
	want := []string{
		"linux-image-7.2.13+deb14-amd64=7.2.13-1",
		"linux-headers-7.2.13+deb14-amd64=7.2.13-1",
		"linux-base-7.2.13+deb14-amd64=7.2.13-1",
		"linux-binary-7.2.13+deb14-amd64=7.2.13-1",
		"linux-modules-7.2.13+deb14-amd64=7.2.13-1",
		"linux-headers-7.2.13+deb14-common=7.2.13-1",
		"linux-kbuild-7.2.13+deb14/sid",
	}
	if !slices.Equal(got, want) {
		t.Errorf("packages =\n%q\nwant\n%q", got, want)
	}
	for _, p := range got {
		if strings.HasPrefix(p, "dracut") || strings.HasPrefix(p, "gcc") || strings.HasPrefix(p, "linux-base/") || strings.HasPrefix(p, "linux-base=") {
			t.Errorf("generic package %s must not be downloaded", p)
		}
	}
}

func TestKernelPackagesBookworm(t *testing.T) {
	stanzas := parseStanzas([]byte(`Package: linux-headers-6.1.0-50-amd64
Version: 6.1.176-1
Depends: linux-headers-6.1.0-50-common (= 6.1.176-1), linux-kbuild-6.1 (>= 6.1.176-1), linux-compiler-gcc-12-x86
`))
	got := kernelPackages("6.1.0-50-amd64", "bookworm",
		Dep{Name: "linux-image-6.1.0-50-amd64", Op: "=", Version: "6.1.176-1"},
		Dep{Name: "linux-headers-6.1.0-50-amd64", Op: "=", Version: "6.1.176-1"}, stanzas)
	want := []string{"linux-image-6.1.0-50-amd64=6.1.176-1", "linux-headers-6.1.0-50-amd64=6.1.176-1",
		"linux-headers-6.1.0-50-common=6.1.176-1", "linux-kbuild-6.1/bookworm"}
	if !slices.Equal(got, want) {
		t.Errorf("packages = %q, want %q", got, want)
	}
}

func TestDebianEntry(t *testing.T) {
	st := parseStanzas([]byte(`Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
`))
	if uri, key, ok := debianEntry(st[0]); !ok || uri != "http://deb.debian.org/debian" || key != defaultKeyring {
		t.Errorf("main archive entry = %q %q %v", uri, key, ok)
	}
	if _, _, ok := debianEntry(st[1]); ok {
		t.Error("security archive taken as the main mirror")
	}
}

func TestAptConfIsPrivate(t *testing.T) {
	conf := aptConf("/c/apt")
	for _, want := range []string{`Dir::Etc::sourcelist "/c/apt/sources.list"`, `Dir::Etc::sourceparts "-"`,
		`Dir::State::Lists "/c/apt/lists"`, `Dir::Cache "/c/apt/cache"`, `Dir::State::status "/c/apt/status"`} {
		if !strings.Contains(conf, want) {
			t.Errorf("apt.conf lacks %s", want)
		}
	}
}
