package tracer

import (
	"testing"

	"github.com/pktfate/pktfate/internal/netns"
	"github.com/pktfate/pktfate/internal/testutil"
)

// TestIfnameResolver: an event with only a namespace and an index gets
// the name the interface has in that namespace, not in ours; an index
// the namespace lacks gets none, and so does an unknown namespace.
func TestIfnameResolver(t *testing.T) {
	testutil.RequireRoot(t)
	a, b := testutil.NewNS(t), testutil.NewNS(t)
	if err := netns.Veth(a, "pfifn0", b, "pfifn1"); err != nil {
		t.Fatal(err)
	}
	ia, err := a.Ifindex("pfifn0")
	if err != nil {
		t.Fatal(err)
	}
	ib, err := b.Ifindex("pfifn1")
	if err != nil {
		t.Fatal(err)
	}
	var r ifnameResolver
	if got := r.name(a.Inode, uint32(ia)); got != "pfifn0" {
		t.Errorf("index %d in namespace a: got %q, want pfifn0", ia, got)
	}
	if got := r.name(b.Inode, uint32(ib)); got != "pfifn1" {
		t.Errorf("index %d in namespace b: got %q, want pfifn1", ib, got)
	}
	if got := r.name(b.Inode, 1); got != "lo" {
		t.Errorf("index 1 in namespace b: got %q, want lo", got)
	}
	if got := r.name(b.Inode, 9999); got != "" {
		t.Errorf("index 9999 in namespace b: got %q, want none", got)
	}
	if got := r.name(1, 1); got != "" {
		t.Errorf("namespace inode 1: got %q, want none", got)
	}
}
