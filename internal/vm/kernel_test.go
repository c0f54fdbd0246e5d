package vm

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestRewriteUsrSrc(t *testing.T) {
	in := "KBUILD_OUTPUT=/usr/src/linux-headers-7.2.13+deb14-amd64\ninclude /usr/src/linux-headers-7.2.13+deb14-common/Makefile\n"
	want := "KBUILD_OUTPUT=/c/k/root/usr/src/linux-headers-7.2.13+deb14-amd64\ninclude /c/k/root/usr/src/linux-headers-7.2.13+deb14-common/Makefile\n"
	got := rewriteUsrSrc(in, "/c/k/root")
	if got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	if again := rewriteUsrSrc(got, "/c/k/root"); again != want {
		t.Errorf("rewriting twice changed the file:\n%s", again)
	}
}

func TestKernelCCRegexp(t *testing.T) {
	vars := "override ARCH = x86\nCC = $(if $(DEBIAN_KERNEL_USE_CCACHE),$(CCACHE)) $(CROSS_COMPILE)gcc-16\n"
	m := ccRE.FindStringSubmatch(vars)
	if m == nil || m[1] != "gcc-16" {
		t.Errorf("compiler from .kernelvariables = %v, want gcc-16", m)
	}
}

// fakeBzImage builds a minimal bzImage: setup header with the payload
// fields, then a gzip payload.
func fakeBzImage(t *testing.T, payload []byte) []byte {
	t.Helper()
	const setupSects = 3
	img := make([]byte, (setupSects+1)*512)
	img[offSetupSects] = setupSects
	copy(img[offHeaderMagic:], "HdrS")
	binary.LittleEndian.PutUint16(img[offVersion:], 0x20f)
	binary.LittleEndian.PutUint32(img[offPayloadOffset:], 16)
	binary.LittleEndian.PutUint32(img[offPayloadLength:], uint32(len(payload)))
	img = append(img, make([]byte, 16)...)
	img = append(img, payload...)
	return append(img, "trailing setup data"...)
}

func TestExtractVmlinuxGzip(t *testing.T) {
	elf := append([]byte("\x7fELF\x02\x01\x01"), bytes.Repeat([]byte("kernel"), 100)...)
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	zw.Write(elf)
	zw.Close()
	got, err := ExtractVmlinux(fakeBzImage(t, append(z.Bytes(), 1, 2, 3, 4)))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, elf) {
		t.Error("extracted kernel differs from the payload")
	}
}

func TestExtractVmlinuxErrors(t *testing.T) {
	if _, err := ExtractVmlinux([]byte("not a kernel")); err == nil || !strings.Contains(err.Error(), "not a bzImage") {
		t.Errorf("err = %v, want not a bzImage", err)
	}
	if _, err := ExtractVmlinux(fakeBzImage(t, []byte("BZh91AY&SY"))); err == nil || !strings.Contains(err.Error(), "unsupported compression") {
		t.Errorf("err = %v, want unsupported compression", err)
	}
	var z bytes.Buffer
	zw := gzip.NewWriter(&z)
	zw.Write([]byte("not an elf"))
	zw.Close()
	if _, err := ExtractVmlinux(fakeBzImage(t, z.Bytes())); err == nil || !strings.Contains(err.Error(), "not an ELF") {
		t.Errorf("err = %v, want not an ELF", err)
	}
	bad := fakeBzImage(t, []byte{0x1f, 0x8b})
	binary.LittleEndian.PutUint32(bad[offPayloadLength:], 1<<30)
	if _, err := ExtractVmlinux(bad); err == nil || !strings.Contains(err.Error(), "outside") {
		t.Errorf("err = %v, want payload outside the image", err)
	}
}

func TestPruneModuleBuilds(t *testing.T) {
	dir := t.TempDir()
	for i, name := range []string{"a", "b", "c", "d", "e", "partial"} {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(p, 0o755); err != nil {
			t.Fatal(err)
		}
		if name == "partial" {
			continue // no stamp: a build in progress elsewhere is left alone
		}
		stamp := filepath.Join(p, completeStamp)
		if err := os.WriteFile(stamp, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		when := time.Now().Add(time.Duration(i-10) * time.Minute)
		if err := os.Chtimes(stamp, when, when); err != nil {
			t.Fatal(err)
		}
	}
	pruneModuleBuilds(dir, 2)
	entries, _ := os.ReadDir(dir)
	var left []string
	for _, e := range entries {
		left = append(left, e.Name())
	}
	if strings.Join(left, " ") != "d e partial" {
		t.Errorf("left %q, want the two newest builds and the partial one", left)
	}
}
